"""Text pools: the candidate explanations that TextSpan, OMP, SVD poles and Dissect choose from.

A pool is an ordered list of distinct, non-empty, stripped strings. Built-in pools come from permissive sources or
our own generator and are deterministic; `size` always takes a prefix, so a small pool is the head of a large one
(the most frequent words, the first ImageNet classes, a balanced slice of the descriptions). User pools are text
files with one concept per line.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable

from ..errors import CliplensError, require_positive_int
from ..extras import require
from ..io.paths import is_file
from .descriptions import all_descriptions

WORDS_DEFAULT_SIZE = 30_000
DESCRIPTIONS_DEFAULT_SIZE = 3_500
EXTRAS = {"words": ("explain", "wordfreq")}  # built-in pools that need an optional extra


def distinct(texts: Iterable[str]) -> list[str]:
    """Stripped texts in first-seen order, without empties or repeats (reference files carry trailing "\\t\\n")."""
    return list(dict.fromkeys(stripped for text in texts if (stripped := text.strip())))


def _checked_size(size: int | None) -> int | None:
    return None if size is None else require_positive_int("pool size", size)


def _prefix(texts: list[str], size: int | None, name: str) -> list[str]:
    if _checked_size(size) is None:
        return texts
    if size > len(texts):
        raise CliplensError(f"pool {name!r} has only {len(texts)} texts, not size={size}; pass a smaller size")
    return texts[:size]


def require_pool(name: str | os.PathLike, user: str) -> None:
    """Stop before any work if pool `name` is neither built in nor a file, or needs an optional extra that is not
    installed."""
    if isinstance(name, str) and name in EXTRAS:
        extra, module = EXTRAS[name]
        require(extra, module, user=user)
    if not (isinstance(name, str) and name in POOLS) and not is_file(name):
        raise unknown_pool(name)


def words(size: int | None = None) -> list[str]:
    """The `size` (default 30,000) most frequent plain English words (ASCII letters only) by wordfreq."""
    require_pool("words", "the words pool")
    from wordfreq import iter_wordlist

    wanted = WORDS_DEFAULT_SIZE if _checked_size(size) is None else size
    plain = (word for word in iter_wordlist("en") if word.isascii() and word.isalpha())
    return _prefix(distinct(islice(plain, wanted)), wanted, "words")


def descriptions(size: int | None = None) -> list[str]:
    """`size` (default 3,500) short image descriptions from cliplens's own compositional generator."""
    return _prefix(all_descriptions(), DESCRIPTIONS_DEFAULT_SIZE if size is None else size, "descriptions")


def imagenet_classnames() -> list[str]:
    """The 1,000 ImageNet class names in class-index order (open_clip's cleaned OpenAI list; two names repeat)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet(size: int | None = None) -> list[str]:
    """ImageNet class names as a pool: repeats dropped, so 998 texts. Use `imagenet_classnames` for classifiers."""
    return _prefix(distinct(imagenet_classnames()), size, "imagenet")


def shapes(size: int | None = None) -> list[str]:
    """Every word of the shapes world's vocabulary (colours, shapes, positions, ...), in its own order."""
    try:
        from ..shapes import VOCABULARY
    except ImportError as exc:
        raise CliplensError(f"the shapes world is not available in this install ({exc}); reinstall cliplens") from exc
    return _prefix(distinct(word for group in VOCABULARY.values() for word in group), size, "shapes")


def read_pool(path: str | os.PathLike, size: int | None = None) -> list[str]:
    """A user pool: one text per line (UTF-8), stripped, empty lines and repeats dropped, order kept."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliplensError(f"cannot read text pool {path} ({exc}); pass a UTF-8 file with one text per line") from exc
    texts = distinct(lines)
    if not texts:
        raise CliplensError(f"text pool {path} has no non-empty lines; put one text per line")
    return _prefix(texts, size, str(path))


POOLS: dict[str, Callable[[int | None], list[str]]] = {
    "words": words,
    "descriptions": descriptions,
    "imagenet": imagenet,
    "shapes": shapes,
}


def get_pool(name_or_path: str | os.PathLike, size: int | None = None) -> list[str]:
    """A built-in pool by name, or a user pool from a text file; `size` keeps the first `size` texts."""
    if isinstance(name_or_path, str) and name_or_path in POOLS:
        return POOLS[name_or_path](size)
    if is_file(name_or_path):
        return read_pool(name_or_path, size)
    raise unknown_pool(name_or_path)


def unknown_pool(name: str | os.PathLike) -> CliplensError:
    return CliplensError(f"unknown text pool {str(name)!r}: use one of {', '.join(POOLS)} or the path of a text file")

"""Probe image sets and concept sets for CLIP-Dissect (docs/methods/dissect.md#sets).

Probe sets: anything the data readers take (an image folder such as a CIFAR-100 export or an ImageNet-style
validation folder, a text file listing images, `shapes:<split>[:<n>[:<seed>]]`) and `broden:<dir>` (the images that
Broden's index.csv lists, in its order). Concept sets: a text file (one concept per line), the built-in text pools
(`words[:<n>]` for the n most common English words, `imagenet`, `shapes`, `descriptions`) and `broden:<dir>` (the
labels of Broden's label.csv, cleaned). Empty lines and repeats are dropped before encoding, and the list that was
encoded is the one labels are looked up in.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from ..data.folders import ImageFolder, printable
from ..data.loader import as_source
from ..errors import CliplensError
from ..text.pools import distinct, get_pool, require_pool

BRODEN = "broden:"
DISSECT_WORDS = 20_000  # the reference's default concept set: the 20k most common English words


def _broden_csv(root: Path, name: str) -> list[dict[str, str]]:
    path = root / name
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CliplensError(f"cannot read {printable(str(path))} ({exc}); pass the Broden folder (broden1_224) that "
                            f"holds index.csv, label.csv and images/") from exc


def broden_probe(root: str | Path) -> ImageFolder:
    """The images Broden's index.csv lists (column `image`, relative to images/), in the file's order."""
    root = Path(root).expanduser()
    rows = _broden_csv(root, "index.csv")
    names = [row.get("image", "").strip() for row in rows]
    if not any(names):
        raise CliplensError(f"{printable(str(root / 'index.csv'))} lists no images (no `image` column)")
    return ImageFolder([root / "images" / name for name in names if name])


def broden_labels(root: str | Path) -> list[str]:
    """label.csv's names, cleaned as the CLIP-Dissect concept set: the category suffix (-c, -s, ...) dropped,
    underscores as spaces, the unlabelled entry "-" and repeats dropped."""
    rows = _broden_csv(Path(root).expanduser(), "label.csv")
    names = [re.sub(r"-[a-z]$", "", row.get("name", "").strip()).replace("_", " ") for row in rows]
    labels = distinct(name for name in names if name.strip("- "))
    if not labels:
        raise CliplensError(f"{printable(str(Path(root) / 'label.csv'))} names no labels (no `name` column)")
    return labels


def probe_source(spec: Any) -> Any:
    """A probe set from its spec (see the module docstring); datasets pass through."""
    if isinstance(spec, str) and spec.startswith(BRODEN):
        return broden_probe(spec.removeprefix(BRODEN))
    return as_source(spec)


def _split_size(spec: str) -> tuple[str, int | None]:
    name, _, size = spec.partition(":")
    if not size:
        return name, None
    if not size.isdecimal():
        raise CliplensError(f"bad concept set {spec!r}; write <name>[:<size>], e.g. words:20000")
    return name, int(size)


def concept_set(spec: str) -> list[str]:
    """The concepts named by `spec` (see the module docstring): stripped, non-empty, distinct, in order."""
    if spec.startswith(BRODEN):
        return broden_labels(spec.removeprefix(BRODEN))
    if Path(spec).expanduser().is_file():
        return get_pool(Path(spec).expanduser())
    name, size = _split_size(spec)
    if name == "words" and size is None:
        size = DISSECT_WORDS
    require_pool(name, "the concept set")
    return get_pool(name, size)

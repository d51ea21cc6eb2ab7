"""The candidate texts an explaining command chooses from: which pool, embedded how.

A pool left unset follows the data: the shapes world's own vocabulary for `shapes:...` data, else the caller's usual
pool (descriptions for heads, common words for neurons and pairs, as in the papers), embedded with the caller's usual
templates (none for TextSpan, a photo template for neurons and pairs).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from ..data.loader import recorded_data
from .embed import embed_texts
from .pools import get_pool, require_pool
from .templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

HEAD_POOL, HEAD_POOL_TEMPLATES = "descriptions", "none"  # heads are named with image descriptions
UNIT_POOL, UNIT_POOL_TEMPLATES = "words", "photo"  # neurons and pairs with common words, as in their papers


def pool_name(pool: str | os.PathLike | None, data_path: Any, usual_pool: str) -> str | os.PathLike:
    """The pool asked for, else the shapes vocabulary on `shapes:...` data, else `usual_pool`."""
    if pool is not None:
        return pool
    return "shapes" if str(recorded_data(data_path)).startswith("shapes:") else usual_pool


def check_candidates(data_path: Any, usual_pool: str, *, pool: str | os.PathLike | None, pool_templates: str) -> None:
    """Refuse, before any pass, a pool that is neither built in nor a file (or needs an extra that is missing) and
    malformed pool templates: what `candidate_texts` would refuse only once the statistics are in."""
    require_pool(pool_name(pool, data_path, usual_pool), "the text pool")
    resolve_templates(pool_templates)


def candidate_texts(
    lens: Lens, data_path: Any, usual_pool: str, *, pool: str | os.PathLike | None = None,
    pool_size: int | None = None, pool_templates: str = "none", progress: bool = False,
) -> tuple[str | os.PathLike, list[str], torch.Tensor]:
    """(pool name, texts, unit embeddings [M, d]) of the chosen pool; embeddings are float32, cached on disk per
    model."""
    name = pool_name(pool, data_path, usual_pool)
    texts = get_pool(name, pool_size)
    return name, texts, embed_texts(lens, texts, templates=pool_templates, progress=progress)

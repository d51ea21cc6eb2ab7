"""The text side: pools of candidate explanations, prompt templates, and cached unit text embeddings.

May import: io (the embedding cache), shapes (the world's vocabulary) and the leaves.
"""

from __future__ import annotations

from .embed import cache_path, default_cache_dir, embed_texts, template_average
from .pools import POOLS, descriptions, get_pool, imagenet, imagenet_classnames, read_pool, shapes, words
from .templates import TEMPLATE_SETS, fill, resolve_templates

__all__ = [
    "POOLS",
    "TEMPLATE_SETS",
    "cache_path",
    "default_cache_dir",
    "descriptions",
    "embed_texts",
    "fill",
    "get_pool",
    "imagenet",
    "imagenet_classnames",
    "read_pool",
    "resolve_templates",
    "shapes",
    "template_average",
    "words",
]

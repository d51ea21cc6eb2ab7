"""The shapes world: a seeded procedural image world with exact ground truth, cliplens's offline default data.

May import: the leaves (errors) only: the world knows nothing of models.
"""

from __future__ import annotations

from .dataset import ShapesDataset
from .render import RENDERER_VERSION, render
from .scene import Background, Caption, Scene, ShapeObject, concept_names
from .splits import SPLITS
from .vocabulary import VOCABULARY

__all__ = [
    "RENDERER_VERSION", "SPLITS", "VOCABULARY", "Background", "Caption", "Scene", "ShapeObject", "ShapesDataset",
    "concept_names", "render",
]

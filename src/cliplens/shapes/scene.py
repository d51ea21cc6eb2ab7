"""The records `render` returns: objects, background, captions and the scene that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .vocabulary import COLOURS, SCENE_ATTRIBUTES, VOCABULARY, roundness_of


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    position: str
    texture: str
    centre: tuple[float, float]  # (x, y) in pixels, origin at the top-left corner of the image
    radius: float  # pixels

    @property
    def roundness(self) -> str:
        return roundness_of(self.shape)

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def attribute(self, name: str) -> str:
        return getattr(self, name)


@dataclass(frozen=True)
class Background:
    kind: str  # plain | stripes | checker | noise
    colour: str

    def attribute(self, name: str) -> str:
        return {"background": self.kind, "background colour": self.colour}[name]


@dataclass(frozen=True)
class Caption:
    """A caption and the facts it asserts: (object index, attribute, value), object index -1 for the background."""

    text: str
    facts: frozenset[tuple[int, str, str]]


def concept_names() -> list[str]:
    """Every concept a probe annotation can contain: object attribute values, then '<value> background' phrases."""
    names = [value for key, values in VOCABULARY.items() if key not in SCENE_ATTRIBUTES for value in values]
    names += [f"{value} background" for key in SCENE_ATTRIBUTES for value in VOCABULARY[key]]
    return names


@dataclass
class Scene:
    index: int
    split: str
    seed: int
    image: Image.Image
    objects: tuple[ShapeObject, ...]
    masks: tuple[np.ndarray, ...]  # one bool [H, W] per object: exactly the pixels painted in its colour
    background: Background
    captions: tuple[Caption, ...]
    extras: dict[str, int] = field(default_factory=dict)  # split-specific: label/place/group (spurious), year (shift)

    @property
    def texts(self) -> list[str]:
        return [caption.text for caption in self.captions]

    @property
    def concepts(self) -> frozenset[str]:
        """Per-image concept annotations for neuron labelling (names as in `concept_names`)."""
        present = {obj.attribute(name) for obj in self.objects for name in VOCABULARY if name not in SCENE_ATTRIBUTES}
        present |= {f"{self.background.attribute(name)} background" for name in SCENE_ATTRIBUTES}
        return frozenset(present)

    def label_map(self) -> np.ndarray:
        """[H, W] int array: 0 on the background, k on the pixels of object k - 1."""
        labels = np.zeros(self.masks[0].shape if self.masks else self.image.size[::-1], dtype=np.int16)
        for k, mask in enumerate(self.masks, start=1):
            labels[mask] = k
        return labels

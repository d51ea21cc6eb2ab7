"""A map-style dataset over one split of the shapes world, labelled by one attribute."""

from __future__ import annotations

import hashlib

from PIL import Image

from ..errors import CliplensError
from .render import DEFAULT_IMAGE_SIZE, RENDERER_VERSION, check_request, render_one
from .splits import SHIFT_YEARS, SINGLE_OBJECT_SPLITS, SPURIOUS_GROUPS, SPURIOUS_MATCH_RATE
from .vocabulary import OBJECT_ATTRIBUTES, SCENE_ATTRIBUTES, VOCABULARY


def _classnames(split: str, label: str) -> list[str]:
    if label in OBJECT_ATTRIBUTES:
        if split not in SINGLE_OBJECT_SPLITS:
            raise CliplensError(
                f"split {split!r} has several objects per image, so an object label like {label!r} is ambiguous; "
                f"use one of {', '.join(sorted(SINGLE_OBJECT_SPLITS))}"
            )
        return list(VOCABULARY[label])
    if label in SCENE_ATTRIBUTES:
        return list(VOCABULARY[label])
    if label == "group" and split in SPURIOUS_MATCH_RATE:
        return list(SPURIOUS_GROUPS)
    if label == "year" and split == "shift":
        return [f"year {year}" for year in range(SHIFT_YEARS)]
    choices = list(OBJECT_ATTRIBUTES + SCENE_ATTRIBUTES) + ["group (spurious splits)", "year (shift split)"]
    raise CliplensError(f"unknown label {label!r} for split {split!r}; choose one of {', '.join(choices)}")


class ShapesDataset:
    """Scenes rendered on demand: `dataset[i]` is (PIL RGB image, class index of `label`).

    Nothing is cached, so any size costs no memory, and scene i never depends on which other scenes were read.
    """

    def __init__(
        self, n: int, seed: int = 0, split: str = "test", label: str = "shape", *, image_size: int = DEFAULT_IMAGE_SIZE
    ) -> None:
        check_request(n, seed, split, image_size)
        self.n, self.seed, self.split, self.label, self.image_size = n, seed, split, label, image_size
        self.classnames = _classnames(split, label)
        key = f"shapes-v{RENDERER_VERSION}|split={split}|n={n}|seed={seed}|label={label}|size={image_size}"
        self.fingerprint = f"shapes:{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int):
        if not 0 <= index < self.n:
            raise IndexError(f"scene {index} out of range for a dataset of {self.n}")
        return render_one(index, self.seed, self.split, self.n, self.image_size)

    def describe(self, index: int) -> str:
        """Which scene `index` is, in words, so that a table row can be checked without rendering it: the data spec
        and the scene's attributes, e.g. `shapes:test:512:0 scene 7: a small red striped circle in the centre on a
        white checker background`."""
        scene = self.scene(index)
        objects = " and ".join(f"a {obj.size} {obj.colour} {obj.texture} {obj.shape} in the {obj.position}"
                               for obj in scene.objects)
        background = f"{scene.background.colour} {scene.background.kind} background"
        extras = "".join(f", {name} {value}" for name, value in scene.extras.items())
        return f"shapes:{self.split}:{self.n}:{self.seed} scene {index}: {objects} on a {background}{extras}"

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        scene = self.scene(index)
        if self.label in OBJECT_ATTRIBUTES:
            value = scene.objects[0].attribute(self.label)
        elif self.label in SCENE_ATTRIBUTES:
            value = scene.background.attribute(self.label)
        else:
            return scene.image, scene.extras[self.label]
        return scene.image, self.classnames.index(value)

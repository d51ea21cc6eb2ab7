"""The words of the shapes world and what each one looks like.

Every attribute value is a word (or short phrase) that appears verbatim in captions, so the vocabulary doubles as a
text pool and as the class names of every zero-shot task on the world. Object colours are kept far apart in RGB and
away from the background palette, so an object can never vanish into its background.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "ring", "square", "triangle", "star", "cross")
ROUND_SHAPES: frozenset[str] = frozenset({"circle", "ring"})
ROUNDNESS: tuple[str, ...] = ("angular", "round")  # index 1 = round, the spurious split's binary label

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 170, 40),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 30),
    "orange": (250, 140, 10),
    "purple": (140, 40, 200),
    "pink": (250, 120, 200),
    "cyan": (30, 210, 220),
}

SIZES: dict[str, float] = {"small": 0.28, "medium": 0.37, "large": 0.46}  # radius as a fraction of a grid cell

POSITIONS: tuple[str, ...] = (
    "top left", "top centre", "top right",
    "middle left", "centre", "middle right",
    "bottom left", "bottom centre", "bottom right",
)  # row-major over the 3x3 grid

TEXTURES: tuple[str, ...] = ("solid", "striped", "dotted")

BACKGROUNDS: tuple[str, ...] = ("plain", "stripes", "checker", "noise")

BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "grey": (128, 128, 128),
    "white": (240, 240, 240),
    "beige": (215, 200, 165),
}

OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position", "texture", "roundness")
SCENE_ATTRIBUTES: tuple[str, ...] = ("background", "background colour")

VOCABULARY: dict[str, list[str]] = {
    "shape": list(SHAPES),
    "colour": list(COLOURS),
    "size": list(SIZES),
    "position": list(POSITIONS),
    "texture": list(TEXTURES),
    "roundness": list(ROUNDNESS),
    "background": list(BACKGROUNDS),
    "background colour": list(BACKGROUND_COLOURS),
}


def roundness_of(shape: str) -> str:
    return ROUNDNESS[shape in ROUND_SHAPES]

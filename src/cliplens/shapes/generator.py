"""The shapes renderer as a text-to-image generator: attribute words in a prompt become a scene
(docs/methods/adversarial.md#generator).

The first shape word is the depicted object; the first colour, size, texture and position words found anywhere in the
prompt are its attributes, the first background and background-colour words the scene's; every later shape word adds
one more object in a free cell. Whatever the prompt leaves open is drawn at random from the image's own stream, seeded
by (seed, prompt position, image position), so a prompt's images are reproducible and independent of the others.
Words outside the world's vocabulary draw nothing.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .render import DEFAULT_IMAGE_SIZE, check_request, paint_layout
from .scene import Background, Scene
from .splits import Layout, _pick
from .vocabulary import BACKGROUND_COLOURS, BACKGROUNDS, COLOURS, POSITIONS, SHAPES, SIZES, TEXTURES

SPLIT = "generated"  # the `split` of a generated scene
KINDS: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "texture": TEXTURES, "position": POSITIONS,
    "background": BACKGROUNDS, "background colour": tuple(BACKGROUND_COLOURS),
}
_KIND_OF = {word: kind for kind, words in KINDS.items() for word in words}
_WORDS = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _KIND_OF), key=len, reverse=True)) + r")\b")


def parse_prompt(prompt: str) -> tuple[dict[str, str], list[str]]:
    """(the first word of each kind found, every shape word in order); multi-word positions match whole."""
    found: dict[str, str] = {}
    shapes = []
    for match in _WORDS.finditer(prompt.lower()):
        word = match.group(1)
        kind = _KIND_OF[word]
        found.setdefault(kind, word)
        if kind == "shape":
            shapes.append(word)
    return found, shapes


def prompt_layout(prompt: str, rng: np.random.Generator) -> Layout:
    """The scene a prompt asks for, the rest drawn from `rng`."""
    found, shapes = parse_prompt(prompt)

    def value(kind: str) -> str:
        return found[kind] if kind in found else _pick(rng, KINDS[kind])

    main = {kind: value(kind) for kind in ("shape", "colour", "size", "position", "texture")}
    free = [cell for cell in POSITIONS if cell != main["position"]]
    order = rng.permutation(len(free))
    extra = [{"shape": shape, "colour": _pick(rng, KINDS["colour"]), "size": _pick(rng, KINDS["size"]),
              "position": free[int(cell)], "texture": _pick(rng, TEXTURES)} for shape, cell in zip(shapes[1:], order)]
    background = Background(value("background"), value("background colour"))
    return Layout((main, *extra), background, {}, "world")


class ShapesGenerator:
    """prompt → images through the shapes renderer (`cliplens.apps.adversarial.Generator`)."""

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        check_request(0, 0, "test", image_size)
        self.image_size = image_size

    def scene(self, prompt: str, prompt_index: int, image_index: int, seed: int) -> Scene:
        rng = np.random.default_rng([int(seed), int(prompt_index), int(image_index)])
        layout = prompt_layout(prompt, rng)
        image, objects, masks, captions = paint_layout(layout, rng, self.image_size)
        return Scene(index=int(image_index), split=SPLIT, seed=int(seed), image=image, objects=objects, masks=masks,
                     background=layout.background, captions=captions)

    def generate(self, prompts: Sequence[str], per_prompt: int, seed: int) -> list:
        """`per_prompt` images of every prompt, prompt by prompt."""
        return [self.scene(prompt, p, i, seed).image for p, prompt in enumerate(prompts) for i in range(per_prompt)]

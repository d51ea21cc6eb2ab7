"""Render scenes of the shapes world.

Scene i of a split is drawn from its own random stream, seeded by (seed, split, i): any scene can be rendered alone,
in any order, and `render(n, seed, split, start=k)` continues exactly where `render(k, seed, split)` stopped (except
for `shift`, whose year depends on n). Bump RENDERER_VERSION whenever a change alters any pixel or record.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import CliplensError
from .background import paint_background
from .captions import roundness_captions, world_captions
from .geometry import EXTENT, object_mask
from .scene import Scene, ShapeObject
from .splits import SPLITS, Layout, sample_layout
from .vocabulary import POSITIONS, SIZES

RENDERER_VERSION = 1
DEFAULT_IMAGE_SIZE = 96


MAX_IMAGES = 10**9  # a pass over a billion rendered images takes weeks: a larger request is a typo


def check_request(n: int, seed: int, split: str, image_size: int) -> None:
    if split not in SPLITS:
        raise CliplensError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise CliplensError(f"the number of images must be a non-negative integer, got {n!r}")
    if n > MAX_IMAGES:
        raise CliplensError(f"the number of images must be at most {MAX_IMAGES}, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise CliplensError(f"the shapes seed must be a non-negative integer, got {seed!r}")
    if image_size < 24:
        raise CliplensError(f"image_size {image_size} is too small to draw a 3x3 grid of shapes; use 24 or more")


def _place(attributes: dict[str, str], image_size: int, rng: np.random.Generator) -> ShapeObject:
    """Centre the object in its grid cell, jittered as far as it can go without leaving the cell."""
    cell = image_size / 3
    row, column = divmod(POSITIONS.index(attributes["position"]), 3)
    radius = SIZES[attributes["size"]] * cell
    slack = max(0.0, cell / 2 - EXTENT * radius)
    jitter = rng.uniform(-slack, slack, size=2)
    centre = (float((column + 0.5) * cell + jitter[0]), float((row + 0.5) * cell + jitter[1]))
    return ShapeObject(centre=centre, radius=float(radius), **attributes)


def paint_layout(layout: Layout, rng: np.random.Generator, image_size: int) -> tuple[Image.Image, tuple, tuple, tuple]:
    """(image, objects, masks, captions) of a layout: objects placed in their cells, painted over the background."""
    objects = tuple(_place(attributes, image_size, rng) for attributes in layout.objects)
    pixels = paint_background(layout.background.kind, layout.background.colour, image_size, rng)
    masks = []
    for obj in objects:  # objects sit in distinct grid cells, so masks never overlap
        mask = object_mask(obj.shape, obj.texture, obj.centre, obj.radius, image_size)
        pixels[mask] = obj.rgb
        masks.append(mask)
    if layout.caption_style == "roundness":
        captions = roundness_captions(objects[0], layout.background, rng)
    else:
        captions = world_captions(objects, layout.background, rng)
    return Image.fromarray(pixels, "RGB"), objects, tuple(masks), captions


def render_one(index: int, seed: int, split: str, n: int, image_size: int = DEFAULT_IMAGE_SIZE) -> Scene:
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    layout = sample_layout(split, index, n, rng)
    image, objects, masks, captions = paint_layout(layout, rng, image_size)
    return Scene(
        index=int(index), split=split, seed=int(seed), image=image, objects=objects,
        masks=masks, background=layout.background, captions=captions, extras=dict(layout.extras),
    )


def render(
    n: int, seed: int = 0, split: str = "train", *, start: int = 0, image_size: int = DEFAULT_IMAGE_SIZE
) -> list[Scene]:
    """Scenes start..start+n-1 of `split` (see `cliplens.shapes.splits` for what each split draws)."""
    check_request(n, seed, split, image_size)
    total = start + n
    return [render_one(i, seed, split, total, image_size) for i in range(start, total)]

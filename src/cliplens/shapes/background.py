"""Background images: a colour from the background palette and a pattern type.

Patterns alternate the colour with a second tone 40 levels lighter (dark colours) or darker (light ones), so every
background type is visible on every background colour while staying far from the object palette.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .vocabulary import BACKGROUND_COLOURS

NOISE_AMPLITUDE = 25  # uniform noise, standard deviation 25 / sqrt(3) = 14 levels
TONE_STEP = 40


def second_tone(colour: tuple[int, int, int]) -> np.ndarray:
    base = np.asarray(colour, dtype=np.int16)
    step = TONE_STEP if base.mean() < 128 else -TONE_STEP
    return np.clip(base + step, 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)
def _patterned(kind: str, colour_name: str, image_size: int) -> np.ndarray:
    """The deterministic backgrounds, computed once per (kind, colour, size) and copied from then on."""
    colour = np.asarray(BACKGROUND_COLOURS[colour_name], dtype=np.uint8)
    rows = np.arange(image_size)[:, None]
    columns = np.arange(image_size)[None, :]
    if kind == "plain":
        tone = np.zeros((image_size, image_size), dtype=bool)
    elif kind == "stripes":
        band = max(2, image_size // 16)
        tone = ((rows + columns) // band) % 2 == 1
    elif kind == "checker":
        cell = max(2, image_size // 8)
        tone = ((rows // cell) + (columns // cell)) % 2 == 1
    else:
        raise ValueError(f"unknown background {kind!r}")
    image = np.where(tone[:, :, None], second_tone(tuple(colour)), colour)
    image.flags.writeable = False
    return image


def paint_background(kind: str, colour_name: str, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A fresh [H, W, 3] uint8 image; `rng` is used only by the noise pattern (uniform per-channel noise of
    +-NOISE_AMPLITUDE levels around the colour, clipped to [0, 255])."""
    if kind != "noise":
        return _patterned(kind, colour_name, image_size).copy()
    noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, size=(image_size, image_size, 3), endpoint=True,
                         dtype=np.int16)
    noise += np.asarray(BACKGROUND_COLOURS[colour_name], dtype=np.int16)
    return np.clip(noise, 0, 255).astype(np.uint8)

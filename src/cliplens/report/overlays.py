"""Maps and label masks drawn over their image, so a person can compare lenses by eye."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

# background black, then distinct colours for classes 1, 2, ... (cycled), ignored pixels grey
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128)], dtype=np.float64)
IGNORED = (128, 128, 128)


def heat_overlay(image: Image.Image, soft: torch.Tensor, *, weight: float = 0.6) -> Image.Image:
    """`image` with a map in [0, 1] ([H, W], the image's size) blended over it: blue low, red high."""
    value = soft.detach().double().cpu().clamp(0, 1).numpy()[..., None]
    heat = np.concatenate([value, 0.15 * np.ones_like(value), 1 - value], axis=-1) * 255
    return _blend(image, heat, weight)


def label_overlay(image: Image.Image, labels: np.ndarray, *, ignore: int = 255, weight: float = 0.6) -> Image.Image:
    """`image` with a label map ([H, W]: 0 background, k class k, `ignore` grey) blended over it."""
    colours = PALETTE[np.where(labels == 0, 0, (labels - 1) % (len(PALETTE) - 1) + 1)]
    colours[labels == ignore] = IGNORED
    return _blend(image, colours, weight)


def _blend(image: Image.Image, colours: np.ndarray, weight: float) -> Image.Image:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    mixed = (1 - weight) * pixels + weight * colours
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8), "RGB")

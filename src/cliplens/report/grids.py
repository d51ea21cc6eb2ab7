"""Image grids as PNG: thumbnails in rows with a caption under each, to see at a glance what top images share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import CliplensError, require_positive_int
from ..io.atomic import replacing

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
PADDING = 4
TITLE_PIXELS = 18  # the title's font size: readable where the grid is shown at its own size, above 11-pixel captions


def to_image(item: Image.Image | torch.Tensor) -> Image.Image:
    """An RGB PIL image from a PIL image or a [3, H, W] tensor (min–max scaled: preprocessed tensors are not pixels)."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, torch.Tensor) and item.dim() == 3 and item.shape[0] == 3:
        pixels = item.detach().float().cpu()
        low, high = pixels.min(), pixels.max()
        scaled = (pixels - low) / (high - low) if high > low else torch.zeros_like(pixels)
        return Image.fromarray((scaled * 255).round().byte().permute(1, 2, 0).numpy(), "RGB")
    raise CliplensError(f"cannot draw {type(item).__name__} as an image; pass PIL images or [3, H, W] tensors")


def _fitted(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened with "..." until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """`text` broken at spaces into lines of at most `width` pixels (a word wider than a line is shortened)."""
    lines: list[str] = []
    for word in text.split():
        joined = f"{lines[-1]} {word}" if lines else word
        if lines and draw.textlength(joined, font=font) <= width:
            lines[-1] = joined
        else:
            lines.append(_fitted(draw, word, font, width))
    return lines


def image_grid(
    images: Sequence[Image.Image | torch.Tensor],
    captions: Sequence[str],
    *,
    columns: int = 8,
    size: int = 112,
    title: str | None = None,
) -> Image.Image:
    """Thumbnails of `size` pixels (aspect kept, padded white), `columns` per row, one caption line under each; the
    `title` (what was asked: the unit, the query, the ranking) above them in a larger font, on as many lines as it
    needs."""
    if not images:
        raise CliplensError("an image grid needs at least one image")
    if len(captions) != len(images):
        raise CliplensError(f"{len(captions)} captions for {len(images)} images; pass one caption per image")
    require_positive_int("columns", columns)
    if size < 16:
        raise CliplensError(f"thumbnails must be at least 16 pixels, got size={size!r}")
    font = ImageFont.load_default()
    line = font.getbbox("Ag")[3] + PADDING
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    cell_w, cell_h = size + PADDING, size + line + PADDING
    width = columns * cell_w + PADDING
    title_font = ImageFont.load_default(size=TITLE_PIXELS)
    title_line = title_font.getbbox("Ag")[3] + PADDING
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = _wrapped(measure, title, title_font, width - 2 * PADDING) if title else []
    header = len(title_lines) * title_line + (PADDING if title_lines else 0)
    canvas = Image.new("RGB", (width, header + rows * cell_h + PADDING), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(title_lines):
        draw.text((PADDING, PADDING + k * title_line), text, fill=INK, font=title_font)
    for i, (item, caption) in enumerate(zip(images, captions)):
        x = PADDING + (i % columns) * cell_w
        y = header + PADDING + (i // columns) * cell_h
        canvas.paste(ImageOps.pad(to_image(item), (size, size), color=BACKGROUND), (x, y))
        draw.text((x, y + size + 1), _fitted(draw, caption, font, size), fill=INK, font=font)
    return canvas


def save_grid(path: str | os.PathLike, images: Sequence[Image.Image | torch.Tensor], captions: Sequence[str],
              **options) -> Path:
    """Write `image_grid(images, captions, **options)` as a PNG file."""
    path = Path(path)
    grid = image_grid(images, captions, **options)
    with replacing(path) as staging:
        grid.save(staging, format="PNG")
    return path

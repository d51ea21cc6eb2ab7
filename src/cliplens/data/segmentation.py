"""Images with ground-truth masks for zero-shot segmentation (docs/methods/segmentation.md#data).

A segmentation source is an image source (`source[i]` is (PIL image, -1)) that also gives `mask(i)`: an integer
[H, W] array at the image's own size, 0 on the background, k on pixels of class `classnames[k - 1]`, and IGNORE
where the truth says nothing. It also says how its classes are prompted (`phrases`, `templates`) and whether an
image shows one object (`single_object`: the foreground is the predicted class's map) or several (the foreground is
every class's map at once).

Data specs: `shapes:segmentation:<n>[:<seed>]` (the shapes world, exact masks, classes = shapes) and `masks:<dir>`
(`<dir>/images/<name>.<png|jpg|jpeg>`, `<dir>/masks/<name>.png`, `<dir>/classes.txt` with one name per line for
the mask values 1, 2, ...).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import CliplensError
from .folders import ImageFolder, printable

IGNORE = 255  # truth pixels that count nowhere (PASCAL-style "void" borders)
SHAPES_SEGMENTATION = "shapes:segmentation"
MASKS_PREFIX = "masks:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPECS = "shapes:segmentation:<n>[:<seed>] or masks:<dir>"


class ShapesSegmentation:
    """The shapes world's segmentation split: 2-3 solid objects of distinct shapes and colours per image, each
    pixel labelled exactly by the object painted on it; classes are the values of `by` (shape or colour)."""

    single_object = False

    def __init__(self, n: int, seed: int = 0, *, by: str = "shape") -> None:
        from ..shapes import ShapesDataset
        from ..shapes.prompts import TEMPLATES, class_phrases
        from ..shapes.vocabulary import VOCABULARY

        if by not in ("shape", "colour"):
            raise CliplensError(f"shapes segmentation classes are 'shape' or 'colour', not {by!r}")
        self.scenes = ShapesDataset(n, seed=seed, split="segmentation", label="background")
        self.by, self.classnames = by, list(VOCABULARY[by])
        self.phrases, self.templates = class_phrases(by), TEMPLATES
        self.fingerprint = f"{self.scenes.fingerprint}-by-{by}"

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.scenes.scene(index).image, -1

    def mask(self, index: int) -> np.ndarray:
        scene = self.scenes.scene(index)
        labels = np.zeros(scene.image.size[::-1], dtype=np.int64)
        for obj, pixels in zip(scene.objects, scene.masks):
            labels[pixels] = self.classnames.index(obj.attribute(self.by)) + 1
        return labels

    def describe(self, index: int) -> str:
        return f"shapes segmentation scene {index}"


class MaskFolder:
    """Image + mask PNG pairs with a class-name file (layout in the module docstring)."""

    single_object = False

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        images, masks, names = root / "images", root / "masks", root / "classes.txt"
        for needed, what in ((images, "folder"), (masks, "folder"), (names, "file")):
            if not (needed.is_dir() if what == "folder" else needed.is_file()):
                raise CliplensError(f"{printable(str(root))} lacks {needed.name} ({what}); a masks: folder holds "
                                    "images/, masks/ (one <name>.png per image) and classes.txt")
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not paths:
            raise CliplensError(f"no .png/.jpg images in {printable(str(images))}")
        self.mask_paths = [masks / f"{p.stem}.png" for p in paths]
        missing = [p.name for p in self.mask_paths if not p.is_file()]
        if missing:
            raise CliplensError(f"{len(missing)} image(s) have no mask in {printable(str(masks))}, e.g. "
                                f"{printable(missing[0])}; name each mask <image name>.png")
        self.classnames = [line.strip() for line in names.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not self.classnames:
            raise CliplensError(f"{printable(str(names))} names no class; write one class name per line")
        self.phrases, self.templates = list(self.classnames), "openai"
        self.images = ImageFolder(paths)
        digest = hashlib.sha256(f"{self.images.fingerprint}|{'|'.join(self.classnames)}".encode()).hexdigest()
        self.fingerprint = f"masks:{digest[:16]}"

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int) -> tuple[Image.Image, int]:
        return self.images.read(index)[0], -1

    def __getitem__(self, index: int) -> tuple[Image.Image | None, int]:
        return self.images[index][0], -1

    def mask(self, index: int) -> np.ndarray:
        path = self.mask_paths[index]
        try:
            with Image.open(path) as opened:
                if opened.mode not in ("L", "P", "I", "I;16"):
                    raise CliplensError(f"mask {printable(path.name)} is {opened.mode}; save masks as one-channel "
                                        "PNGs of class indices (0 background, 255 ignore)")
                labels = np.asarray(opened).astype(np.int64)
        except OSError as exc:
            raise CliplensError(f"cannot read mask {printable(str(path))} ({exc})") from exc
        try:
            with Image.open(self.images.paths[index]) as image:
                size = image.size
        except OSError as exc:
            raise CliplensError(f"cannot read image {self.describe(index)} ({exc})") from exc
        if labels.shape != size[::-1]:
            raise CliplensError(f"mask {printable(path.name)} is {labels.shape[1]}x{labels.shape[0]} but its image is "
                                f"{size[0]}x{size[1]}; masks must have their image's size")
        wrong = (labels > len(self.classnames)) & (labels != IGNORE)
        if wrong.any():
            raise CliplensError(f"mask {printable(path.name)} holds value {int(labels[wrong].max())} but classes.txt "
                                f"names {len(self.classnames)} classes (values 1..{len(self.classnames)}, 0, 255)")
        return labels

    def describe(self, index: int) -> str:
        return self.images.describe(index)


def segmentation_source(data: Any) -> Any:
    """A data spec (see the module docstring) as a segmentation source; sources with `mask` pass through."""
    if hasattr(data, "mask") and hasattr(data, "classnames"):
        return data
    spec = str(data)
    if spec.startswith(SHAPES_SEGMENTATION):
        parts = spec.removeprefix(SHAPES_SEGMENTATION).split(":")[1:]
        try:
            if not 1 <= len(parts) <= 2:
                raise ValueError
            return ShapesSegmentation(int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
        except ValueError:
            raise CliplensError(f"bad data spec {spec!r}; write shapes:segmentation:<n>[:<seed>]") from None
    if spec.startswith(MASKS_PREFIX):
        return MaskFolder(spec.removeprefix(MASKS_PREFIX))
    raise CliplensError(f"segmentation needs images with masks: {spec!r} is not one of {SPECS}")


def aligned_mask(labels: np.ndarray, size: int) -> np.ndarray:
    """The mask under the CLIP eval geometry (short side resized to `size`, nearest; centre crop), so each pixel
    stays over the image pixel it labels."""
    height, width = labels.shape
    if (height, width) != (size, size):
        scale = size / min(height, width)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        resized = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(new, Image.NEAREST))
        top, left = int(round((new[1] - size) / 2.0)), int(round((new[0] - size) / 2.0))
        labels = resized[top:top + size, left:left + size].astype(np.int64)
    return labels

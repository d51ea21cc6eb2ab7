"""Images with ground-truth masks for zero-shot segmentation (docs/methods/segmentation.md#data).

A segmentation source is an image source (`source[i]` is (PIL image, -1)) that also gives `mask(i)`: an integer
[H, W] array at the image's own size, 0 on the background, k on pixels of class `classnames[k - 1]`, and IGNORE
where the truth says nothing. It also says how its classes are prompted (`phrases`, `templates`) and whether an
image shows one object (`single_object`: the foreground is the predicted class's map) or several (the foreground is
every class's map at once).

Data specs: `shapes:segmentation:<n>[:<seed>]` (the shapes world, exact masks, classes = shapes), `masks:<dir>`
(`<dir>/images/<name>.<png|jpg|jpeg>`, `<dir>/masks/<name>.png`, `<dir>/classes.txt` with one name per line for
the mask values 1, 2, ...) and `imagenet-seg:<gtsegs_ijcv.mat>` (ImageNet-segmentation, one object per image,
foreground/background truth; its classes are the 1,000 ImageNet names, which a source names by `class_pool`) and
`pascal-context:<dir>` (PASCAL Context in the 59-class layout of segmentation toolkits, val split).

`background` says whether the truth labels background pixels; where it does not (PASCAL Context 59, whose
background is ignored), there is no binary truth and every pixel takes a class.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import CliplensError
from .folders import ImageFolder, printable

IGNORE = 255  # truth pixels that count nowhere (PASCAL-style "void" borders)
SHAPES_SEGMENTATION = "shapes:segmentation"
MASKS_PREFIX = "masks:"
IMAGENET_SEG_PREFIX = "imagenet-seg:"
PASCAL_CONTEXT_PREFIX = "pascal-context:"
PASCAL_CONTEXT_59 = (  # the 59 classes of the segmentation toolkits' PascalContext59, label values 1..59
    "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle", "building", "bus",
    "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain", "dog", "door", "fence",
    "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse",
    "person", "plate", "platform", "pottedplant", "road", "rock", "sheep", "shelves", "sidewalk", "sign", "sky", "snow",
    "sofa", "table", "track", "train", "tree", "truck", "tvmonitor", "wall", "water", "window", "wood",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RECENT_SCENES = 256  # rendered shapes scenes kept (≈ 15 MB at 96 px), more than a batch
SPECS = "shapes:segmentation:<n>[:<seed>], masks:<dir>, imagenet-seg:<gtsegs_ijcv.mat> or pascal-context:<dir>"


class ShapesSegmentation:
    """The shapes world's segmentation split: 2-3 solid objects of distinct shapes and colours per image, each
    pixel labelled exactly by the object painted on it; classes are the values of `by` (shape or colour)."""

    single_object, background = False, True

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
        self._recent: OrderedDict[int, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self.scenes)

    def _scene(self, index: int) -> Any:
        """The rendered scene, from the last RECENT_SCENES when there: a batch's masks are asked for right after its
        images, and rendering is most of the cost of reading this split."""
        scene = self._recent.pop(index, None) or self.scenes.scene(index)
        self._recent[index] = scene
        while len(self._recent) > RECENT_SCENES:
            self._recent.popitem(last=False)
        return scene

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self._scene(index).image, -1

    def mask(self, index: int) -> np.ndarray:
        scene = self._scene(index)
        labels = np.zeros(scene.image.size[::-1], dtype=np.int64)
        for obj, pixels in zip(scene.objects, scene.masks):
            labels[pixels] = self.classnames.index(obj.attribute(self.by)) + 1
        return labels

    def describe(self, index: int) -> str:
        return f"shapes segmentation scene {index}"


class MaskFolder:
    """Image + mask PNG pairs with a class-name file (layout in the module docstring)."""

    single_object, background = False, True

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


class ImageNetSegmentation:
    """`gtsegs_ijcv.mat` (Guillaumin et al.; the benchmark of Chefer et al. 2021): a MATLAB v7.3 (HDF5) file whose
    `value/img` and `value/gt` hold one object reference per image. MATLAB stores arrays column-major, so an image
    reads as [3, W, H] and a ground-truth cell as [W, H]: both are transposed on read. The truth is foreground (1) or
    background (0); the class is the zero-shot prediction, never a label from the file."""

    single_object, background = True, True
    classnames = None
    class_pool = "imagenet"
    templates = "openai"

    def __init__(self, path: str | Path) -> None:
        from ..extras import require

        require("segment", "h5py", user="reading imagenet-seg:")
        import h5py

        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            raise CliplensError(f"cannot open {printable(str(path))} as HDF5 ({exc}); pass gtsegs_ijcv.mat "
                                "(MATLAB v7.3)") from exc
        if "value/img" not in self.file or "value/gt" not in self.file:
            raise CliplensError(f"{printable(str(path))} has no value/img and value/gt; is it gtsegs_ijcv.mat?")
        self.images, self.truths = self.file["value/img"], self.file["value/gt"]
        if self.images.shape != self.truths.shape or self.images.shape[1:] != (1,):
            raise CliplensError(f"value/img {self.images.shape} and value/gt {self.truths.shape} must both be "
                                "[N, 1] references; is it gtsegs_ijcv.mat?")
        self.fingerprint = f"imagenet-seg:{len(self)}:{self.path.stat().st_size}"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        pixels = np.asarray(self.file[self.images[index, 0]]).transpose(2, 1, 0)
        return Image.fromarray(pixels.astype(np.uint8), "RGB"), -1

    def mask(self, index: int) -> np.ndarray:
        cell = self.file[self.truths[index, 0]]  # a MATLAB cell: one more reference, unless saved as the array
        truth = np.asarray(self.file[cell[0, 0]] if cell.dtype == object else cell).transpose(1, 0)
        return (truth > 0).astype(np.int64)

    def describe(self, index: int) -> str:
        return f"{printable(self.path.name)} image {index}"


class PascalContext(MaskFolder):
    """PASCAL Context, 59 classes, as segmentation toolkits lay it out: `VOC2010/JPEGImages/<id>.jpg`,
    `VOC2010/SegmentationClassContext/<id>.png` (0 background, 1..59 the classes) and the split file
    `VOC2010/ImageSets/SegmentationContext/<split>.txt`. `<dir>` is the VOC2010 folder or one holding it (directly or
    in VOCdevkit/). Background pixels are ignored, as the 59-class protocol does (reduce-zero-label)."""

    background = False

    def __init__(self, root: str | Path, split: str = "val") -> None:
        given = Path(root)
        found = [c for c in (given, given / "VOC2010", given / "VOCdevkit" / "VOC2010") if (c / "JPEGImages").is_dir()]
        if not found:
            raise CliplensError(f"{printable(str(given))} holds no VOC2010/JPEGImages; pass the folder of PASCAL "
                                "Context's VOC2010 (JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext)")
        voc = found[0]
        listing = voc / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        labels = voc / "SegmentationClassContext"
        if not listing.is_file() or not labels.is_dir():
            raise CliplensError(f"{printable(str(voc))} lacks ImageSets/SegmentationContext/{split}.txt or "
                                "SegmentationClassContext/; convert PASCAL Context to the 59-class layout first")
        ids = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not ids:
            raise CliplensError(f"{printable(str(listing))} lists no image")
        self.mask_paths = [labels / f"{name}.png" for name in ids]
        missing = [p.name for p in self.mask_paths if not p.is_file()]
        if missing:
            raise CliplensError(f"{len(missing)} image(s) of {listing.name} have no label PNG in "
                                f"{printable(str(labels))}, e.g. {printable(missing[0])}")
        self.classnames, self.phrases, self.templates = list(PASCAL_CONTEXT_59), list(PASCAL_CONTEXT_59), "openai"
        self.images = ImageFolder([voc / "JPEGImages" / f"{name}.jpg" for name in ids])
        self.fingerprint = f"pascal-context-59:{split}:{self.images.fingerprint}"

    def mask(self, index: int) -> np.ndarray:
        labels = super().mask(index)
        return np.where(labels == 0, IGNORE, labels)


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
    if spec.startswith(PASCAL_CONTEXT_PREFIX):
        return PascalContext(spec.removeprefix(PASCAL_CONTEXT_PREFIX))
    if spec.startswith(IMAGENET_SEG_PREFIX):
        return ImageNetSegmentation(spec.removeprefix(IMAGENET_SEG_PREFIX))
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

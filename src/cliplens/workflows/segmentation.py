"""Zero-shot segmentation of a dataset with masks, every lens on the same images and texts: the call behind
`cliplens segment` (docs/methods/segmentation.md).

One pass: per batch, each lens's maps become soft maps, hard masks and class labels, which update streamed
confusion matrices and per-image APs; only a few example images are kept for the overlay grid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..apps.segmentation import Segmenter, Selection, class_labels, foreground
from ..data.loader import LoadReport, fingerprint, stream
from ..data.segmentation import IGNORE, aligned_mask, segmentation_source
from ..errors import CliplensError
from ..evaluate.groups import select, split_patterns
from ..evaluate.seg_metrics import BinarySegmentation, MultiClassSegmentation
from ..io.atomic import write_folder
from ..io.tables import SCHEMAS, write_table
from ..report.grids import image_grid
from ..labels import head_label, parse_label
from ..report.overlays import PALETTE, heat_overlay, label_overlay
from ..text.embed import embed_texts
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

COLUMNS = SCHEMAS["segmentation"]
METRICS, GRID, MASKS = "metrics.csv", "overlays.png", "masks.zip"


@dataclass
class Example:
    image: Image.Image  # at the model's resolution, as the model saw it
    truth: np.ndarray  # [S, S] labels
    soft: dict[str, torch.Tensor] = field(default_factory=dict)  # per lens, [S, S] in [0, 1]


@dataclass
class SegmentationResult:
    rows: list[dict[str, Any]]  # one per lens, COLUMNS
    examples: list[Example]
    report: LoadReport
    metadata: dict[str, Any]
    masks: Path | None = None  # a scratch zip of per-image mask PNGs, moved into the output by the writer


def chosen_heads(lens: Lens, last_layers: int, patterns: str | None = None) -> list[tuple[int, int]]:
    """(layer, head) pairs the heads lens reads: the heads named by comma-separated label patterns (as ablations
    name pieces: L3H*, attn[-4:], L2H1), or else every head of the last `last_layers` layers. Empty for a ResNet."""
    if lens.kind != "vit":
        return []
    total, heads = lens.spec.layers, lens.spec.heads
    if patterns is not None:
        labels = [head_label(layer, head) for layer in range(total) for head in range(heads)]
        return [(piece.layer, piece.head) for piece in map(parse_label, select(labels, split_patterns(patterns)))]
    if not 1 <= last_layers <= total:
        raise CliplensError(f"{lens.name} has {total} layers; choose --last-layers between 1 and {total}")
    return [(layer, head) for layer in range(total - last_layers, total) for head in range(heads)]


def chosen_mlp_layers(lens: Lens, mlp_layers: Sequence[int] | None) -> list[int]:
    """The MLP layers the second-order lens reads: as given, or the three before the last (layers 8-10 of a 12-layer
    ViT, as the second-order paper); empty for a ResNet."""
    if lens.kind != "vit":
        return []
    if mlp_layers is None:
        return list(range(max(0, lens.spec.layers - 4), lens.spec.layers - 1))
    return list(dict.fromkeys(mlp_layers))


def segmentation_study(
    lens: Lens, data: Any, lenses: Sequence[str], *, last_layers: int = 4, heads: str | None = None,
    mlp_layers: Sequence[int] | None = None, top_neurons: int | None = None, top_pairs: int | None = None,
    threshold: float | None = None, examples: int = 6, save_masks: bool = False, batch_size: int = 32,
    num_workers: int = 0, progress: bool = False,
) -> SegmentationResult:
    """Metrics per lens over every image of `data` (a segmentation spec or source); see the module docstring.

    `heads`: label patterns of the heads lens's heads (default: every head of the last `last_layers` layers);
    `mlp_layers`: the second-order lens's layers; `top_neurons` / `top_pairs`: per image and class, keep only that
    many neurons / pairs (None: all); `threshold`: the foreground cut on the normalised map, None for each map's mean
    (TextSpan's rule); `save_masks`: keep every image's label map per lens as a PNG.
    """
    source = segmentation_source(data)
    for name, value in (("top_neurons", top_neurons), ("top_pairs", top_pairs)):
        if value is not None and value < 1:
            raise CliplensError(f"{name} {value} must be at least 1 (or None for all)")
    selection = Selection(tuple(chosen_heads(lens, last_layers, heads)), tuple(chosen_mlp_layers(lens, mlp_layers)),
                          top_neurons, top_pairs)
    if threshold is not None and not 0 <= threshold < 1:
        raise CliplensError(f"threshold {threshold} must lie in [0, 1): maps are normalised to [0, 1]")
    classnames, phrases = class_texts(source)
    templates = resolve_templates(source.templates)
    segmenter = Segmenter(lens, lenses, embed_texts(lens, phrases, templates=templates).to(lens.dtype), selection)
    names = segmenter.names
    size = lens.spec.image_size
    # binary truth exists only where the truth labels background
    binary = {name: BinarySegmentation() for name in names} if source.background else {}
    # per-class truth exists only where the source names the classes of its mask values
    multi = ({name: MultiClassSegmentation(len(classnames) + 1, ignore=IGNORE) for name in names}
             if source.classnames is not None else {})
    masks = archive = None
    if save_masks:
        handle, scratch = tempfile.mkstemp(prefix="cliplens-masks-", suffix=".zip")
        os.close(handle)
        masks, archive = Path(scratch), zipfile.ZipFile(scratch, "w", zipfile.ZIP_STORED)  # PNGs are compressed
    kept: list[Example] = []
    report = LoadReport()
    try:
        with torch.no_grad():
            for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                description=f"segment {lens.name}", report=report):
                positions = batch.indices.tolist()
                truth = torch.from_numpy(np.stack([aligned_mask(source.mask(i), size) for i in positions]))
                predicted, batch_maps = segmenter(batch.images, single_object=source.single_object)
                room = positions[: max(0, examples - len(kept))]
                fresh = [Example(_as_seen(source[i][0], size), truth[k].numpy()) for k, i in enumerate(room)]
                for maps in batch_maps:
                    soft, hard = foreground(maps, predicted, single_object=source.single_object,
                                            threshold=threshold)
                    labels = class_labels(maps, predicted, hard if binary else None) if multi else None
                    if binary:
                        binary[maps.lens].update(soft, hard, truth > 0, truth != IGNORE)
                    if multi:
                        multi[maps.lens].update(labels, truth)
                    if archive is not None:
                        _save_masks(archive, maps.lens, positions, hard.long() if labels is None else labels)
                    for k, example in enumerate(fresh):
                        example.soft[maps.lens] = soft[k].cpu()
                kept.extend(fresh)
        if archive is not None and multi:
            archive.writestr("classes.txt", "".join(f"{name}\n" for name in classnames))
    except BaseException:
        if masks is not None:
            archive.close()
            masks.unlink(missing_ok=True)
        raise
    if archive is not None:
        archive.close()
    rows = [{"lens": name, **_binary_columns(binary.get(name)), "class_miou": multi[name].miou() if multi else "",
             "images": report.loaded} for name in names]
    metadata = {**lens.describe(), "command": "segment", "lenses": names,
                "heads": [head_label(*pair) for pair in selection.heads], "mlp_layers": list(selection.mlp_layers),
                "top_neurons": top_neurons, "top_pairs": top_pairs,
                "threshold": "mean" if threshold is None else threshold, "classes": classnames,
                "phrases": phrases, "templates": list(templates),
                "single_object": source.single_object, "background": source.background, "data_path": str(data),
                "data_fingerprint": fingerprint(source), "skipped": report.skipped, "geometry": "aligned",
                "masks": (f"{MASKS}: <lens>/<image index>.png, 0 background, k class k of classes.txt" if multi
                          else f"{MASKS}: <lens>/<image index>.png, 1 foreground") if save_masks else None}
    return SegmentationResult(rows, kept, report, metadata, masks)


def _save_masks(archive: zipfile.ZipFile, lens: str, positions: Sequence[int], labels: torch.Tensor) -> None:
    """`<lens>/<image index>.png` per image: a palette PNG whose values are the labels (as a masks: folder holds
    them) and whose colours are the overlays', so a person can look at it too. Streamed into the zip, not kept."""
    palette = [int(channel) for colour in PALETTE for channel in colour]
    for position, image_labels in zip(positions, labels.cpu().numpy().astype(np.uint8)):
        picture = Image.fromarray(image_labels, "P")
        picture.putpalette(palette)
        with archive.open(f"{lens}/{position:06d}.png", "w") as entry:
            picture.save(entry, format="PNG")


def _binary_columns(metric: BinarySegmentation | None) -> dict[str, Any]:
    """pixel_accuracy, miou, map; blank where the truth has no background (no binary benchmark)."""
    if metric is None:
        return {"pixel_accuracy": "", "miou": "", "map": ""}
    return {"pixel_accuracy": metric.pixel_accuracy(), "miou": metric.miou(), "map": metric.map()}


def class_texts(source: Any) -> tuple[list[str], list[str]]:
    """(class names, the texts prompted for them): the source's own, or the names of its `class_pool`."""
    if source.classnames is None:
        from ..text.pools import imagenet_classnames

        if source.class_pool != "imagenet":
            raise CliplensError(f"unknown class pool {source.class_pool!r} of a segmentation source")
        names = imagenet_classnames()
        return names, names
    return list(source.classnames), list(source.phrases)


def _as_seen(image: Image.Image | None, size: int) -> Image.Image:
    """The image under the eval geometry (short side to `size`, centre crop), for drawing under its maps."""
    if image is None:
        return Image.new("RGB", (size, size))
    return ImageOps.fit(image.convert("RGB"), (size, size), Image.BICUBIC, centering=(0.5, 0.5))


def overlay_grid(result: SegmentationResult) -> Image.Image:
    """One row per example: the image, its ground truth, then each lens's soft map over the image."""
    lenses = result.metadata["lenses"]
    images, captions = [], []
    for example in result.examples:
        images += [example.image, label_overlay(example.image, example.truth)]
        images += [heat_overlay(example.image, example.soft[name]) for name in lenses]
        captions += ["image", "ground truth", *lenses]
    return image_grid(images, captions, columns=2 + len(lenses), size=128,
                      title=f"{result.metadata['model']}: maps per lens (red = high)")


def write_segmentation(result: SegmentationResult, output_dir: str | os.PathLike) -> Path:
    """`metrics.csv`, `overlays.png` (when there are examples), `masks.zip` (when kept) and `metadata.json`, written
    as one folder."""
    writers = {METRICS: lambda file: write_table(file, "segmentation", result.rows)}
    if result.examples:
        writers[GRID] = lambda file: overlay_grid(result).save(file, format="PNG")
    if result.masks is not None:
        writers[MASKS] = lambda file: shutil.move(result.masks, file)
    return write_folder(output_dir, writers, result.metadata)

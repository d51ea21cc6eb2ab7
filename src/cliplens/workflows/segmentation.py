"""Zero-shot segmentation of a dataset with masks, every lens on the same images and texts: the call behind
`cliplens segment` (docs/methods/segmentation.md).

One pass: per batch, each lens's maps become soft maps, hard masks and class labels, which update streamed
confusion matrices and per-image APs; only a few example images are kept for the overlay grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..apps.segmentation import check_lenses, class_labels, foreground, lens_maps
from ..data.loader import LoadReport, fingerprint, stream
from ..data.segmentation import IGNORE, aligned_mask, segmentation_source
from ..errors import CliplensError
from ..evaluate.seg_metrics import BinarySegmentation, MultiClassSegmentation
from ..io.atomic import write_folder
from ..io.tables import SCHEMAS, write_table
from ..report.grids import image_grid
from ..report.overlays import heat_overlay, label_overlay
from ..text.embed import template_average
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

COLUMNS = SCHEMAS["segmentation"]
METRICS, GRID = "metrics.csv", "overlays.png"


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


def chosen_layers(lens: Lens, last_layers: int) -> list[int]:
    """The last `last_layers` transformer layers of a ViT (the heads lens reads their heads)."""
    if lens.kind != "vit":
        return []
    total = lens.spec.layers
    if not 1 <= last_layers <= total:
        raise CliplensError(f"{lens.name} has {total} layers; choose --last-layers between 1 and {total}")
    return list(range(total - last_layers, total))


def segmentation_study(
    lens: Lens, data: Any, lenses: Sequence[str], *, last_layers: int = 4, threshold: float | None = None,
    examples: int = 6, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> SegmentationResult:
    """Metrics per lens over every image of `data` (a segmentation spec or source); see the module docstring.

    `threshold`: the foreground cut on the normalised map, None for each map's mean (TextSpan's rule).
    """
    source = segmentation_source(data)
    names = check_lenses(lens, lenses)
    layers = chosen_layers(lens, last_layers)
    if threshold is not None and not 0 <= threshold < 1:
        raise CliplensError(f"threshold {threshold} must lie in [0, 1): maps are normalised to [0, 1]")
    classnames, phrases = class_texts(source)
    templates = resolve_templates(source.templates)
    directions = template_average(lens.encode_text, phrases, templates).to(lens.dtype)
    size = lens.spec.image_size
    # binary truth exists only where the truth labels background
    binary = {name: BinarySegmentation() for name in names} if source.background else {}
    # per-class truth exists only where the source names the classes of its mask values
    multi = ({name: MultiClassSegmentation(len(classnames) + 1, ignore=IGNORE) for name in names}
             if source.classnames is not None else {})
    kept: list[Example] = []
    report = LoadReport()
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"segment {lens.name}", report=report):
            positions = batch.indices.tolist()
            truth = torch.from_numpy(np.stack([aligned_mask(source.mask(i), size) for i in positions]))
            directions = directions.to(batch.images.device)
            predicted = (lens.decomposer.encode(batch.images) @ directions.T).argmax(1)
            room = positions[: max(0, examples - len(kept))]
            fresh = [Example(_as_seen(source[i][0], size), truth[k].numpy()) for k, i in enumerate(room)]
            for maps in lens_maps(lens, batch.images, names, directions, layers=layers):
                soft, hard = foreground(maps, predicted, single_object=source.single_object, threshold=threshold)
                if binary:
                    binary[maps.lens].update(soft, hard, truth > 0, truth != IGNORE)
                if multi:
                    multi[maps.lens].update(class_labels(maps, predicted, hard if binary else None), truth)
                for k, example in enumerate(fresh):
                    example.soft[maps.lens] = soft[k].cpu()
            kept.extend(fresh)
    rows = [{"lens": name, **_binary_columns(binary.get(name)), "class_miou": multi[name].miou() if multi else "",
             "images": report.loaded} for name in names]
    metadata = {**lens.describe(), "command": "segment", "lenses": names, "layers": layers,
                "threshold": "mean" if threshold is None else threshold, "classes": classnames,
                "phrases": phrases, "templates": list(templates),
                "single_object": source.single_object, "background": source.background, "data_path": str(data), "data_fingerprint": fingerprint(source),
                "skipped": report.skipped, "geometry": "aligned"}
    return SegmentationResult(rows, kept, report, metadata)


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
    """`metrics.csv`, `overlays.png` (when there are examples) and `metadata.json`, written as one folder."""
    writers = {METRICS: lambda file: write_table(file, "segmentation", result.rows)}
    if result.examples:
        writers[GRID] = lambda file: overlay_grid(result).save(file, format="PNG")
    return write_folder(output_dir, writers, result.metadata)

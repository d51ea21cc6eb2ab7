"""Zero-shot segmentation of a dataset with masks, every lens on the same images and texts: the call behind
`cliplens segment` (docs/methods/segmentation.md).

One pass: per batch, one shared forward gives each lens's maps, which become soft maps, hard masks and class labels
that update streamed confusion matrices and per-image APs; only a few example images are kept for the overlay grid.
Those counts are all the outputs are written from, so an analysis stores them (docs/methods/analysis.md#segmentation)
and a study given the analysis's folder writes the same outputs without reading an image.
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

from ..apps.segmentation import (
    Segmenter, Selection, check_lenses, check_selection, class_labels, foreground, prediction_reader,
)
from ..data.loader import LoadReport, fingerprint
from ..data.segmentation import IGNORE, aligned_mask, segmentation_source
from ..errors import CliplensError
from ..evaluate.groups import select, split_patterns
from ..evaluate.seg_metrics import BinarySegmentation, MultiClassSegmentation
from ..io.artifacts import check_shapes, is_analysis, load_artifact, under
from ..io.atomic import write_folder
from ..io.compat import MODEL_KEY, require_match
from ..io.tables import SCHEMAS, write_table
from ..report.grids import image_grid
from ..labels import head_label, parse_label
from ..stats.checkpoint import Passes
from ..report.overlays import PALETTE, heat_overlay, label_overlay
from ..text.embed import embed_texts
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

COLUMNS = SCHEMAS["segmentation"]
METRICS, GRID, MASKS = "metrics.csv", "overlays.png", "masks.zip"
SEGMENTATION = "segmentation"  # the analysis part
FIELDS = {"lenses": list, "predicted_by": str, "examples": int, "kept": int, "classes": list, "background": bool,
          "class_metrics": bool, "total": int, "loaded": int, "skipped": list, "reasons": list}  # what the reader reads
DATA_KEYS = ("classes", "phrases", "templates", "single_object", "background", "data_path",
             "data_fingerprint")


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


@dataclass(frozen=True)
class SegmentationRequest:
    """What a segmentation pass computes, checked before it: the lenses (in order), which pieces they read, the
    foreground cut and how many example images the grid keeps."""

    lenses: tuple[str, ...]
    selection: Selection
    threshold: float | None = None
    examples: int = 6

    def key(self) -> dict[str, Any]:
        """The settings a stored segmentation must have been computed with to be read for this request."""
        selection = self.selection
        return {"heads": [head_label(*pair) for pair in selection.heads], "mlp_layers": list(selection.mlp_layers),
                "top_neurons": selection.top_neurons, "top_pairs": selection.top_pairs,
                "threshold": "mean" if self.threshold is None else self.threshold}


def segmentation_request(
    lens: Lens, lenses: Sequence[str], *, last_layers: int = 4, heads: str | None = None,
    mlp_layers: Sequence[int] | None = None, top_neurons: int | None = None, top_pairs: int | None = None,
    threshold: float | None = None, examples: int = 6,
) -> SegmentationRequest:
    """The request for `lenses`, refused in one line where the model or the values cannot serve it (the options as
    `segmentation_study` takes them)."""
    names = check_lenses(lens, lenses)
    for name, value in (("top_neurons", top_neurons), ("top_pairs", top_pairs)):
        if value is not None and value < 1:
            raise CliplensError(f"{name} {value} must be at least 1 (or None for all)")
    if threshold is not None and not 0 <= threshold < 1:
        raise CliplensError(f"threshold {threshold} must lie in [0, 1): maps are normalised to [0, 1]")
    if examples < 0:
        raise CliplensError(f"examples {examples} must be at least 0")
    selection = Selection(tuple(chosen_heads(lens, last_layers, heads)), tuple(chosen_mlp_layers(lens, mlp_layers)),
                          top_neurons, top_pairs)
    check_selection(lens, names, selection)
    return SegmentationRequest(tuple(names), selection, threshold, examples)


@dataclass
class SegmentationCounts:
    """What one pass over a segmentation split leaves, and all that metrics.csv and the overlay grid are written from:
    per lens the streamed metrics (confusion matrices and AP sums, never the maps), the load report, the data's texts
    and the example images with their maps. An analysis stores it (docs/methods/analysis.md#segmentation)."""

    request: SegmentationRequest
    model: dict[str, Any]  # Lens.describe()
    predicted_by: str  # apps/segmentation.py `prediction_reader`
    data: dict[str, Any]  # classes, phrases, templates, single_object, background, data_path, data_fingerprint
    binary: dict[str, BinarySegmentation]  # per lens, where the truth labels background
    multi: dict[str, MultiClassSegmentation]  # per lens, where the source names its classes
    examples: list[Example]
    report: LoadReport

    def artifact(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) as an analysis part: the accumulators exactly, the examples' pixels, truth and maps."""
        tensors = counts_state(self.binary, self.multi, self.examples, self.request.lenses)
        report = self.report
        metadata = {**self.model, "lenses": list(self.request.lenses), **self.request.key(),
                    "predicted_by": self.predicted_by, "examples": self.request.examples, "kept": len(self.examples),
                    **self.data, "class_metrics": bool(self.multi),
                    "total": report.total, "loaded": report.loaded, "skipped": report.skipped,
                    "reasons": report.reasons}
        return tensors, metadata


def segmentation_study(
    lens: Lens, data: Any, lenses: Sequence[str], *, last_layers: int = 4, heads: str | None = None,
    mlp_layers: Sequence[int] | None = None, top_neurons: int | None = None, top_pairs: int | None = None,
    threshold: float | None = None, examples: int = 6, save_masks: bool = False, batch_size: int = 32,
    num_workers: int = 0, progress: bool = False,
) -> SegmentationResult:
    """Metrics per lens over every image of `data` (a segmentation spec or source, or an analysis folder that
    segmented it with these settings: then no image is read); see the module docstring.

    `heads`: label patterns of the heads lens's heads (default: every head of the last `last_layers` layers);
    `mlp_layers`: the second-order lens's layers; `top_neurons` / `top_pairs`: per image and class, keep only that
    many neurons / pairs (None: all); `threshold`: the foreground cut on the normalised map, None for each map's mean
    (TextSpan's rule); `save_masks`: keep every image's label map per lens as a PNG.
    """
    request = segmentation_request(lens, lenses, last_layers=last_layers, heads=heads, mlp_layers=mlp_layers,
                                   top_neurons=top_neurons, top_pairs=top_pairs, threshold=threshold,
                                   examples=examples)
    if is_analysis(data):
        if save_masks:
            raise CliplensError(f"{data} is an analysis: it keeps each lens's confusion matrices, not every image's "
                                "masks; pass the images with masks themselves for --save-masks")
        return segmentation_result(stored_segmentation(lens, data, request))
    masks = archive = None
    if save_masks:
        handle, scratch = tempfile.mkstemp(prefix="cliplens-masks-", suffix=".zip")
        os.close(handle)
        masks, archive = Path(scratch), zipfile.ZipFile(scratch, "w", zipfile.ZIP_STORED)  # PNGs are compressed
    try:
        counts = segmentation_pass(lens, data, request, archive=archive, batch_size=batch_size,
                                   num_workers=num_workers, progress=progress, description=f"segment {lens.name}")
        if archive is not None and counts.multi:
            archive.writestr("classes.txt", "".join(f"{name}\n" for name in counts.data["classes"]))
    except BaseException:
        if masks is not None:
            archive.close()
            masks.unlink(missing_ok=True)
        raise
    if archive is not None:
        archive.close()
    return segmentation_result(counts, masks)


def segmentation_pass(lens: Lens, data: Any, request: SegmentationRequest, *, archive: zipfile.ZipFile | None = None,
                      batch_size: int = 32, num_workers: int = 0, progress: bool = False,
                      description: str = "segment", passes: Passes | None = None) -> SegmentationCounts:
    """One pass over a segmentation source (`SegmentationReader`); `archive` receives every image's label map per
    lens, and `passes` checkpoints the pass ("segmentation")."""
    source = segmentation_source(data)
    reader = SegmentationReader(lens, source, request, archive)
    report = (passes or Passes()).run(lens, source, "segmentation", {"segmentation": reader}, reader.read,
                                      shared=False, description=description, batch_size=batch_size,
                                      num_workers=num_workers, progress=progress)
    return reader.counts(data, report)


class SegmentationReader:
    """What one pass over a segmentation source accumulates. Per batch, one shared forward serves every lens
    (Grad-CAM adds its own forward and backward), whose maps become soft maps, hard masks and class labels that update
    the metrics; only the first `request.examples` images are kept whole."""

    def __init__(self, lens: Lens, source: Any, request: SegmentationRequest,
                 archive: zipfile.ZipFile | None = None):
        self.lens, self.source, self.request, self.archive = lens, source, request, archive
        self.classnames, self.phrases = class_texts(source)
        self.templates = resolve_templates(source.templates)
        self.segmenter = Segmenter(lens, request.lenses,
                                   embed_texts(lens, self.phrases, templates=self.templates).to(lens.dtype),
                                   request.selection)
        names = self.segmenter.names
        # binary truth exists only where the truth labels background
        self.binary = {name: BinarySegmentation() for name in names} if source.background else {}
        # per-class truth exists only where the source names the classes of its mask values
        self.multi = ({name: MultiClassSegmentation(len(self.classnames) + 1, ignore=IGNORE) for name in names}
                      if source.classnames is not None else {})
        self.kept: list[Example] = []

    def read(self, batch: Any) -> None:
        source, request, size = self.source, self.request, self.lens.spec.image_size
        positions = batch.indices.tolist()
        truth = torch.from_numpy(np.stack([aligned_mask(source.mask(i), size) for i in positions]))
        predicted, batch_maps = self.segmenter(batch.images, single_object=source.single_object)
        room = positions[: max(0, request.examples - len(self.kept))]
        fresh = [Example(_as_seen(source[i][0], size), truth[k].numpy()) for k, i in enumerate(room)]
        for maps in batch_maps:
            soft, hard = foreground(maps, predicted, single_object=source.single_object, threshold=request.threshold)
            labels = class_labels(maps, predicted, hard if self.binary else None) if self.multi else None
            if self.binary:
                self.binary[maps.lens].update(soft, hard, truth > 0, truth != IGNORE)
            if self.multi:
                self.multi[maps.lens].update(labels, truth)
            if self.archive is not None:
                _save_masks(self.archive, maps.lens, positions, hard.long() if labels is None else labels)
            for k, example in enumerate(fresh):
                example.soft[maps.lens] = soft[k].cpu()
        self.kept.extend(fresh)

    def state(self) -> dict[str, torch.Tensor]:
        """The metrics' accumulators and the examples kept so far, exactly (an analysis part's tensors)."""
        return counts_state(self.binary, self.multi, self.kept, self.request.lenses)

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.binary = {name: BinarySegmentation.restored(under(tensors, f"{name}.binary.")) for name in self.binary}
        self.multi = {name: MultiClassSegmentation.restored(under(tensors, f"{name}.multi."), IGNORE)
                      for name in self.multi}
        kept = len(tensors["examples.pixels"]) if "examples.pixels" in tensors else 0
        self.kept = examples_from(tensors, self.request.lenses, kept)

    def counts(self, data: Any, report: LoadReport) -> SegmentationCounts:
        source = self.source
        data_record = {"classes": self.classnames, "phrases": self.phrases, "templates": list(self.templates),
                       "single_object": source.single_object, "background": source.background, "data_path": str(data),
                       "data_fingerprint": fingerprint(source)}
        return SegmentationCounts(self.request, self.lens.describe(),
                                  prediction_reader(self.lens.kind, self.segmenter.names), data_record, self.binary,
                                  self.multi, self.kept, report)


def counts_state(binary: dict[str, BinarySegmentation], multi: dict[str, MultiClassSegmentation],
                 examples: Sequence[Example], lenses: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every lens's metric accumulators and the example images' pixels, truth and soft maps per lens, as tensors."""
    tensors = {f"{name}.binary.{key}": value for name, metric in binary.items()
               for key, value in metric.state().items()}
    tensors |= {f"{name}.multi.{key}": value for name, metric in multi.items()
                for key, value in metric.state().items()}
    if not examples:
        return tensors
    return tensors | {"examples.pixels": torch.from_numpy(np.stack([np.asarray(e.image) for e in examples])),
            "examples.truth": torch.from_numpy(np.stack([e.truth for e in examples])),
            **{f"{name}.examples.soft": torch.stack([e.soft[name] for e in examples]) for name in lenses}}


def examples_from(tensors: dict[str, torch.Tensor], lenses: Sequence[str], count: int) -> list[Example]:
    """The first `count` examples of `counts_state`'s tensors, with the given lenses' maps."""
    return [Example(Image.fromarray(tensors["examples.pixels"][k].numpy(), "RGB"), tensors["examples.truth"][k].numpy(),
                    {name: tensors[f"{name}.examples.soft"][k] for name in lenses}) for k in range(count)]


def stored_segmentation(lens: Lens, path: str | os.PathLike, request: SegmentationRequest) -> SegmentationCounts:
    """The counts an analysis stored, for exactly this model and these settings, refused in one line otherwise; the
    requested lenses may be any of those analysed (their metrics do not depend on the others) provided each image's
    zero-shot class was read the same way, and `request.examples` at most the examples kept."""
    tensors, metadata = load_artifact(path, {MODEL_KEY: lens.fingerprint, "precision": lens.precision}, FIELDS,
                                      part=SEGMENTATION, hint="run `cliplens analyze` with --ask segment, "
                                                              "--segment-path and the lenses")
    redo = "pass the analysis's setting, or run `cliplens analyze` again with this one"
    require_match(metadata, request.key(), str(path), remedy=redo)
    analysed, names, reader = metadata["lenses"], list(request.lenses), metadata["predicted_by"]
    missing = [name for name in names if name not in analysed]
    if missing:
        raise CliplensError(f"{path} segmented with the lenses {', '.join(analysed)}, not {missing[0]}; ask for "
                            f"those, or run `cliplens analyze` again with --lens {missing[0]}")
    if prediction_reader(lens.kind, names) != reader:
        raise CliplensError(f"{path} read each image's zero-shot class from the {reader} lens's reading of the "
                            f"forward: add --lens {reader} to read the same computation")
    if request.examples > metadata["examples"]:
        raise CliplensError(f"{path} kept the overlay grid's first {metadata['examples']} images: pass --examples "
                            f"{metadata['examples']} or fewer, or run `cliplens analyze` again with more")
    data = {key: metadata.get(key) for key in DATA_KEYS}
    classes = len(data["classes"]) + 1
    shapes = {**{f"{name}.binary.confusion": (2, 2) for name in names if data["background"]},
              **{f"{name}.multi.confusion": (classes, classes) for name in names if metadata["class_metrics"]}}
    kept = min(request.examples, metadata["kept"])
    if kept:
        size = lens.spec.image_size
        shapes |= {"examples.pixels": ("kept", size, size, 3), "examples.truth": ("kept", size, size),
                   **{f"{name}.examples.soft": ("kept", size, size) for name in names}}
    check_shapes(path, tensors, shapes)

    binary = ({name: BinarySegmentation.restored(under(tensors, f"{name}.binary.")) for name in names}
              if data["background"] else {})
    multi = ({name: MultiClassSegmentation.restored(under(tensors, f"{name}.multi."), IGNORE) for name in names}
             if metadata["class_metrics"] else {})
    examples = examples_from(tensors, names, kept)
    report = LoadReport(metadata["total"], metadata["loaded"], metadata["skipped"], metadata["reasons"])
    model = {key: metadata.get(key) for key in lens.describe()}
    return SegmentationCounts(request, model, metadata["predicted_by"], {**data, "analysis": str(path)}, binary,
                              multi, examples, report)


def segmentation_result(counts: SegmentationCounts, masks: Path | None = None) -> SegmentationResult:
    """metrics.csv's rows and the record, from a pass's counts or an analysis's."""
    names, binary, multi, report = list(counts.request.lenses), counts.binary, counts.multi, counts.report
    rows = [{"lens": name, **_binary_columns(binary.get(name)), "class_miou": multi[name].miou() if multi else "",
             "images": report.loaded} for name in names]
    metadata = {**counts.model, "command": "segment", "lenses": names, **counts.request.key(), **counts.data,
                "skipped": report.skipped, "geometry": "aligned",
                "masks": (f"{MASKS}: <lens>/<image index>.png, 0 background, k class k of classes.txt" if multi
                          else f"{MASKS}: <lens>/<image index>.png, 1 foreground") if masks is not None else None}
    return SegmentationResult(rows, counts.examples, report, metadata, masks)


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

"""One streaming pass over a dataset: decompose each batch and reduce it to statistics at once.

Nothing per image is kept, so memory does not grow with the number of images; everything is accumulated in float64
and the result is a mergeable, self-describing artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.loader import LoadReport, as_source, fingerprint, stream
from ..errors import CliplensError
from ..io.artifacts import check_shapes, load_artifact, read_metadata, save_artifact
from ..io.compat import MODEL_KEY
from ..settings import Settings
from .accumulate import DenseReducer, HeadReducer, PairReducer
from .identity import check_compatible, merged_metadata
from .moments import Moments
from .pairs import PairStats

if TYPE_CHECKING:
    from ..lens import Lens

# What a pass can reduce: a ResNet's neuron pieces would need a [d, d] scatter per neuron (17 GB for RN50); ResNet
# neurons are studied through their neuron×head pairs.
COLLECTED = ("layer", "head", "pair")


class PieceStats:
    """Count, mean [C, d] and covariance [C, d, d] of every piece; with spatial pieces also token means [C, N, d]."""

    def __init__(self, labels: list[str], moments: Moments, metadata: dict[str, Any],
                 token_mean: torch.Tensor | None = None):
        self.labels, self.moments, self.metadata, self.token_mean = list(labels), moments, dict(metadata), token_mean
        self.report: LoadReport | None = None

    @property
    def settings(self) -> Settings:
        """What the pieces are (granularity, spatial, convention, normalize), as the metadata records."""
        return Settings.from_metadata(self.metadata)

    @property
    def count(self) -> int:
        return self.moments.count

    @property
    def mean(self) -> torch.Tensor:
        return self.moments.mean

    @property
    def covariance(self) -> torch.Tensor:
        return self.moments.covariance

    @property
    def second_moment(self) -> torch.Tensor:
        return self.moments.second_moment

    def __getitem__(self, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [d], covariance [d, d]) of one piece."""
        if label not in self.labels:
            raise KeyError(f"no piece labelled {label!r} in these statistics")
        i = self.labels.index(label)
        return self.mean[i], self.covariance[i]

    def merge(self, other: "PieceStats") -> "PieceStats":
        """Statistics of both shards' images together (equal to one pass over all of them, to round-off)."""
        check_compatible(self.metadata, other.metadata)
        token_mean = None
        if self.token_mean is not None and other.token_mean is not None:
            total = max(self.count + other.count, 1)
            token_mean = (self.token_mean * self.count + other.token_mean * other.count) / total
        moments = self.moments.merge(other.moments)
        return PieceStats(self.labels, moments, merged_metadata(self.metadata, other.metadata, moments.count), token_mean)

    def save(self, path: str | Path) -> Path:
        tensors = {"count": torch.tensor([self.count]), "mean": self.mean, "scatter": self.moments.scatter}
        if self.token_mean is not None:
            tensors["token_mean"] = self.token_mean
        return save_artifact(path, tensors, {**self.metadata, "count": self.count, "labels": self.labels})


def collect(
    lens: Lens,
    data: Any,
    *,
    granularity: str = "head",
    spatial: bool = False,
    convention: str = "separate",
    normalize: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    top_k: int = 50,
    progress: bool = False,
) -> PieceStats | PairStats:
    """Statistics of `lens`'s pieces over `data` (a folder, a path list, or a dataset of (image, label) items).

    ResNet models with granularity "pair" give `PairStats` (scalar moments and extremes, closed-form directions);
    everything else gives `PieceStats`.
    """
    settings = Settings(granularity, spatial, convention, normalize)
    source = as_source(data)
    report = LoadReport()
    if granularity == "pair":
        if lens.kind != "resnet":
            raise CliplensError("granularity 'pair' exists for ResNet CLIP models only; use 'head' or 'layer' for a ViT")
        reducer = PairReducer(lens.decomposer, settings, top_k=top_k)
    elif granularity == "head" and lens.kind == "vit":
        reducer = HeadReducer(lens.decomposer, settings)
    else:
        reducer = DenseReducer(lens.decomposer, settings)
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"collect {lens.name}", report=report):
            reducer.update(batch.images, batch.indices)
    metadata = {
        "kind": "pair-stats" if granularity == "pair" else "piece-stats",
        **lens.describe(),
        "architecture": lens.kind,
        **settings.metadata(),
        "data_fingerprint": fingerprint(source),
        "data_size": report.total,
        "skipped": len(report.skipped),
    }
    if granularity == "pair":
        stats = reducer.stats
        stats.metadata.update(metadata, top_k=top_k, count=stats.count)
    else:
        labels, moments, token_mean = reducer.finish()
        stats = PieceStats(labels, moments, metadata, token_mean)
    stats.report = report
    return stats


def load_stats(path: str | Path, lens: Lens | None = None, **expect: Any) -> PieceStats | PairStats:
    """Read statistics; with `lens`, refuse ones made for another model; `expect` pins other settings."""
    if lens is not None:
        expect = {MODEL_KEY: lens.fingerprint, **expect}
    kind = read_metadata(path).get("kind")
    if kind not in ("piece-stats", "pair-stats"):
        raise CliplensError(f"{path} holds {kind!r}, not statistics; pass the folder `cliplens collect` wrote")
    if kind == "pair-stats":
        tensors, metadata = load_artifact(path, expect, fields={"top_k": int})
        check_shapes(path, tensors, PairStats.STATE_SHAPES)
        return PairStats.from_state(tensors, metadata)
    tensors, metadata = load_artifact(path, expect, fields={"labels": list})
    labels = metadata["labels"]
    if not all(isinstance(label, str) for label in labels):
        raise CliplensError(f"{path}: its metadata labels are not all strings; recompute the artifact")
    shapes = {"count": (1,), "mean": ("pieces", "dim"), "scatter": ("pieces", "dim", "dim")}
    if "token_mean" in tensors:
        shapes["token_mean"] = ("pieces", "tokens", "dim")
    check_shapes(path, tensors, shapes, pieces=len(labels))
    moments = Moments.from_state(int(tensors["count"][0]), tensors["mean"], tensors["scatter"])
    return PieceStats(labels, moments, metadata, tensors.get("token_mean"))

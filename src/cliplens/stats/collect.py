"""One streaming pass over a dataset: decompose each batch and reduce it to statistics at once.

Nothing per image is kept, so memory does not grow with the number of images; everything is accumulated in float64
and the result is a mergeable, self-describing artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.loader import LoadReport, as_source, fingerprint
from ..data.shards import Shard, shard_of
from ..errors import CliplensError
from ..io.artifacts import ANALYSIS, check_shapes, load_artifact, part_metadata, read_metadata, save_artifact
from ..io.compat import MODEL_KEY
from ..settings import Settings
from .accumulate import DenseReducer, HeadReducer, PairReducer, piece_from_state, piece_state
from .checkpoint import EVERY, Checkpoints
from .distributed import Ranks, data_part, joined, part_name
from .identity import check_compatible, data_record, merged_metadata
from .moments import Moments
from .pairs import PairStats

if TYPE_CHECKING:
    from ..lens import Lens

# What a pass can reduce: a ResNet's neuron pieces would need a [d, d] scatter per neuron (17 GB for RN50); ResNet
# neurons are studied through their neuron×head pairs.
COLLECTED = ("layer", "head", "pair")
PIECES, PAIRS = "pieces", "pairs"  # the parts of an analysis (workflows/analysis.py) that hold these statistics
ASK_AGAIN = "run `cliplens analyze` again asking for what this needs (see its --ask)"


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

    def covariance_of(self, index: torch.Tensor | int) -> torch.Tensor:
        """The covariance of the pieces at `index` alone (`covariance` divides every piece's scatter: 0.3 s for
        ViT-B-32's)."""
        return self.moments.scatter[index] / max(self.count, 1)

    def __getitem__(self, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean [d], covariance [d, d]) of one piece."""
        if label not in self.labels:
            raise KeyError(f"no piece labelled {label!r} in these statistics")
        i = self.labels.index(label)
        return self.mean[i], self.covariance_of(i)

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
        return save_artifact(path, *self.artifact())

    def artifact(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) as saved, alone or as a part of an analysis."""
        return self.state(), {**self.metadata, "count": self.count, "labels": self.labels}

    def state(self) -> dict[str, torch.Tensor]:
        """count, mean, scatter (and token_mean): the exact accumulators, as saved and as exchanged between ranks."""
        return piece_state(self.moments, self.token_mean)

    @classmethod
    def from_state(cls, labels: list[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "PieceStats":
        moments, token_mean = piece_from_state(tensors)
        return cls(labels, moments, metadata, token_mean)


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
    shard: str | Shard | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = EVERY,
    resume: bool = False,
    distributed: bool | None = False,
) -> PieceStats | PairStats | None:
    """Statistics of `lens`'s pieces over `data` (a folder, a path list, or a dataset of (image, label) items).

    ResNet models with granularity "pair" give `PairStats` (scalar moments and extremes, closed-form directions);
    everything else gives `PieceStats`.

    Long runs: with `checkpoint_dir`, the running state is saved there every `checkpoint_every` batches, and
    `resume=True` continues from it (the result is bit-identical to an uninterrupted run). `shard="i/n"` reads only
    the i-th of n contiguous slices of the data (merge the shards' statistics in shard order for the whole).
    `distributed=None` splits the data over the processes when launched by torchrun (True requires it): rank 0
    returns the statistics of all the data, merged in rank order, and the other ranks return None.
    """
    settings = Settings(granularity, spatial, convention, normalize)
    if granularity == "pair" and lens.kind != "resnet":
        raise CliplensError("granularity 'pair' exists for ResNet CLIP models only; use 'head' or 'layer' for a ViT")
    source = as_source(data)

    def local(ranks: Ranks | None) -> PieceStats | PairStats:
        part = data_part(source, shard, ranks)
        identity = {"pass": "collect", MODEL_KEY: lens.fingerprint, "model": lens.name, "precision": lens.precision,
                    **settings.metadata(), "top_k": top_k if granularity == "pair" else None,
                    "data_fingerprint": fingerprint(part), "batch_size": batch_size, "part": part_name(part)}
        checkpoints = Checkpoints(checkpoint_dir, f"collect-{part_name(part)}", identity, checkpoint_every)
        return _collect_part(lens, part, settings, top_k, checkpoints, resume, batch_size=batch_size,
                             num_workers=num_workers, progress=progress and (ranks is None or ranks.rank == 0))

    with joined(distributed, lens.device) as ranks:
        if ranks is None:
            return local(None)
        with ranks.together():
            stats = local(ranks)

        def rebuild(rank: int, tensors: dict[str, torch.Tensor], report: LoadReport) -> PieceStats | PairStats:
            if isinstance(stats, PairStats):  # the factors are the model's weights: rank 0's own
                part = PairStats.from_state({**tensors, **_factors(stats)}, {"top_k": top_k})
            else:
                part = PieceStats.from_state(stats.labels, tensors, {})
            return described(part, lens, settings, shard_of(source, Shard(rank, ranks.size)), report)

        sent = {name: tensor for name, tensor in stats.state().items() if name not in _factors(stats)}
        return ranks.fold(sent, stats.report, rebuild)


def _collect_part(lens: Lens, part: Any, settings: Settings, top_k: int, checkpoints: Checkpoints, resume: bool,
                  **stream_options: Any) -> PieceStats | PairStats:
    """One process's pass over its part of the data, checkpointed and resumable."""
    if settings.granularity == "pair":
        kind, options = PairReducer, {"top_k": top_k}
    elif settings.granularity == "head" and lens.kind == "vit":
        kind, options = HeadReducer, {}
    else:
        kind, options = DenseReducer, {}
    resumed = checkpoints.resume() if resume else None
    if resumed is None:
        reducer, report, start = kind(lens.decomposer, settings, **options), LoadReport(), 0
    else:
        reducer = kind.from_state(lens.decomposer, settings, resumed.tensors, resumed.record.get("labels"), **options)
        report, start = resumed.report, resumed.position
    with torch.no_grad():
        for batch in checkpoints.batches(lens, part, stage="collect", report=report, start=start,
                                         state=lambda: (reducer.state(), {"labels": reducer.labels}),
                                         description=f"collect {lens.name}", **stream_options):
            reducer.update(batch.images, batch.indices)
    if settings.granularity == "pair":
        return described(reducer.stats, lens, settings, part, report)
    labels, moments, token_mean = reducer.finish()
    return described(PieceStats(labels, moments, {}, token_mean), lens, settings, part, report)


def described(stats: PieceStats | PairStats, lens: Lens, settings: Settings, part: Any,
               report: LoadReport) -> PieceStats | PairStats:
    """`stats` of one part, with the metadata that says what they are and which data they cover."""
    pairs = isinstance(stats, PairStats)
    stats.metadata.update({"kind": "pair-stats" if pairs else "piece-stats", **lens.describe(),
                           "architecture": lens.kind, **settings.metadata(), **data_record(part, report)})
    if pairs:
        stats.metadata.update(top_k=stats.top_k, count=stats.count)
    stats.report = report
    return stats


def _factors(stats: PieceStats | PairStats) -> dict[str, torch.Tensor]:
    """The pair factor weights as state entries (none for pieces): equal on every rank, so never sent."""
    return {f"factor.{name}": t for name, t in stats.factors.items()} if isinstance(stats, PairStats) else {}


def load_stats(path: str | Path, lens: Lens | None = None, *, part: str | None = None,
               **expect: Any) -> PieceStats | PairStats:
    """Read statistics (from `collect`, or the `part` of an analysis: its piece statistics unless it has only pair
    ones); with `lens`, refuse ones made for another model; `expect` pins other settings."""
    if lens is not None:
        expect = {MODEL_KEY: lens.fingerprint, **expect}
    record = read_metadata(path)
    if record.get("kind") == ANALYSIS:
        part = part or (PIECES if PIECES in record.get("parts", {}) else PAIRS)
        kind = part_metadata(path, part, ASK_AGAIN).get("kind")
    else:
        part, kind = None, record.get("kind")
    if kind not in ("piece-stats", "pair-stats"):
        raise CliplensError(f"{path} holds {kind!r}, not statistics; pass the folder `cliplens collect` wrote")
    if kind == "pair-stats":
        tensors, metadata = load_artifact(path, expect, fields={"top_k": int}, part=part, hint=ASK_AGAIN)
        check_shapes(path, tensors, PairStats.STATE_SHAPES)
        return PairStats.from_state(tensors, metadata)
    tensors, metadata = load_artifact(path, expect, fields={"labels": list}, part=part, hint=ASK_AGAIN)
    labels = metadata["labels"]
    if not all(isinstance(label, str) for label in labels):
        raise CliplensError(f"{path}: its metadata labels are not all strings; recompute the artifact")
    shapes = {"count": (1,), "mean": ("pieces", "dim"), "scatter": ("pieces", "dim", "dim")}
    if "token_mean" in tensors:
        shapes["token_mean"] = ("pieces", "tokens", "dim")
    check_shapes(path, tensors, shapes, pieces=len(labels))
    return PieceStats.from_state(labels, tensors, metadata)

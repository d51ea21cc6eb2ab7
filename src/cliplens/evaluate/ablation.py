"""Mean-ablation (docs/methods/mean-ablation.md#definition) as one streaming pass: per batch, every variant's embedding
is rebuilt from the pieces.

A variant keeps some pieces, replaces others by their mean over a reference set, and (for the reconstructions of
docs/methods/reconstruction.md) sends others through a fixed projection. With δ_i = p_i − μ_i, every variant is

    y_v(I) = Σ_i μ_i + Σ_{kept} δ_i(I) + Σ_{projected} δ_i(I) U_i U_iᵀ,

so all variants of a run share one decomposition per batch, and nothing per image is stored. Only the direct effect
is ablated: later layers still saw the original activations. Zero-shot predictions are scale-invariant, so no
variant needs renormalising.

TextSpan's CLS ablation (ViTs) also replaces, in every kept attention piece, the cell that reads the CLS token's own
value (m = 0) by its mean: y_v += Σ_{kept attention a} (μ^cls_a − c_a(I)). Its means are the token-0 means of
per-token (spatial) statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ..data.analyzed import AnalyzedData
from ..data.loader import LoadReport, as_source, fingerprint, stream
from ..errors import CliplensError
from ..io.compat import fitted_on, require_model
from ..io.tables import write_table
from ..stats.collect import PieceStats
from .groups import attention_pieces, heads_of_layers, layer_count, mlp_set, select
from .stored_scores import stored_task, task_key, variant_key

if TYPE_CHECKING:
    from ..lens import Lens

MEAN_SOURCES = ("reference", "eval")
# A basis whose Gram matrix is farther than this from the identity is not orthonormal: bases built in float64 by
# eigh, QR or SVD are orthonormal to ~1e-14·sqrt(d), so anything near this size is a caller's mistake, not rounding.
ORTHONORMAL_TOLERANCE = 1e-8


@dataclass(frozen=True)
class Variant:
    """One way to rebuild an image's embedding from its pieces.

    `ablated` pieces are replaced by their reference mean; each `projected` piece p becomes μ + (p − μ) U Uᵀ with U
    [d, r] orthonormal columns; every other piece is kept as it is, except that with `cls` the CLS→CLS cell of each
    kept attention piece is replaced by its mean.
    """

    name: str
    ablated: tuple[str, ...] = ()
    projected: Mapping[str, torch.Tensor] = field(default_factory=dict)
    cls: bool = False


class VariantBank:
    """Variants compiled against one label list and one set of reference means, ready to apply to batches."""

    def __init__(self, variants: Sequence[Variant], labels: Sequence[str], means: torch.Tensor,
                 cls_means: torch.Tensor | None = None):
        if not variants:
            raise CliplensError("nothing to evaluate: pass at least one variant")
        names = [variant.name for variant in variants]
        if len(set(names)) != len(names):
            raise CliplensError(f"variant names must be distinct, got {names}")
        self.names, self.labels = names, list(labels)
        self.means = means.to(torch.float64)
        position = {label: i for i, label in enumerate(self.labels)}
        keep = torch.ones(len(variants), len(self.labels), dtype=torch.float64, device=self.means.device)
        self.projections: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for v, variant in enumerate(variants):
            touched = list(variant.ablated) + list(variant.projected)
            unknown = [label for label in touched if label not in position]
            if unknown:
                raise CliplensError(f"variant {variant.name!r} names {unknown[0]!r}, which is not a piece here")
            if len(set(touched)) != len(touched):
                raise CliplensError(f"variant {variant.name!r} names a piece twice (ablated and projected?)")
            for label in touched:
                keep[v, position[label]] = 0.0
            if variant.projected:
                index = torch.tensor([position[label] for label in variant.projected], device=self.means.device)
                self.projections.append((v, index, self._stacked_bases(variant)))
        self.keep = keep
        self.total_mean = self.means.sum(0)
        attention = attention_positions(self.labels)
        wants_cls = torch.tensor([float(variant.cls) for variant in variants], dtype=torch.float64,
                                 device=self.means.device)
        self.cls_keep = keep[:, attention] * wants_cls[:, None]  # [V, A]: whose CLS cell each variant replaces
        self.uses_cls = any(variant.cls for variant in variants)
        self.cls_means = None
        if self.uses_cls:
            if not attention:
                raise CliplensError("the CLS ablation needs transformer attention pieces; these have none (a ResNet?)")
            if cls_means is None or cls_means.shape != (len(attention), self.means.shape[1]):
                raise CliplensError("the CLS ablation needs the mean CLS cell of every attention piece: collect the "
                                    "reference statistics per token (spatial)")
            self.cls_means = cls_means.to(self.means.device, torch.float64)

    def _stacked_bases(self, variant: Variant) -> torch.Tensor:
        """The variant's bases as one [P, d, r] tensor, zero-padded to the widest (zero columns change nothing)."""
        dim = self.means.shape[1]
        bases = [torch.as_tensor(basis).to(self.means.device, torch.float64) for basis in variant.projected.values()]
        for label, basis in zip(variant.projected, bases):
            if basis.ndim != 2 or basis.shape[0] != dim:
                raise CliplensError(f"the basis for {label!r} must be [{dim}, r], got {tuple(basis.shape)}")
            error = basis.T @ basis - torch.eye(basis.shape[1], dtype=basis.dtype, device=basis.device)
            if error.numel() and error.abs().max() > ORTHONORMAL_TOLERANCE:
                raise CliplensError(f"the basis for {label!r} does not have orthonormal columns")
        width = max(basis.shape[1] for basis in bases)
        padded = torch.zeros(len(bases), dim, width, dtype=torch.float64, device=self.means.device)
        for i, basis in enumerate(bases):
            padded[i, :, : basis.shape[1]] = basis
        return padded

    def combine(self, pieces: torch.Tensor, cls_cells: torch.Tensor | None = None) -> torch.Tensor:
        """Every variant's embedding [B, V, d] (float64) from one batch of pieces [B, C, d] and, for CLS variants,
        the batch's CLS cells [B, A, d] of the attention pieces in label order."""
        if pieces.shape[1:] != self.means.shape:
            raise CliplensError(
                f"pieces of shape {tuple(pieces.shape[1:])} do not match the reference means {tuple(self.means.shape)}"
            )
        deviations = pieces.to(self.means.device, torch.float64) - self.means
        out = self.total_mean + torch.einsum("vc,bcd->bvd", self.keep, deviations)
        for v, index, bases in self.projections:
            coordinates = torch.einsum("bpd,pdr->bpr", deviations[:, index], bases)
            out[:, v] += torch.einsum("bpr,pdr->bd", coordinates, bases)
        if self.uses_cls:
            if cls_cells is None:
                raise CliplensError("CLS variants need the batch's CLS cells; pass cls_cells")
            shift = self.cls_means - cls_cells.to(self.means.device, torch.float64)
            out += torch.einsum("va,bad->bvd", self.cls_keep, shift)
        return out


@dataclass
class Scores:
    """Correct predictions per variant over one evaluation pass, with the unablated model's own score."""

    names: list[str]
    correct: list[int]
    full_correct: int
    count: int
    classes: int
    pieces: int = 0  # how many pieces the statistics have
    in_sample: bool | None = None  # whether the means were computed on the evaluation data itself

    def accuracy(self, name: str) -> float:
        return self.correct[self.names.index(name)] / self.count

    @property
    def full_accuracy(self) -> float:
        return self.full_correct / self.count

    @property
    def chance(self) -> float:
        """The expected accuracy of a uniform random guess."""
        return 1 / self.classes


def check_statistics(stats: Any, lens: Lens) -> PieceStats:
    """The statistics, if they are per-piece, non-spatial and made with this lens's model; else a CliplensError."""
    if not isinstance(stats, PieceStats):
        raise CliplensError(
            f"mean-ablation needs per-piece statistics, got {type(stats).__name__}; collect them with "
            "granularity 'head' or 'layer'"
        )
    require_model(stats.metadata, lens.fingerprint, "the statistics")
    return stats


def cls_cell_means(stats: PieceStats) -> torch.Tensor | None:
    """The mean CLS→CLS cell of every attention piece [A, d], from per-token statistics (None without them)."""
    if stats.token_mean is None:
        return None
    return stats.token_mean[attention_positions(stats.labels), 0]


def attention_positions(labels: Sequence[str]) -> list[int]:
    """Where the attention pieces sit in `labels`, in the order of their CLS cells."""
    return [list(labels).index(label) for label in attention_pieces(labels)]


def evaluate_variants(
    lens: Lens,
    data: Any,
    variants: Sequence[Variant],
    weights: torch.Tensor,
    stats: PieceStats,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> Scores:
    """Zero-shot accuracy of every variant over `data` (labelled), in one pass; means come from `stats`.

    The pieces are decomposed with the statistics' own granularity, convention and normalisation, so means and
    pieces always agree. Given an analysis as `data`, the scores its evaluation pass stored for exactly these variants
    are returned (evaluate/stored_scores.py).
    """
    return score_tasks(lens, data, [Task(variants, weights)], stats, batch_size=batch_size, num_workers=num_workers,
                       progress=progress)[0]


class Relabelled:
    """The true classes of the same images under another attribute (a shapes split re-labelled): read once per batch,
    however many tasks and boards of one evaluation pass ask for them."""

    def __init__(self, data: Any):
        self.data, self._last = data, (None, None)

    def of(self, batch: Any) -> torch.Tensor:
        if self._last[0] is not batch:
            self._last = (batch, torch.tensor([self.data[int(i)][1] for i in batch.indices]))
        return self._last[1]


def true_classes(batch: Any, relabelled: Relabelled | None) -> torch.Tensor:
    """The batch's own labels, or those of `relabelled`."""
    return batch.labels if relabelled is None else relabelled.of(batch)


@dataclass(frozen=True)
class Task:
    """Variants scored by one zero-shot classifier's weights [d, classes], against the data's own classes or those of
    `labels`."""

    variants: Sequence[Variant]
    weights: torch.Tensor
    labels: Relabelled | None = None


def score_tasks(lens: Lens, data: Any, tasks: Sequence[Task], stats: PieceStats, *, batch_size: int = 32,
                num_workers: int = 0, progress: bool = False) -> list[Scores]:
    """`evaluate_variants` for several classifiers at once (an analysis's labels): one decomposition per batch."""
    scorer = VariantScorer(lens, tasks, stats)
    source = as_source(data)
    in_sample = fitted_on(scorer.stats.metadata, fingerprint(source))
    if isinstance(source, AnalyzedData):
        return [_stored(source, bank, task.variants, w, scorer.stats, in_sample) for bank, task, w in
                zip(scorer.banks, tasks, scorer.weights)]
    report = LoadReport()
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"ablate {lens.name}", labelled=True, report=report):
            scorer.update(batch)
    return scorer.scores(report.loaded, in_sample)


class VariantScorer:
    """The running correct counts of every task's variants, one batch at a time."""

    def __init__(self, lens: Lens, tasks: Sequence[Task], stats: PieceStats):
        self.lens, self.tasks, self.stats = lens, list(tasks), check_statistics(stats, lens)
        device = lens.device
        self.banks = [VariantBank(task.variants, stats.labels, stats.mean.to(device), cls_cell_means(stats))
                      for task in tasks]
        self.weights = [_checked_weights(task.weights, stats, device) for task in tasks]
        self.correct = [torch.zeros(len(bank.names), dtype=torch.long, device=device) for bank in self.banks]
        self.full_correct = [0] * len(tasks)
        self.settings = replace(stats.settings, spatial=False)  # the CLS cells' means come from spatial statistics
        self.tokens = any(bank.uses_cls for bank in self.banks)

    def update(self, batch: Any) -> None:
        decomposer, cells = self.lens.decomposer, None
        if self.tokens:
            factors = decomposer.factorise(batch.images, self.settings, tokens=True)
            result, cells = decomposer.group(factors), decomposer.cls_cells(factors)
        else:
            result = decomposer.decompose(batch.images, self.settings)
        if result.labels != self.stats.labels:
            raise CliplensError("the statistics' pieces do not match this model's decomposition; recollect them")
        for t, (task, bank, w) in enumerate(zip(self.tasks, self.banks, self.weights)):
            labels = true_classes(batch, task.labels).to(self.lens.device)
            predicted = (bank.combine(result.components, cells) @ w).argmax(-1)  # [B, V]
            self.correct[t] += (predicted == labels[:, None]).sum(0)
            self.full_correct[t] += int(((result.embedding.to(torch.float64) @ w).argmax(-1) == labels).sum())

    def state(self) -> dict[str, torch.Tensor]:
        """The counts so far (a checkpoint of the pass)."""
        return {**{f"correct.{t}": correct.cpu() for t, correct in enumerate(self.correct)},
                "full_correct": torch.tensor(self.full_correct, dtype=torch.long)}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.correct = [tensors[f"correct.{t}"].to(self.lens.device) for t in range(len(self.tasks))]
        self.full_correct = tensors["full_correct"].tolist()

    def scores(self, count: int, in_sample: bool | None) -> list[Scores]:
        return [Scores(bank.names, c.tolist(), full, count, w.shape[1], len(self.stats.labels), in_sample)
                for bank, c, full, w in zip(self.banks, self.correct, self.full_correct, self.weights)]


def scored_tasks(tasks: Sequence[Task], scores: Sequence[Scores], stats: PieceStats) -> dict[str, dict[str, Any]]:
    """What an analysis stores of `score_tasks`'s results, keyed by content (evaluate/stored_scores.py)."""
    stored: dict[str, dict[str, Any]] = {}
    for task, score in zip(tasks, scores):
        entry = stored.setdefault(_task_key(task.weights, stats), {
            "count": score.count, "full_correct": score.full_correct, "classes": score.classes, "variants": {}})
        entry["variants"].update({_variant_key(v): n for v, n in zip(task.variants, score.correct)})
    return stored


def _stored(source: AnalyzedData, bank: VariantBank, variants: Sequence[Variant], weights: torch.Tensor,
            stats: PieceStats, in_sample: bool | None) -> Scores:
    task = stored_task(source.path, _task_key(weights, stats), [_variant_key(v) for v in variants])
    return Scores(bank.names, task["correct"], task["full_correct"], task["count"], task["classes"],
                  len(stats.labels), in_sample)


def _task_key(weights: torch.Tensor, stats: PieceStats) -> str:
    """The one key a task is stored and looked up under: its classifier, the pieces and their means."""
    return task_key(weights, stats.labels, stats.mean, cls_cell_means(stats))


def _variant_key(variant: Variant) -> str:
    return variant_key(variant.ablated, variant.projected, variant.cls)


def _checked_weights(weights: torch.Tensor, stats: PieceStats, device: Any) -> torch.Tensor:
    weights = torch.as_tensor(weights).to(device, torch.float64)
    if weights.ndim != 2 or weights.shape[0] != stats.mean.shape[1]:
        raise CliplensError(f"zero-shot weights must be [{stats.mean.shape[1]}, classes], got {tuple(weights.shape)}")
    return weights


def mean_ablation(
    lens: Lens,
    data: Any,
    variants: Sequence[Variant],
    weights: torch.Tensor,
    *,
    stats: PieceStats | None = None,
    mean_source: str = "reference",
    granularity: str = "head",
    convention: str = "separate",
    normalize: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[Scores, PieceStats]:
    """Accuracy of each variant with means from `stats` (a separate reference set), or from `data` itself.

    `mean_source="eval"` reproduces the references' in-sample protocol: a first pass collects the means on the
    evaluation data (with `granularity`, `convention`, `normalize`), a second evaluates. Returns the scores and the
    statistics whose means were used.
    """
    if mean_source not in MEAN_SOURCES:
        raise CliplensError(f"mean_source must be one of {', '.join(MEAN_SOURCES)}, got {mean_source!r}")
    if mean_source == "eval":
        if stats is not None:
            raise CliplensError("mean_source='eval' computes the means on the evaluation data; do not pass stats too")
        spatial = any(variant.cls for variant in variants)  # CLS cells' means are token-0 means
        stats = lens.collect(data, granularity=granularity, spatial=spatial, convention=convention,
                             normalize=normalize, batch_size=batch_size, num_workers=num_workers, progress=progress)
    elif stats is None:
        raise CliplensError("pass statistics of a reference set (from `cliplens collect`) or use mean_source='eval'")
    scores = evaluate_variants(lens, data, variants, weights, stats, batch_size=batch_size, num_workers=num_workers,
                               progress=progress)
    return scores, stats


# Ready-made variant lists ------------------------------------------------------------------------------------------
def pattern_variants(labels: Sequence[str], groups: Sequence[Sequence[str]]) -> list[Variant]:
    """One variant per group of patterns (named by the patterns), each ablating the union of what they name."""
    return [Variant(",".join(patterns), tuple(select(labels, patterns))) for patterns in groups]


def nothing_ablated() -> Variant:
    return Variant("none")


def mlp_variants(labels: Sequence[str]) -> list[Variant]:
    """Nothing ablated, and every MLP plus `embed` mean-ablated (docs/methods/mean-ablation.md#definition "MLPs")."""
    return [nothing_ablated(), Variant("mlps", tuple(mlp_set(labels)))]


def cls_variants(labels: Sequence[str]) -> list[Variant]:
    """TextSpan's table (docs/methods/mean-ablation.md#definition): nothing, the CLS cells, the MLPs (with embed), and
    both, ablated."""
    mlps = tuple(mlp_set(labels))
    return [nothing_ablated(), Variant("cls", cls=True), Variant("mlps", mlps), Variant("mlps+cls", mlps, cls=True)]


def layer_curve(labels: Sequence[str]) -> list[Variant]:
    """L + 1 variants: entry 0 ablates nothing, entry k + 1 the attention of layers 0..k (MLPs always kept)."""
    count = layer_count(labels)
    if count == 0:
        raise CliplensError("the layer curve needs transformer layers; these pieces have none (a ResNet?)")
    return [nothing_ablated()] + [
        Variant(f"attn[:{k + 1}]", tuple(heads_of_layers(labels, range(k + 1)))) for k in range(count)
    ]


# The zero-shot task of a dataset -----------------------------------------------------------------------------------
def write_scores(path: str | os.PathLike, scores: Scores, variants: Sequence[Variant]) -> Path:
    """An ablation table (docs/outputs.md#ablation): the unablated model first, then each variant in order. `ablated`
    and `kept` count pieces (a variant's CLS cells are not pieces: its level `piece+cls` says they are ablated too)."""
    shared = {"images": scores.count, "in_sample": scores.in_sample}
    rows = [{"variant": "full model", "level": "model", "ablated": 0, "accuracy": scores.full_accuracy,
             "correct": scores.full_correct, **shared}]
    rows += [{"variant": variant.name, "level": "piece+cls" if variant.cls else "piece",
              "ablated": len(variant.ablated), "kept": scores.pieces - len(variant.ablated) - len(variant.projected),
              "total": scores.pieces, "accuracy": correct / scores.count, "correct": correct, **shared}
             for variant, correct in zip(variants, scores.correct)]
    return write_table(path, "ablation", rows)

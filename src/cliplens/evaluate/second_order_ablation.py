"""Mean-ablation of second-order neuron effects, read out as zero-shot accuracy
(docs/methods/second-order.md#statistics).

An ablation replaces chosen neurons' effects by their fit-set means inside the representation rep = scale·z/ν, i.e.
subtracts Σ_{chosen n} Δ_n with Δ_n = φ_n − φ̄_n. In coordinates Σ_n m_n Δ_n = Σ_j (Σ_n m_n δ_{n,j} u_{j,n}) + (Σ_n m_n)
δ_g·V, one [J, F] × [J, F, d] contraction per image, and a neuron's significance ‖Δ_n‖ > thr_n is a Gram quadratic
form: no effect is materialised. The evaluation set is a second stream and may differ from the fit set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..data.analyzed import AnalyzedData
from ..data.loader import LoadReport, as_source, fingerprint, stream
from ..decompose.second_order import FLOAT, SecondOrderEffects, SecondOrderLens
from ..io.compat import fitted_on, require_model
from ..labels import mlp_label
from ..stats.second_order import SecondOrderStats
from .stored_scores import second_order_key, stored_second_order
from .zeroshot import predict

if TYPE_CHECKING:
    from ..lens import Lens

VARIANTS = ("baseline", "without_all", "without_significant", "without_insignificant", "pc_reconstruction")


def remove_deviations(effects: SecondOrderEffects, stats: SecondOrderStats, mask: torch.Tensor) -> torch.Tensor:
    """rep − Σ_{n: mask[b, n]} Δ_n(b) [B, d]: mean-ablate the neurons selected per image by `mask` [B, F]."""
    deviations = stats.deviations(effects)  # [F, B, J + K]
    return _without(effects, deviations, stats, mask.to(device=deviations.device, dtype=FLOAT))


def ablation_variants(effects: SecondOrderEffects, stats: SecondOrderStats) -> dict[str, torch.Tensor]:
    """The five representations of docs/methods/second-order.md#statistics for a batch, keyed by VARIANTS, each [B, d]
    float64."""
    return _variants(effects, stats)[0]


def _variants(effects: SecondOrderEffects, stats: SecondOrderStats) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(the five representations, the significance mask ‖Δ_n‖ > thr_n [B, F])."""
    deviations = stats.deviations(effects)
    significant = stats.norms_of(deviations).T > stats.thresholds  # [B, F]
    without_all = _without(effects, deviations, stats, torch.ones_like(significant, dtype=FLOAT))
    without_significant = _without(effects, deviations, stats, significant.to(FLOAT))
    representation = effects.representation.to(device=deviations.device, dtype=FLOAT)
    along = stats.projections(deviations).T  # ⟨Δ_n, pc_n⟩ [B, F]
    variants = {
        "baseline": representation,
        "without_all": without_all,
        "without_significant": without_significant,
        "without_insignificant": without_all - without_significant + representation,
        "pc_reconstruction": without_all + along @ stats.principal_directions,
    }
    return variants, significant


def _without(effects: SecondOrderEffects, deviations: torch.Tensor, stats: SecondOrderStats,
             mask: torch.Tensor) -> torch.Tensor:
    heads = stats.basis.num_heads
    weighted = deviations * mask.T[..., None]  # [F, B, J + K]
    removed = torch.einsum("fbj,jfd->bd", weighted[..., :heads], stats.basis.neurons)
    removed = removed + weighted[..., heads:].sum(0) @ stats.basis.offsets
    return effects.representation.to(device=removed.device, dtype=FLOAT) - removed


@dataclass
class SecondOrderAblation:
    """Zero-shot accuracy of each variant on an evaluation set, and how often neurons were significant there."""

    layer: int
    accuracies: dict[str, float]
    count: int
    significant_fraction: float  # mean over images and neurons of [‖Δ_n‖ > thr_n]
    metadata: dict[str, Any] = field(default_factory=dict)
    neurons: int = 0  # the layer's neuron count

    def rows(self) -> list[dict[str, Any]]:
        """One ablation-table row per variant (docs/outputs.md#ablation). Which neurons `without_significant` and
        `without_insignificant` ablate varies per image, and `pc_reconstruction` rebuilds every neuron from its
        principal direction, so those rows count no ablated or kept neurons."""
        levels = {"baseline": "model", "pc_reconstruction": "pc"}
        counts = {"baseline": {"ablated": 0}, "without_all": {"ablated": self.neurons, "kept": 0}}
        return [{"variant": name, "level": levels.get(name, "neuron"), **counts.get(name, {}),
                 "total": None if name == "baseline" else self.neurons, "accuracy": self.accuracies[name],
                 "correct": round(self.accuracies[name] * self.count), "images": self.count,
                 "in_sample": self.metadata.get("in_sample")}
                for name in VARIANTS]


class SecondOrderBoard:
    """The running counts of `second_order_ablation`, one batch at a time (an analysis's evaluation pass feeds several
    boards from one forward)."""

    def __init__(self, lens: Lens, stats: SecondOrderStats, weights: torch.Tensor):
        require_model(stats.metadata, lens.fingerprint, "the second-order statistics")
        self.stats = stats
        self.lens = SecondOrderLens(lens.decomposer, stats.layer, stats.convention, basis=stats.basis)
        self.weights = weights.to(device=stats.basis.neurons.device, dtype=FLOAT)
        self.correct, self.significant, self.count = dict.fromkeys(VARIANTS, 0), 0.0, 0

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        effects = self.lens(images, scale=self.stats.scale, normalize=self.stats.normalize)
        labels = labels.to(self.weights.device)
        variants, mask = _variants(effects, self.stats)
        for name, representation in variants.items():
            self.correct[name] += int((predict(representation, self.weights) == labels).sum())
        self.significant += float(mask.double().sum())
        self.count += len(labels)

    def state(self) -> dict[str, torch.Tensor]:
        """The counts so far (a checkpoint of the pass); the significant count is a float64 sum of 0/1."""
        return {"correct": torch.tensor([self.correct[name] for name in VARIANTS]), "count": torch.tensor([self.count]),
                "significant": torch.tensor([self.significant], dtype=torch.float64)}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.correct = dict(zip(VARIANTS, tensors["correct"].tolist()))
        self.count, self.significant = int(tensors["count"][0]), float(tensors["significant"][0])

    def key(self) -> str:
        """What an analysis stores this board's counts under (evaluate/stored_scores.py)."""
        stats = self.stats
        settings = {"layer": stats.layer, "scale": stats.scale, "normalize": stats.normalize,
                    "convention": stats.convention}
        return second_order_key(self.weights, settings, stats.centre, stats.thresholds, stats.principal_directions)

    def stored(self) -> dict[str, Any]:
        return {"count": self.count, "correct": dict(self.correct), "significant": self.significant}

    def result(self, source: Any, skipped: int) -> SecondOrderAblation:
        stats = self.stats
        metadata = {"eval_fingerprint": fingerprint(source), "fit_fingerprint": stats.metadata.get("data_fingerprint"),
                    "in_sample": fitted_on(stats.metadata, fingerprint(source)), "skipped": skipped}
        return SecondOrderAblation(stats.layer, {name: hits / self.count for name, hits in self.correct.items()},
                                   self.count, self.significant / (self.count * stats.basis.num_neurons), metadata,
                                   stats.basis.num_neurons)


def second_order_ablation(
    lens: Lens, stats: SecondOrderStats, data: Any, weights: torch.Tensor, *, batch_size: int = 32,
    num_workers: int = 0, progress: bool = False,
) -> SecondOrderAblation:
    """Stream the labelled evaluation `data` once; zero-shot accuracy of every variant with classifier `weights`.
    Given an analysis as `data`, what its evaluation pass stored for these statistics and weights."""
    board = SecondOrderBoard(lens, stats, weights)
    source = as_source(data)
    if isinstance(source, AnalyzedData):
        entry = stored_second_order(source.path, board.key(), stats.layer)
        board.correct, board.count, board.significant = entry["correct"], entry["count"], entry["significant"]
        return board.result(source, entry.get("skipped", 0))
    report = LoadReport()
    for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                        description=f"neuron ablation {mlp_label(stats.layer)}", labelled=True, report=report):
        board.update(batch.images, batch.labels)
    return board.result(source, len(report.skipped))

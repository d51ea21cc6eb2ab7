"""Per-neuron statistics of second-order effects over a dataset (docs/methods/second-order.md#statistics), streamed in
two passes.

A neuron's effect is φ_n = x_n·B_n: per-image coordinates x_n [J + K] times fixed directions B_n [J + K, d]. So its
mean, its covariance and every centred norm live in the coordinate space: ‖Δ_n‖² = δᵀG_nδ with δ = x_n − x̄_n and
G_n = B_nB_nᵀ. Pass 1 accumulates the moments of x. Ranking images by ‖Δ_n‖ needs the final mean x̄, so pass 2
measures every image from it and keeps, per neuron, the k largest norms with their deviations δ: O(k·F·(J + K))
numbers, and nothing per image beyond that. Principal directions then come from those k×(J + K) blocks (the
reference's top-k SVD) or from the coordinate covariance (all images), without a [k, d] or [d, d] matrix per neuron.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.loader import LoadReport, as_source, fingerprint
from ..data.shards import Shard, shard_of
from ..decompose.finite import require_finite
from ..decompose.second_order import FLOAT, SecondOrderBasis, SecondOrderEffects, SecondOrderLens
from ..errors import CliplensError, require_positive_int
from ..io.artifacts import ANALYSIS, check_shapes, load_artifact, part_metadata, read_metadata, save_artifact
from ..io.compat import MODEL_KEY
from ..labels import mlp_label
from ..settings import Settings
from .checkpoint import EVERY, Checkpoints, Resumed
from .distributed import Ranks, data_part, joined, part_name, together
from .identity import check_compatible, data_record, merged_metadata
from .moments import Moments
from .top_rows import TopRows

if TYPE_CHECKING:
    from ..lens import Lens

KIND = "second-order-stats"
SIGN_RULE = "majority of the top-k rows project positively; a k/2 tie takes the sign of their summed projection"
DERIVED = {  # results saved beside the accumulators, with their shapes (d: the embedding width)
    "mean_effects": ("F", "d"), "principal_directions": ("F", "d"), "principal_coordinates": ("F", "J+K"),
    "topk_variance_explained": ("F",), "principal_directions_all": ("F", "d"),
    "principal_coordinates_all": ("F", "J+K"), "variance_explained": ("F",),
}
STATE_SHAPES = {"count": (1,), "ranked": (1,), "mean": ("F", "J+K"), "scatter": ("F", "J+K", "J+K")}
RANKED_SHAPES = {"centre": ("F", "J+K"), "top_norms": ("F", "k"), "top_index": ("F", "k"),
                 "top_deviations": ("F", "k", "J+K"), **DERIVED}  # once pass 2 ran (k: images ranked, ≤ top_k)


class SecondOrderStats:
    """Moments of every neuron's coordinates (pass 1) and its top-k images by centred norm (pass 2)."""

    def __init__(self, basis: SecondOrderBasis, *, scale: float, normalize: bool, top_k: int = 100,
                 metadata: dict[str, Any] | None = None):
        require_positive_int("top_k", top_k)
        self.basis, self.scale, self.normalize, self.top_k = basis, float(scale), bool(normalize), top_k
        self.metadata = dict(metadata or {})
        self.report: LoadReport | None = None
        neurons, dim, device = basis.num_neurons, basis.dim, basis.neurons.device
        self.moments = Moments(neurons, dim, device=device)
        self.centre: torch.Tensor | None = None  # x̄ [F, J + K] that pass 2 measured norms from
        self.ranked = 0
        self.top = TopRows.empty(neurons, dim, top_k, dtype=FLOAT, device=device)  # norms, positions, δ per neuron
        self._derived: dict[str, torch.Tensor] = {}

    @property
    def layer(self) -> int:
        return self.basis.layer

    @property
    def convention(self) -> str:
        return self.basis.convention

    @property
    def settings(self) -> Settings:
        """The pieces are the layer's MLP neurons, never split over tokens; scale is not a setting of the pieces."""
        return Settings(granularity="neuron", convention=self.convention, normalize=self.normalize)

    @property
    def count(self) -> int:
        return self.moments.count

    # pass 1 ----------------------------------------------------------------------------------------------------------
    def update(self, effects: SecondOrderEffects) -> None:
        """Add a batch to the moments."""
        self._check(effects)
        self.moments.update(effects.coordinates())
        self._derived.clear()

    # pass 2 ----------------------------------------------------------------------------------------------------------
    def start_ranking(self, centre: torch.Tensor | None = None) -> None:
        """Fix the centre norms are measured from: the moments' mean, or a given one (shards of one dataset)."""
        if centre is None:
            if self.count == 0:
                raise CliplensError("no images in the moments yet: run the first pass (update) before ranking")
            centre = self.moments.mean
        self.centre = centre.to(self.moments.mean).clone()
        self.ranked = 0
        self.top = TopRows.empty(*self.moments.mean.shape, self.top_k, dtype=FLOAT, device=self.moments.mean.device)
        self._derived.clear()

    def rank(self, effects: SecondOrderEffects, indices: torch.Tensor) -> None:
        """Measure a batch from the centre and keep each neuron's k largest norms; `indices` are image positions."""
        self._check(effects)
        deviations = self.deviations(effects)  # [F, B, J + K]
        index = indices.to(self.top.index).view(1, -1).expand(len(deviations), -1)
        self.top.push(self.norms_of(deviations), index, deviations)
        self.ranked += len(indices)
        self._derived.clear()

    def deviations(self, effects: SecondOrderEffects) -> torch.Tensor:
        """δ = x_n − x̄_n [F, B, J + K] for a batch, from the ranking centre."""
        if self.centre is None:
            raise CliplensError("the ranking centre is not set: call start_ranking() after the first pass")
        return (effects.coordinates().to(self.centre.device) - self.centre).transpose(0, 1)

    def deviation_norms(self, effects: SecondOrderEffects) -> torch.Tensor:
        """‖Δ_n(I)‖ [B, F] for a batch: exact, through the Gram quadratic form."""
        return self.norms_of(self.deviations(effects)).T

    def norms_of(self, deviations: torch.Tensor) -> torch.Tensor:
        """‖δ·B_n‖ [F, B] for deviations [F, B, J + K]."""
        return ((deviations @ self.basis.gram) * deviations).sum(-1).clamp_min(0).sqrt()

    def projections(self, deviations: torch.Tensor, coordinates: torch.Tensor | None = None) -> torch.Tensor:
        """⟨δ·B_n, w_n·B_n⟩ = δ G_n w_n [F, B] for deviations [F, B, J + K]: their coordinates along each neuron's
        direction w_n·B_n (default: its principal direction), with no d-dimensional work."""
        coordinates = self.principal_coordinates if coordinates is None else coordinates
        return ((deviations @ self.basis.gram) @ coordinates[..., None])[..., 0]

    @property
    def top_norms(self) -> torch.Tensor:
        """Each neuron's k largest centred norms [F, k], largest first."""
        return self._sorted_top()[0]

    @property
    def top_index(self) -> torch.Tensor:
        """The images' positions [F, k], in `top_norms` order."""
        return self._sorted_top()[1]

    @property
    def top_deviations(self) -> torch.Tensor:
        """Their deviations δ [F, k, J + K], in `top_norms` order."""
        return self._sorted_top()[2]

    def _sorted_top(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._cached("top", self.top.sorted)

    def _check(self, effects: SecondOrderEffects) -> None:
        basis = effects.basis
        if (basis.layer, basis.convention, basis.neurons.shape) != (self.layer, self.convention,
                                                                     self.basis.neurons.shape):
            raise CliplensError(f"these effects are for layer {basis.layer} ({basis.convention}) but the statistics "
                                f"are for layer {self.layer} ({self.convention}); use one SecondOrderLens for both")
        if (effects.scale, effects.normalize) != (self.scale, self.normalize):
            raise CliplensError(f"effects computed with scale={effects.scale}, normalize={effects.normalize} cannot "
                                f"join statistics with scale={self.scale}, normalize={self.normalize}")

    # merging ---------------------------------------------------------------------------------------------------------
    def merge(self, other: "SecondOrderStats") -> "SecondOrderStats":
        """Both shards' statistics; shards ranked from one shared centre merge their top-k exactly as well.

        `other`'s image positions follow all of `self`'s, so they shift by self's data size.
        """
        check_compatible(self.metadata, other.metadata)
        mine = (self.layer, self.convention, self.scale, self.normalize, self.top_k)
        theirs = (other.layer, other.convention, other.scale, other.normalize, other.top_k)
        if mine != theirs:
            raise CliplensError(f"cannot merge second-order statistics with different (--mlp-layer, --convention, "
                                f"--scale, --normalize, --top-k): {mine} vs {theirs}")
        merged = SecondOrderStats(self.basis, scale=self.scale, normalize=self.normalize, top_k=self.top_k)
        merged.moments = self.moments.merge(other.moments)
        if self.centre is not None or other.centre is not None:
            if self.centre is None or other.centre is None or not torch.equal(self.centre, other.centre):
                raise CliplensError("shards ranked from different centres cannot be merged: merge their first-pass "
                                    "moments, then rank every shard from the merged mean (start_ranking(centre))")
            merged.centre = self.centre.clone()
            shift = int(self.metadata.get("data_size", self.ranked))
            for source, offset in ((self, 0), (other, shift)):
                merged.top.push(source.top_norms, source.top_index + offset, source.top_deviations)
            merged.ranked = self.ranked + other.ranked
        merged.metadata = merged_metadata(self.metadata, other.metadata, merged.count)
        merged.metadata["ranked"] = merged.ranked
        return merged

    # results ---------------------------------------------------------------------------------------------------------
    @property
    def mean_coordinates(self) -> torch.Tensor:
        return self.moments.mean

    @property
    def coordinate_covariance(self) -> torch.Tensor:
        """Population covariance of x_n [F, J + K, J + K]; J×J head block first, offsets after."""
        return self.moments.covariance

    @property
    def mean_effects(self) -> torch.Tensor:
        """φ̄_n [F, d]: the dataset mean of every neuron's effect, Σ_j E[κ s_j] u_j + E[c]."""
        return self._cached("mean_effects", lambda: self.basis.combine(self.moments.mean))

    @property
    def mean_square_deviation(self) -> torch.Tensor:
        """E‖Δ_n‖² [F] = tr(Σ_n G_n): each neuron's total variance over the images."""
        return torch.einsum("fij,fji->f", self.coordinate_covariance, self.basis.gram)

    def norms(self) -> torch.Tensor:
        """The reference's `norms` [F, k]: each neuron's k largest centred norms, ascending."""
        self._require_ranking()
        return self.top_norms.flip(1)

    @property
    def thresholds(self) -> torch.Tensor:
        """thr_n [F] = norms[n, 0], the k-th largest centred norm: an image is significant for n above it."""
        return self.norms()[:, 0]

    @property
    def top_images(self) -> torch.Tensor:
        """Image positions [F, k], largest centred norm first."""
        self._require_ranking()
        return self.top_index

    @property
    def principal_directions(self) -> torch.Tensor:
        """pc_n [F, d], unit: first right singular vector of the neuron's top-k centred block (the reference's)."""
        self._principal_topk()
        return self._derived["principal_directions"]

    @property
    def principal_coordinates(self) -> torch.Tensor:
        """w_n [F, J + K] with pc_n = w_n·B_n, so ⟨Δ_n, pc_n⟩ = δᵀG_n w_n costs no d-dimensional work."""
        self._principal_topk()
        return self._derived["principal_coordinates"]

    @property
    def top_projections(self) -> torch.Tensor:
        """⟨Δ_n(I), pc_n⟩ [F, k] for the top images, in `top_images` order: the images at the direction's pole (the
        ones its words should describe) are those with positive values."""
        return self.projections(self.top_deviations)

    @property
    def topk_variance_explained(self) -> torch.Tensor:
        """σ₁² / Σσ² [F] of each neuron's top-k block."""
        self._principal_topk()
        return self._derived["topk_variance_explained"]

    @property
    def principal_directions_all(self) -> torch.Tensor:
        """First principal direction [F, d] of each neuron's effect over all images, oriented by the sign rule."""
        self._principal_all()
        return self._derived["principal_directions_all"]

    @property
    def principal_coordinates_all(self) -> torch.Tensor:
        self._principal_all()
        return self._derived["principal_coordinates_all"]

    @property
    def variance_explained(self) -> torch.Tensor:
        """λ₁ / tr [F]: the share of a neuron's variance over all images along its first principal direction."""
        self._principal_all()
        return self._derived["variance_explained"]

    def _principal_topk(self) -> None:
        """SVD of Δ = δB_n through its k×k Gram δG_nδᵀ: top eigenvector e, σ₁ = √λ₁, pc = eᵀδB_n / σ₁."""
        if "principal_directions" in self._derived:
            return
        self._require_ranking()
        deviations = self.top_deviations
        rows = (deviations @ self.basis.gram) @ deviations.transpose(1, 2)  # [F, k, k]
        values, vectors = _eigh(rows)
        top = values[:, -1].clamp_min(0)
        coordinates = (vectors[:, :, -1:].transpose(1, 2) @ deviations)[:, 0] / _safe(top.sqrt())[:, None]
        total = torch.einsum("fkk->f", rows)
        self._store_principal("", coordinates, top / _safe(total), "topk_variance_explained")

    def _principal_all(self) -> None:
        """Top eigenvector of B_nᵀΣ_nB_n via Σ_n = SSᵀ: eigen-solve SᵀG_nS [J + K]², pc = B_nᵀSe / √λ₁."""
        if "principal_directions_all" in self._derived:
            return
        self._require_ranking()
        values, vectors = _eigh(self.coordinate_covariance)
        root = vectors * values.clamp_min(0).sqrt()[:, None, :]  # S [F, J + K, J + K]
        inner = root.transpose(1, 2) @ self.basis.gram @ root
        values, vectors = _eigh(inner)
        top = values[:, -1].clamp_min(0)
        coordinates = (root @ vectors[:, :, -1:])[..., 0] / _safe(top.sqrt())[:, None]
        total = torch.einsum("fkk->f", inner)
        self._store_principal("_all", coordinates, top / _safe(total), "variance_explained")

    def _store_principal(self, suffix: str, coordinates: torch.Tensor, explained: torch.Tensor, name: str) -> None:
        """Orient by SIGN_RULE (projections of the top-k rows: δ_i G_n w_n), then materialise pc = w·B_n."""
        projections = self.projections(self.top_deviations, coordinates)
        positive = 2 * (projections > 0).sum(1)
        rows = projections.shape[1]
        tie = torch.where(projections.sum(1) < 0, -1.0, 1.0).to(FLOAT)
        sign = torch.where(positive > rows, 1.0, torch.where(positive < rows, -1.0, tie)).to(coordinates)
        coordinates = coordinates * sign[:, None]
        self._derived[f"principal_coordinates{suffix}"] = coordinates
        self._derived[f"principal_directions{suffix}"] = self.basis.combine(coordinates)
        self._derived[name] = explained


    def _require_ranking(self) -> None:
        if self.centre is None or self.top.filled == 0:
            raise CliplensError("top-k results need the second pass: call start_ranking() and rank() (or use "
                                "collect_second_order, which runs both passes)")

    def _cached(self, name: str, compute: Any) -> torch.Tensor:
        if name not in self._derived:
            self._derived[name] = compute()
        return self._derived[name]

    # persistence -----------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Accumulators (enough to merge or recompute) plus the derived per-neuron results, for readers elsewhere."""
        return save_artifact(path, *self.artifact())

    def artifact(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) as saved, alone or as a part of an analysis."""
        tensors = self.state()
        if self.centre is not None:
            tensors["thresholds"] = self.thresholds
            tensors.update({name: getattr(self, name) for name in DERIVED})
        else:
            tensors["mean_effects"] = self.mean_effects
        metadata = {**self.metadata, **self.settings.metadata(), "kind": KIND, "layer": self.layer,
                    "scale": self.scale, "top_k": self.top_k, "count": self.count,
                    "ranked": self.ranked, "heads": self.basis.heads, "sign_rule": SIGN_RULE,
                    "coordinates": f"{self.basis.num_heads} head coefficients (κ·s) then "
                                   f"{self.basis.offsets.shape[0]} shared offset coefficients"}
        return tensors, metadata

    def state(self) -> dict[str, torch.Tensor]:
        """The exact accumulators: pass-1 moments and, once ranking started, the centre and the top-k lists."""
        tensors = {**self.moments.state(), "ranked": torch.tensor([self.ranked])}
        if self.centre is not None:
            tensors.update(centre=self.centre, top_norms=self.top_norms, top_index=self.top_index,
                           top_deviations=self.top_deviations)
        return tensors

    @classmethod
    def from_state(cls, basis: SecondOrderBasis, tensors: dict[str, torch.Tensor], *, scale: float, normalize: bool,
                   top_k: int, metadata: dict[str, Any] | None = None) -> "SecondOrderStats":
        """The inverse of `state` (any derived results among `tensors` are kept as well, on the basis's device)."""
        stats = cls(basis, scale=scale, normalize=normalize, top_k=top_k, metadata=metadata)
        stats.load_state(tensors)
        return stats

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`: the moments, and the ranking once it started."""
        device = self.basis.neurons.device
        tensors = {name: tensor.to(device) for name, tensor in tensors.items()}
        self.moments, self.ranked = Moments.from_tensors(tensors), int(tensors["ranked"][0])
        self._derived.clear()
        if "centre" in tensors:
            self.centre = tensors["centre"]
            self.top = TopRows(tensors["top_norms"], tensors["top_index"], tensors["top_deviations"], self.top_k)
            self._derived.update({name: tensors[name] for name in DERIVED if name in tensors})


def _eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched eigh of thousands of small matrices, on one CPU thread.

    MKL threads each tiny problem; on a shared 2-core machine that was 7-26× slower than one thread (measured:
    1,024 matrices of 75×75 took 0.96 s on 1 thread and 6.8-9.8 s on 2), so the thread count is lowered for the call
    and restored.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrices)
    finally:
        torch.set_num_threads(threads)


def _safe(values: torch.Tensor) -> torch.Tensor:
    """Divisor that leaves a zero numerator at zero (a neuron with no variation gets a zero direction)."""
    return torch.where(values > 0, values, torch.ones_like(values))


def analysis_part(layer: int) -> str:
    """The part of an analysis that holds MLP layer `layer`'s statistics."""
    return f"second-order-L{layer}"


def load_second_order(path: str | Path, lens: Lens, layer: int | None = None, **expect: Any) -> SecondOrderStats:
    """Read statistics written by `SecondOrderStats.save`, or layer `layer`'s from an analysis; refuses another
    model's, and any whose settings differ from those `expect` pins; rebuilds the directions."""
    metadata, part = read_metadata(path), None
    if metadata.get("kind") == ANALYSIS:
        layers = [name for name in metadata.get("parts", {}) if name.startswith("second-order-L")]
        part = analysis_part(layer) if layer is not None or len(layers) != 1 else layers[0]
        metadata = part_metadata(path, part, f"run `cliplens analyze` again with --mlp-layer {layer}")
    if metadata.get("kind") != KIND:
        raise CliplensError(f"{path} holds {metadata.get('kind')!r}, not second-order statistics; pass the folder "
                            "`cliplens second-order` wrote")
    fields = {"layer": int, "scale": (int, float), "top_k": int}
    tensors, metadata = load_artifact(path, {MODEL_KEY: lens.fingerprint, **expect}, fields, part=part)
    settings = Settings.from_metadata(metadata)
    basis = SecondOrderLens(lens.decomposer, int(metadata["layer"]), settings.convention).basis
    shapes = {**STATE_SHAPES, **(RANKED_SHAPES if "centre" in tensors else {})}
    check_shapes(path, tensors, shapes, F=basis.num_neurons, **{"J+K": basis.dim})
    return SecondOrderStats.from_state(basis, tensors, scale=metadata["scale"], normalize=settings.normalize,
                                       top_k=int(metadata["top_k"]), metadata=metadata)


def collect_second_order(
    lens: Lens,
    data: Any,
    *,
    layer: int,
    convention: str = "separate",
    scale: float = 1.0,
    normalize: bool = False,
    top_k: int = 100,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    shard: str | Shard | None = None,
    ranking: bool = True,
    centre: torch.Tensor | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = EVERY,
    resume: bool = False,
    distributed: bool | None = False,
) -> SecondOrderStats | None:
    """Second-order statistics of MLP layer `layer` over `data`, in two streaming passes.

    Pass 1 gives the moments (mean effects and coordinate covariances need only these); pass 2, from the pass-1 mean,
    gives exact centred norms, top-k images and thresholds, and with them both principal directions (the all-image
    one is oriented by the same top-k sign rule). `ranking=False` stops after pass 1; `centre` ranks from a given
    centre instead of this pass's own mean.

    Split data. Pass 2 needs the mean of all the data, which no part has on its own, so a split collection shares it:

    - torchrun (`distributed`, as in `collect`): after pass 1, rank 0 merges the ranks' moments in rank order and
      sends the merged moments to every rank; each rank ranks its slice from that mean, and rank 0 merges the ranks'
      statistics in rank order. Equal to one process to round-off; rank 0 returns it, the others None.
    - shards (`shard="i/n"`, for job arrays): collect every shard with `ranking=False`, merge them (`cliplens merge`),
      then collect every shard again with `centre=merged.mean_coordinates` and merge those. Rankings measured from
      one shared centre merge exactly; statistics ranked from different centres refuse to merge.

    Checkpoints (`checkpoint_dir`, `checkpoint_every`, `resume`) cover both passes, as in `collect`.
    """
    second_order = SecondOrderLens(lens.decomposer, layer, convention)
    source = as_source(data)
    given = None if centre is None else hashlib.sha256(centre.double().cpu().numpy().tobytes()).hexdigest()[:16]

    def start(ranks: Ranks | None) -> tuple[Any, Checkpoints, SecondOrderStats, Resumed | None]:
        part = data_part(source, shard, ranks)
        identity = {"pass": "second-order", MODEL_KEY: lens.fingerprint, "model": lens.name,
                    "precision": lens.precision, "layer": layer, "convention": convention, "scale": float(scale),
                    "normalize": normalize, "top_k": top_k, "ranking": ranking, "centre": given,
                    "data_fingerprint": fingerprint(part), "batch_size": batch_size, "part": part_name(part)}
        checkpoints = Checkpoints(checkpoint_dir, f"second-order-L{layer}-{part_name(part)}", identity,
                                  checkpoint_every)
        resumed = checkpoints.resume() if resume else None
        options = dict(scale=scale, normalize=normalize, top_k=top_k)
        stats = (SecondOrderStats(second_order.basis, **options) if resumed is None
                 else SecondOrderStats.from_state(second_order.basis, resumed.tensors, **options))
        return part, checkpoints, stats, resumed

    def run(stage: str, report: LoadReport, position: int) -> LoadReport:
        for batch in checkpoints.batches(lens, part, stage=stage, state=lambda: (stats.state(), {}), report=report,
                                         start=position, batch_size=batch_size, num_workers=num_workers,
                                         progress=progress and (ranks is None or ranks.rank == 0),
                                         description=f"second order {mlp_label(layer)} ({stage})"):
            effects = second_order(batch.images, scale=scale, normalize=normalize)
            require_finite(batch.images, effects.coefficients, effects.kappa)
            if stage == "moments":
                stats.update(effects)
            else:
                stats.rank(effects, batch.indices)
        return report

    with joined(distributed, lens.device) as ranks:
        with together(ranks):
            part, checkpoints, stats, resumed = start(ranks)
            ranked = resumed is not None and resumed.stage == "ranking"
            if not ranked:
                report = run("moments", *((resumed.report, resumed.position) if resumed else (LoadReport(), 0)))
        if ranking:
            shared = centre if centre is not None or ranks is None else _merged_mean(ranks, stats)
            with together(ranks):
                if not ranked:
                    stats.start_ranking(shared)
                elif shared is not None and not torch.equal(stats.centre, shared.to(stats.centre)):
                    raise CliplensError(f"the checkpoint in {checkpoint_dir} ranks from another centre than the "
                                        "merged first pass; delete it to start over")
                report = run("ranking", *((resumed.report, resumed.position) if ranked else (LoadReport(), 0)))
        stats.metadata, stats.report = fit_metadata(lens, stats, part, report), report
        if ranks is None:
            return stats

        def rebuild(rank: int, tensors: dict[str, torch.Tensor], report: LoadReport) -> SecondOrderStats:
            part = SecondOrderStats.from_state(stats.basis, tensors, scale=scale, normalize=normalize, top_k=top_k)
            part.metadata = fit_metadata(lens, part, shard_of(source, Shard(rank, ranks.size)), report)
            return part

        return ranks.fold(stats.state(), report, rebuild)


def fit_metadata(lens: Lens, stats: SecondOrderStats, part: Any, report: LoadReport) -> dict[str, Any]:
    """What the statistics of one part record about the model, the settings and the data read."""
    return {**lens.describe(), "architecture": lens.kind, **stats.settings.metadata(), "layer": stats.layer,
            **data_record(part, report)}


def _merged_mean(ranks: Ranks, stats: SecondOrderStats) -> torch.Tensor:
    """The first-pass mean of all ranks' data: rank 0 merges the ranks' moments in rank order (as merging the shards'
    statistics would) and every rank receives the merged moments."""
    merged = None
    for tensors in ranks.gather(stats.moments.state()):
        moments = Moments.from_tensors({name: tensor.to(stats.moments.mean.device) for name, tensor in tensors.items()})
        merged = moments if merged is None else merged.merge(moments)
    return ranks.broadcast((merged or stats.moments).state())["mean"]

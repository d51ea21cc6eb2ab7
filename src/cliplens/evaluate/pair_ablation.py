"""Mean-ablation and reconstruction of ResNet neuron×head pairs, scored by zero-shot accuracy
(docs/methods/resnet-pairs.md#ablation).

Every pair is r = s·u + c with one scalar s per image, so mean-ablating a pair is replacing its coefficient by s̄,
and the ablated embedding is one factorised pass Σ_h W_o^h W_v^h g_h(x) plus constants, about the cost of the
attention pool itself: [B, H·C, O] is never built. Reconstructing a pair through a unit direction p̂ (its principal
direction, or a sparse-text approximation of it) turns its centred part (s − s̄)u into (s − s̄)⟨u, p̂⟩p̂, so a
reconstructed embedding is the all-means embedding plus fixed directions weighted by per-image scalars.

Every variant is therefore a fixed map of a batch's coefficients: each says which tensors it is built from (a mask, or
directions and gains), so an analysis scores them all in its one evaluation pass and stores their counts under those
tensors' digests (docs/methods/analysis.md#scores); a command given the analysis as its data reads them back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

from ..data.analyzed import AnalyzedData
from ..data.loader import Batch, as_source, fingerprint, require_labels, stream
from ..decompose.resnet_pairs import PairDecomposition
from ..errors import CliplensError
from ..explain.omp import DictNorm, SparseTextDecomposition
from ..io.artifacts import load_artifact, under
from ..io.compat import DATA_KEY, MODEL_KEY, fitted_on, require_model
from ..stats.moments import Moments
from ..stats.pairs import PairStats
from .ablation import Relabelled, true_classes
from .stored_scores import pair_task_key, pair_variant_key, stored_pairs
from .zeroshot import predict

if TYPE_CHECKING:
    from ..lens import Lens

DEFAULT_KEEPS = (100.0, 50.0, 20.0, 10.0, 5.0)
NEURON_CHUNK = 256  # neurons per block when their [H, O] direction stacks are materialised
NEURON_MOMENTS = "pair-neurons"  # an analysis's part: each neuron's coefficient moments over the evaluation data


# masks -----------------------------------------------------------------------------------------------------------
def check_keep(keep_percent: float) -> float:
    if isinstance(keep_percent, bool) or not isinstance(keep_percent, (int, float)) or not 0 < keep_percent <= 100:
        raise CliplensError(f"keep must be a percentage in (0, 100], got {keep_percent!r}")
    return float(keep_percent)


def keep_count(total: int, keep_percent: float) -> int:
    """How many of `total` units the top `keep_percent` % is: ⌈total·x/100⌉ (10 % of 147,456 pairs keeps 14,746)."""
    # rounding first keeps exact products such as 7 % of 100 from becoming 8 through 7.000000000000001
    return max(1, math.ceil(round(total * check_keep(keep_percent) / 100, 9)))


def top_mask(scores: torch.Tensor, keep_percent: float) -> torch.Tensor:
    """Boolean mask of scores' shape keeping the top `keep_percent` % by score; equal scores keep the lower index."""
    flat = scores.flatten()
    order = flat.argsort(descending=True, stable=True)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[order[: keep_count(len(flat), keep_percent)]] = True
    return keep.view(scores.shape)


def neuron_scores(pair_scores: torch.Tensor) -> torch.Tensor:
    """Neuron importance [C]: the sum over heads of its pair scores (bounds the mean of its own top-k centred norms)."""
    return pair_scores.sum(0)


# the closed forms ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirectionReconstruction:
    """Per pair a unit direction p̂ [H, C, O] and the gain ⟨u, p̂⟩ [H, C] that scales (s − s̄) along it."""

    directions: torch.Tensor
    gains: torch.Tensor


class PairAblation:
    """Embeddings of one model with some pairs replaced by their means or reconstructed, from coefficients only.

    Everything runs in float64 on `device` with the statistics' own copy of the pool weights, so the variants of a
    float32 model differ from its embedding only by the model's rounding.
    """

    def __init__(self, stats: PairStats, device: torch.device | str = "cpu"):
        factors = {name: t.to(device, torch.float64) for name, t in stats.factors.items()}
        self.out_weight, self.value_weight = factors["out_weight"], factors["value_weight"]
        self.constant = factors["offsets"].sum(0) * stats.neurons + factors["bias"]  # every c^h and the bias: [O]
        self.coef_mean = stats.coef_mean.to(device)
        self.stats = stats

    def embed(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Σ_h W_o^h W_v^h g_h + constants for per-pair coefficients g [B, H, C]: the embedding they give."""
        per_head = torch.einsum("bhn,hen->bhe", coefficients.to(self.coef_mean), self.value_weight)
        return torch.einsum("bhe,hoe->bo", per_head, self.out_weight) + self.constant

    def mean_ablated(self, coefficients: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Pairs outside `keep` ([H, C], or [C] for whole neurons) replaced by their means: ŷ [B, O]."""
        keep = keep.to(self.coef_mean.device)
        return self.embed(torch.where(keep, coefficients.to(self.coef_mean), self.coef_mean))

    def reconstructed(self, coefficients: torch.Tensor, recon: DirectionReconstruction) -> torch.Tensor:
        """Every pair as mean + (s − s̄)⟨u, p̂⟩p̂: ŷ [B, O]."""
        weights = (coefficients.to(self.coef_mean) - self.coef_mean) * recon.gains.to(self.coef_mean)
        at_means = self.embed(self.coef_mean.expand_as(weights))
        return at_means + torch.einsum("bhc,hco->bo", weights, recon.directions.to(self.coef_mean))


def head_directions(stats: PairStats) -> Iterator[torch.Tensor]:
    """u for every pair, one head at a time: [C, O] per head (all of them at once would be [H, C, O])."""
    out, value = stats.factors["out_weight"], stats.factors["value_weight"]
    for h in range(stats.heads):
        yield (out[h] @ value[h]).T


def principal_reconstruction(stats: PairStats) -> DirectionReconstruction:
    """Reconstruction through each pair's pc0 = σu/‖u‖ (exact by the closed forms: a check that statistics and signs
    agree)."""
    signs = stats.principal_signs()
    units = torch.stack([u / u.norm(dim=1, keepdim=True) for u in head_directions(stats)]) * signs[..., None]
    return DirectionReconstruction(units, signs * stats.direction_norms())


def text_reconstruction(
    stats: PairStats,
    text_embeddings: torch.Tensor,
    texts: Sequence[str] | None = None,
    *,
    n_atoms: int = 64,
    dict_norm: DictNorm = "row",
    batch_size: int = 1024,
    progress: bool = False,
) -> tuple[DirectionReconstruction, SparseTextDecomposition]:
    """Each pair's pc0 written as `n_atoms` signed texts by OMP; p̂ = normalise(xD) (docs/methods/omp.md#reconstruction,
    docs/methods/resnet-pairs.md#ablation).

    Returns the reconstruction and the fitted decomposition, whose targets are the pairs in (head, neuron) order.
    A pair whose code is empty gets p̂ = 0 and so stays at its mean.
    """
    pcs = principal_reconstruction(stats).directions
    heads, neurons, dim = pcs.shape
    omp = SparseTextDecomposition(n_atoms, dict_norm=dict_norm, renormalize=True, batch_size=batch_size,
                                  dtype=torch.float64)
    omp.fit(pcs.reshape(heads * neurons, dim), text_embeddings, texts, progress=progress)
    directions = omp.directions_.reshape(heads, neurons, dim)
    gains = torch.stack([(u * p).sum(1) for u, p in zip(head_directions(stats), directions)])
    return DirectionReconstruction(directions, gains), omp


# neurons -----------------------------------------------------------------------------------------------------------
def neuron_principal_directions(stats: PairStats, moments: Moments) -> tuple[torch.Tensor, torch.Tensor]:
    """First principal direction of each neuron's total Σ_h r^{n,h} over the images `moments` saw: ([C, O], [C]).

    `moments` holds each neuron's coefficient vector over heads (C pieces of dimension H): feed it s.transpose(1, 2).

    The centred total is U_nᵀ(s_n − s̄_n) with U_n [H, O] the neuron's pair directions, so its covariance is
    U_nᵀ Σ_n U_n, Σ_n the [H, H] coefficient covariance; with Σ_n = L Lᵀ the direction is the top left singular vector
    of U_nᵀL. The sign is arbitrary and fixed by making the largest-magnitude entry positive. The second value is the
    fraction of the neuron's variance along the direction.
    """
    if moments.mean.shape != (stats.neurons, stats.heads):
        raise CliplensError(
            f"neuron moments of shape {tuple(moments.mean.shape)} do not match these pair statistics "
            f"({stats.neurons} neurons × {stats.heads} heads); accumulate them from this model's coefficients"
        )
    out, value = stats.factors["out_weight"], stats.factors["value_weight"]
    eigenvalues, eigenvectors = torch.linalg.eigh(moments.covariance)
    roots = eigenvectors * eigenvalues.clamp_min(0).sqrt()[:, None, :]  # L with L Lᵀ = Σ_n: [C, H, H]
    directions, explained = [], []
    for start in range(0, stats.neurons, NEURON_CHUNK):
        chunk = slice(start, start + NEURON_CHUNK)
        stacks = torch.einsum("hoe,hen->noh", out, value[:, :, chunk])  # U_nᵀ [n, O, H]
        left, singular, _ = torch.linalg.svd(stacks @ roots[chunk], full_matrices=False)
        first = left[:, :, 0]
        rows = first.abs().argmax(1, keepdim=True)
        directions.append(first * torch.sign(first.gather(1, rows)))
        power = singular.square()
        explained.append(power[:, 0] / power.sum(1).clamp_min(torch.finfo(power.dtype).tiny))
    return torch.cat(directions), torch.cat(explained)


# streaming evaluation --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairVariant:
    """One row of an ablation table: how the embedding is rebuilt from a batch's pairs."""

    name: str
    level: str  # "model", "pair", "neuron", "pc" or "text"
    embed: Callable[[PairDecomposition], torch.Tensor]
    kept: int | None = None
    total: int | None = None
    fixed: tuple[torch.Tensor, ...] = ()  # what `embed` is built from besides the pair statistics: its stored key

    def key(self) -> str:
        """The variant's content key; one that does not say what it is built from cannot be stored or found."""
        if not self.fixed and self.level != "model":
            raise CliplensError(f"pair variant {self.name!r} does not say which tensors it is built from (fixed), so "
                                "its score cannot be stored or looked up in an analysis")
        return pair_variant_key(self.level, self.fixed)

    @property
    def ablated(self) -> int | None:
        """Units mean-ablated: none for the full model, unknown (None) where units are rebuilt instead."""
        if self.kept is not None:
            return self.total - self.kept
        return 0 if self.level == "model" else None


def standard_variants(
    ablation: PairAblation,
    *,
    keeps: Sequence[float] = DEFAULT_KEEPS,
    levels: Sequence[str] = ("pair", "neuron"),
    text: DirectionReconstruction | None = None,
    text_label: str = "text",
) -> list[PairVariant]:
    """The full model, top-x % masks per level, and the pc0 and (when given) sparse-text reconstructions."""
    unknown = set(levels) - {"pair", "neuron"}
    if unknown:
        raise CliplensError(f"unknown ablation level(s) {sorted(unknown)}; use 'pair' and/or 'neuron'")
    stats = ablation.stats
    variants = [PairVariant("full model", "model", lambda dec: dec.embedding)]
    scores = {"pair": stats.scores()}
    scores["neuron"] = neuron_scores(scores["pair"])
    for level in levels:
        for keep in keeps:
            mask = top_mask(scores[level], keep)
            variants.append(PairVariant(
                f"{level}s keep {keep:g}%", level,
                lambda dec, mask=mask: ablation.mean_ablated(dec.coefficients, mask), int(mask.sum()), mask.numel(),
                (mask,),
            ))
    principal = principal_reconstruction(stats)
    variants.append(PairVariant("pc0 reconstruction", "pc",
                                lambda dec: ablation.reconstructed(dec.coefficients, principal),
                                fixed=(principal.directions, principal.gains)))
    if text is not None:
        variants.append(PairVariant(f"{text_label} reconstruction", "text",
                                    lambda dec: ablation.reconstructed(dec.coefficients, text),
                                    fixed=(text.directions, text.gains)))
    return variants


def pair_batches(
    lens: Lens, data: Any, *, batch_size: int = 32, num_workers: int = 0, progress: bool = False
) -> Iterator[tuple[PairDecomposition, Batch]]:
    """(pairs of the batch, the batch) for every batch of `data`, in order."""
    require_resnet(lens, "pair ablation")
    with torch.no_grad():
        for batch in stream(lens, data, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"pairs {lens.name}"):
            yield lens.decomposer.pairs(batch.images), batch


class AccuracyBoard:
    """Running top-1 accuracy of every variant against a zero-shot classifier W [O, K]."""

    def __init__(self, weights: torch.Tensor, variants: Sequence[PairVariant]):
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise CliplensError(f"ablation variants need distinct names, got {names}")
        self.weights, self.variants = weights.double(), list(variants)
        self.correct = dict.fromkeys(names, 0)
        self.count = 0

    def update(self, dec: PairDecomposition, labels: torch.Tensor) -> None:
        self.add({variant.name: variant.embed(dec) for variant in self.variants}, labels)

    def add(self, embeddings: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        """Score one batch whose variants' embeddings are built already (shared by the boards of several
        classifiers)."""
        labels = torch.as_tensor(labels).cpu()
        require_labels(labels)
        for variant in self.variants:
            embedding = embeddings[variant.name].to(self.weights)
            self.correct[variant.name] += int((predict(embedding, self.weights).cpu() == labels).sum())
        self.count += len(labels)

    def state(self) -> dict[str, torch.Tensor]:
        """The counts so far (a checkpoint of the pass)."""
        return {"correct": torch.tensor([self.correct[v.name] for v in self.variants]),
                "count": torch.tensor([self.count])}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.correct = dict(zip((v.name for v in self.variants), tensors["correct"].tolist()))
        self.count = int(tensors["count"][0])

    def key(self, stats: PairStats) -> str:
        """What an analysis stores these counts under: the classifier with the statistics the variants rebuild from."""
        return pair_task_key(self.weights, stats.coef_mean, stats.factors)

    def stored(self) -> dict[str, Any]:
        """The counts as an analysis stores them, by each variant's content key."""
        return {"count": self.count, "variants": {v.key(): self.correct[v.name] for v in self.variants}}

    def restore(self, folder: Any, stats: PairStats) -> None:
        """The counts the analysis in `folder` stored for exactly these variants, classifier and statistics."""
        found = stored_pairs(folder, self.key(stats), [variant.key() for variant in self.variants])
        self.correct = {variant.name: n for variant, n in zip(self.variants, found["correct"])}
        self.count = found["count"]

    def rows(self, in_sample: bool | None = None) -> list[dict[str, Any]]:
        """One ablation-table row per variant (docs/outputs.md#ablation); units counted only where units are kept."""
        if self.count == 0:
            raise CliplensError("no images were evaluated; check the evaluation data path")
        return [
            {"variant": v.name, "level": v.level, "ablated": v.ablated, "kept": v.kept, "total": v.total,
             "accuracy": self.correct[v.name] / self.count, "correct": self.correct[v.name], "images": self.count,
             "in_sample": in_sample}
            for v in self.variants
        ]


def ablation_table(
    lens: Lens, data: Any, weights: torch.Tensor, variants: Sequence[PairVariant], stats: PairStats, *,
    batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy of every variant over `data` in one streaming pass (given an analysis, the counts its evaluation pass
    stored for exactly these variants); rows say whether the means are in-sample."""
    require_model(stats.metadata, lens.fingerprint, "the pair statistics")
    board = AccuracyBoard(weights.to(lens.device), variants)
    source = as_source(data)
    if isinstance(source, AnalyzedData):
        board.restore(source.path, stats)
    else:
        for dec, batch in pair_batches(lens, source, batch_size=batch_size, num_workers=num_workers,
                                       progress=progress):
            board.update(dec, batch.labels)
    return board.rows(in_sample=is_in_sample(stats, source))


class PairReading:
    """What one pass over evaluation data reads from each batch's pairs: every neuron's coefficient moments (its
    principal direction's covariance, docs/methods/resnet-pairs.md) and the counts of every variant for each classifier
    (with where its true classes come from), each variant's embedding built once per batch for all of them."""

    def __init__(self, lens: Lens, stats: PairStats, variants: Sequence[PairVariant],
                 classifiers: Sequence[tuple[torch.Tensor, Relabelled | None]] = ()):
        require_model(stats.metadata, lens.fingerprint, "the pair statistics")
        self.lens, self.variants = lens, list(variants)
        self.moments = Moments(stats.neurons, stats.heads)
        self.boards = [(AccuracyBoard(weights.to(lens.device), variants), labels) for weights, labels in classifiers]

    def state(self) -> dict[str, torch.Tensor]:
        """The neurons' moments and every board's counts so far (a checkpoint of the pass)."""
        return {**self.moments.state("moments."), **{f"board{b}.{name}": tensor for b, (board, _) in
                                                     enumerate(self.boards) for name, tensor in board.state().items()}}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.moments = Moments.from_tensors(tensors, "moments.")
        for b, (board, _) in enumerate(self.boards):
            board.load_state(under(tensors, f"board{b}."))

    def update(self, batch: Batch) -> None:
        dec = self.lens.decomposer.pairs(batch.images)
        self.moments.update(dec.coefficients.transpose(1, 2))
        if self.boards:
            embeddings = {variant.name: variant.embed(dec) for variant in self.variants}
            for board, labels in self.boards:
                board.add(embeddings, true_classes(batch, labels))


def neuron_moments_part(moments: Moments, lens: Lens, source: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The neurons' coefficient moments as a part of an analysis (tensors, metadata)."""
    return moments.state(), {"kind": "pair-neuron-moments", **lens.describe(), DATA_KEY: fingerprint(source),
                             "count": moments.count}


def stored_neuron_moments(source: AnalyzedData, lens: Lens) -> Moments:
    """The neurons' coefficient moments the analysis behind `source` accumulated in its evaluation pass."""
    tensors, _ = load_artifact(source.path, {MODEL_KEY: lens.fingerprint, DATA_KEY: fingerprint(source)},
                               part=NEURON_MOMENTS, hint="ask `cliplens analyze --ask pair-ablate` with --data-path")
    return Moments.from_tensors(tensors)


def is_in_sample(stats: PairStats, data: Any) -> bool:
    """Whether the statistics (means, masks, directions) were fitted on the very data being evaluated."""
    return fitted_on(stats.metadata, fingerprint(as_source(data)))


def require_resnet(lens: Lens, what: str) -> None:
    if lens.kind != "resnet":
        raise CliplensError(
            f"{what} needs a ResNet CLIP model (neuron×head pairs of the attention pool); {lens.name} is a "
            f"{lens.kind}: use --model toy:rn or an RN50-family model"
        )


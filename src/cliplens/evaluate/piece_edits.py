"""Edits of single pieces (heads, neuron×head pairs, principal components of heads) scored by zero-shot accuracy per
group, in one streaming pass (docs/methods/components.md#edits).

Every edit here changes pieces' centred parts only: with δ_u(I) the deviation of unit u from its reference mean, an
edit with coefficients e [U] gives y_e = y + Σ_u e_u δ_u. e_u = −1 mean-ablates u, e_u = a − 1 scales its deviation
by a, and keeping only component j of a head is −1 on the head plus +1 on the component. Predictions are argmax of
y_e W, so a batch needs only the units' logit deviations D = δ W [B, U, K]: any number of edits (hundreds of random
draws) costs one matrix product. A component's deviation is (δ_h·v) v and its logits (δ_h·v)(v·W), products of two
copies of v, so nothing depends on the component's sign.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import torch

from ..data.loader import LoadReport, stream
from ..errors import CliplensError
from ..explain.components import along, concept_variance, head_components
from ..io.compat import require_model
from ..labels import component_label, match_label, pair_label
from ..stats.collect import PieceStats
from ..stats.pairs import PairStats
from .ablation import check_statistics

if TYPE_CHECKING:
    from ..lens import Lens

KINDS = ("heads", "pairs", "pcs")


class PieceFamily(Protocol):
    """Units that edits can touch: their labels, variances, and per-batch logit deviations."""

    kind: str
    labels: list[str]

    def variances(self, basis: torch.Tensor | None = None) -> torch.Tensor:
        """[U]: each unit's total variance, or with a concept basis B [d, r] its variance inside the span."""

    def logits(self, lens: Lens, images: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the full model's logits [B, K], the units' logit deviations D [B, U, K]) for one batch."""


def head_labels(labels: Sequence[str]) -> list[str]:
    """The head pieces (ViT `L{l}H{h}`, ResNet pool `H{h}`) among `labels`, in order."""
    heads = [label for label in labels if (piece := match_label(label)) is not None and piece.kind == "head"
             and piece.token is None]
    if not heads:
        raise CliplensError("these statistics have no head pieces; collect them with granularity 'head'")
    return heads


class HeadFamily:
    """Whole heads (TextSpan's unit for ViTs), means and covariances from per-piece statistics."""

    kind = "heads"

    def __init__(self, stats: PieceStats, heads: Sequence[str] | None = None):
        self.stats = stats
        self.labels = head_labels(stats.labels) if heads is None else list(heads)
        self.index = torch.tensor([stats.labels.index(label) for label in self.labels])
        self.mean = stats.mean[self.index].to(torch.float64)  # [U, d]
        self.covariance = stats.covariance_of(self.index).to(torch.float64)  # [U, d, d]

    def variances(self, basis: torch.Tensor | None = None) -> torch.Tensor:
        if basis is None:
            return self.covariance.diagonal(dim1=-2, dim2=-1).sum(-1)
        return concept_variance(self.covariance, basis)

    def deviations(self, lens: Lens, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the embedding [B, d], the heads' deviations from their means [B, U, d]), float64."""
        result = lens.decomposer.decompose(images, replace(self.stats.settings, spatial=False))
        pieces = result.components[:, self.index.to(result.components.device)].to(torch.float64)
        return result.embedding.to(torch.float64), pieces - self.mean.to(pieces.device)

    def logits(self, lens: Lens, images: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, deviations = self.deviations(lens, images)
        return embedding @ weights, deviations @ weights


class ComponentFamily:
    """The principal components of every head (or of `heads`; PCLens's unit), then the heads themselves as units
    U_pc … U_pc + H − 1 so that "the whole heads that hold these components" is an edit of the same pass."""

    kind = "pcs"

    def __init__(self, stats: PieceStats, *, heads: Sequence[str] | None = None, mass: float = 0.99,
                 max_components: int = 80, spans: Mapping[str, torch.Tensor] | None = None):
        """`spans`: the heads' read-out rows (`decomposer.head_spans`), where their components are found."""
        self.heads = HeadFamily(stats, heads)
        variances, vectors, owners = [], [], []
        for h, (label, covariance) in enumerate(zip(self.heads.labels, self.heads.covariance)):
            values, directions = head_components(stats.count, covariance, mass=mass, max_components=max_components,
                                                 span=(spans or {}).get(label))
            variances.append(values)
            vectors.append(directions)
            owners += [h] * len(values)
        self.component_variances = torch.cat(variances)  # [P]
        self.vectors = torch.cat(vectors)  # [P, d]
        self.owner = torch.tensor(owners)  # [P]: the head of each component
        self.component_count = len(owners)
        widest = max(len(values) for values in variances)
        # component p is slot (owner, rank within its head) of a [H, widest] grid, so a batch's coordinates are one
        # einsum over heads and never a [B, P, d] copy of the heads' deviations
        self.slots = torch.tensor([h * widest + j for h, values in enumerate(variances) for j in range(len(values))])
        self.width = widest
        self.labels = [component_label(self.heads.labels[h], j) for h, values in enumerate(variances)
                       for j in range(len(values))] + self.heads.labels

    def variances(self, basis: torch.Tensor | None = None) -> torch.Tensor:
        """Components: λ_j (or λ_j ‖Bᵀv_j‖²); then the heads' own variances."""
        own = self.component_variances if basis is None else self.component_variances * along(self.vectors, basis)
        return torch.cat([own, self.heads.variances(basis)])

    def logits(self, lens: Lens, images: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, deviations = self.heads.deviations(lens, images)
        vectors, slots = self.vectors.to(deviations.device), self.slots.to(deviations.device)
        grid = vectors.new_zeros(len(self.heads.labels) * self.width, vectors.shape[1])
        grid[slots] = vectors
        coordinates = torch.einsum("bhd,hrd->bhr", deviations, grid.view(len(self.heads.labels), self.width, -1))
        component_logits = coordinates.flatten(1)[:, slots, None] * (vectors @ weights)  # [B, P, K]
        return embedding @ weights, torch.cat([component_logits, deviations @ weights], dim=1)

    def holders(self, chosen: torch.Tensor) -> torch.Tensor:
        """Unit indices of the distinct heads that hold the chosen components."""
        return self.component_count + self.owner[chosen].unique()


class PairFamily:
    """ResNet neuron×head pairs r = s·u + c: deviation (s − s̄)u, variance var(s)‖u‖² (docs/methods/resnet-pairs.md)."""

    kind = "pairs"

    def __init__(self, stats: PairStats):
        self.stats = stats
        out, value = stats.factors["out_weight"].to(torch.float64), stats.factors["value_weight"].to(torch.float64)
        self.directions = torch.einsum("hoe,hen->hno", out, value)  # u [H, C, O]
        self.labels = [pair_label(h, n) for h in range(stats.heads) for n in range(stats.neurons)]
        self._unit_logits: tuple[torch.Tensor, torch.Tensor] | None = None

    def variances(self, basis: torch.Tensor | None = None) -> torch.Tensor:
        lengths = self.directions.square().sum(-1) if basis is None else along(self.directions, basis)
        return (self.stats.coef_variance.to(torch.float64) * lengths).flatten()

    def logits(self, lens: Lens, images: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = lens.decomposer.pairs(images)
        centred = pairs.coefficients.to(torch.float64) - self.stats.coef_mean.to(weights.device, torch.float64)
        if self._unit_logits is None or self._unit_logits[0] is not weights:  # a pass hands the same W every batch
            self._unit_logits = (weights, self.directions.to(weights.device) @ weights)  # u·W [H, C, K]
        per_unit = self._unit_logits[1]
        return pairs.embedding.to(torch.float64) @ weights, (centred[..., None] * per_unit).flatten(1, 2)


def piece_family(kind: str, lens: Lens, stats: PieceStats | PairStats, *, mass: float = 0.99,
                 max_components: int = 80) -> PieceFamily:
    """The family of `kind` over statistics made with this lens (pairs need ResNet pair statistics)."""
    if kind not in KINDS:
        raise CliplensError(f"unknown kind of piece {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "pairs":
        if not isinstance(stats, PairStats):
            raise CliplensError("pairs need ResNet pair statistics (collect with granularity 'pair')")
        require_model(stats.metadata, lens.fingerprint, "the pair statistics")
        return PairFamily(stats)
    stats = check_statistics(stats, lens)
    if kind == "heads":
        return HeadFamily(stats)
    return ComponentFamily(stats, mass=mass, max_components=max_components,
                           spans=lens.decomposer.head_spans(stats.settings))


# scoring edits per group -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Edit:
    """One row of a table: coefficients e [U] on the units' deviations (all zero: the full model)."""

    name: str
    coefficients: torch.Tensor
    details: tuple[tuple[str, Any], ...] = ()


class GroupBoard:
    """Correct predictions of every edit in every group; the class of an image is `class_of_group[group]`."""

    def __init__(self, edits: Sequence[Edit], class_of_group: Sequence[int], group_names: Sequence[str]):
        if not edits:
            raise CliplensError("nothing to evaluate: pass at least one edit")
        self.edits = list(edits)
        self.matrix = torch.stack([edit.coefficients.to(torch.float64) for edit in edits])  # [V, U]
        self.class_of_group = torch.as_tensor(class_of_group)
        self.group_names = list(group_names)
        self.correct = torch.zeros(len(edits), len(group_names), dtype=torch.long)
        self.counts = torch.zeros(len(group_names), dtype=torch.long)

    def update(self, full: torch.Tensor, deviations: torch.Tensor, groups: torch.Tensor) -> None:
        """One batch: full logits [B, K], unit logit deviations [B, U, K], group indices [B]."""
        if deviations.shape[1] != self.matrix.shape[1]:
            raise CliplensError(f"edits over {self.matrix.shape[1]} units, a batch of {deviations.shape[1]}")
        groups = groups.cpu()
        if (groups < 0).any() or (groups >= len(self.group_names)).any():
            raise CliplensError(f"group labels must lie in 0..{len(self.group_names) - 1}")
        logits = full[:, None] + torch.einsum("vu,buk->bvk", self.matrix.to(deviations.device), deviations)
        right = (logits.argmax(-1).cpu() == self.class_of_group[groups][:, None]).long()  # [B, V]
        self.correct.index_add_(1, groups, right.T)
        self.counts += torch.bincount(groups, minlength=len(self.group_names))

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """Per edit: accuracy in each group (empty where a group has no image), the worst and the mean over the
        groups present, and the image-weighted average."""
        if self.counts.sum() == 0:
            raise CliplensError("no images were evaluated; check the evaluation data")
        present = self.counts > 0
        rows = []
        for edit, correct in zip(self.edits, self.correct):
            accuracy = correct.double() / self.counts.clamp_min(1)
            row: dict[str, Any] = {"edit": edit.name, **dict(edit.details), **extra}
            row.update({name: float(accuracy[g]) if present[g] else "" for g, name in enumerate(self.group_names)})
            row.update(worst_group=float(accuracy[present].min()), group_mean=float(accuracy[present].mean()),
                       average=float(correct.sum() / self.counts.sum()), images=int(self.counts.sum()))
            rows.append(row)
        return rows


def score_edits(lens: Lens, data: Any, family: PieceFamily, weights: torch.Tensor, board: GroupBoard, *,
                batch_size: int = 32, num_workers: int = 0, progress: bool = False) -> LoadReport:
    """Fill `board` over `data`, whose labels are group indices, in one pass."""
    report = LoadReport()
    weights = torch.as_tensor(weights).to(lens.device, torch.float64)
    with torch.no_grad():
        for batch in stream(lens, data, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"edits {lens.name}", labelled=True, report=report):
            board.update(*family.logits(lens, batch.images, weights), batch.labels)
    return report

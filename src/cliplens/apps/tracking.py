"""Concept tracking under distribution shift (docs/methods/tracking.md): a concept score per image from chosen pieces,
its mean and spread per group of a grouping variable (year, colour, any metadata), streamed and mergeable.

Score of image x for pieces S and a unit concept direction t̂: s_S(x) = ⟨Σ_{j∈S} p_j(x), t̂⟩ / ‖y(x)‖, the part of
the unit embedding's coordinate along t̂ that S writes (S = every piece gives the cosine of y and t̂). One pass keeps,
per group, the count and the sums of every tracked column and of their squares; merging passes adds them, so a run
split into shards gives the whole run's numbers exactly. Because s is linear in the pieces, the group mean of any
set of single-piece columns is the sum of their group means: random sets of pieces cost nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

import torch

from ..data.loader import stream
from ..errors import CliplensError
from ..labels import match_label
from ..settings import Settings
from .retrieval import parse_component

if TYPE_CHECKING:
    from ..lens import Lens


@dataclass
class GroupMoments:
    """Per group: count, Σ v and Σ v² of a vector of columns [P] (float64), updated batch by batch."""

    columns: int
    counts: dict[Hashable, int] = field(default_factory=dict)
    sums: dict[Hashable, torch.Tensor] = field(default_factory=dict)
    squares: dict[Hashable, torch.Tensor] = field(default_factory=dict)

    def update(self, groups: Sequence[Hashable], values: torch.Tensor) -> None:
        """Add images with these groups and values [B, P]."""
        values = values.detach().double().cpu()
        if values.shape != (len(groups), self.columns):
            raise CliplensError(f"values of shape {tuple(values.shape)} for {len(groups)} images of {self.columns} "
                                "columns")
        for group in dict.fromkeys(groups):
            rows = values[[i for i, g in enumerate(groups) if g == group]]
            self.counts[group] = self.counts.get(group, 0) + len(rows)
            self.sums[group] = self.sums.get(group, torch.zeros(self.columns, dtype=torch.float64)) + rows.sum(0)
            self.squares[group] = (self.squares.get(group, torch.zeros(self.columns, dtype=torch.float64))
                                   + (rows**2).sum(0))

    def merge(self, other: GroupMoments) -> GroupMoments:
        """The moments of both runs together (disjoint images)."""
        if other.columns != self.columns:
            raise CliplensError(f"cannot merge group moments of {self.columns} and {other.columns} columns")
        merged = GroupMoments(self.columns)
        for source in (self, other):
            for group, count in source.counts.items():
                merged.counts[group] = merged.counts.get(group, 0) + count
                zeros = torch.zeros(self.columns, dtype=torch.float64)
                merged.sums[group] = merged.sums.get(group, zeros) + source.sums[group]
                merged.squares[group] = merged.squares.get(group, zeros) + source.squares[group]
        return merged

    def groups(self) -> list[Hashable]:
        """Groups in sorted order (numbers numerically, names alphabetically)."""
        return sorted(self.counts, key=lambda g: (isinstance(g, str), g))

    def mean(self, group: Hashable) -> torch.Tensor:
        return self.sums[group] / self.counts[group]

    def std(self, group: Hashable) -> torch.Tensor:
        """The sample standard deviation (n − 1); 0 for a group of one image."""
        count = self.counts[group]
        if count < 2:
            return torch.zeros(self.columns, dtype=torch.float64)
        variance = (self.squares[group] - self.sums[group] ** 2 / count) / (count - 1)
        return variance.clamp_min(0).sqrt()


def check_pieces(lens: Lens, labels: Sequence[str]) -> list[str]:
    """ViT heads L{l}H{h} or ResNet pairs H{h}N{n}, checked against the model."""
    if not labels:
        raise CliplensError("name the pieces to track (L<layer>H<head> or H<head>N<neuron>) or a concept to select "
                            "them by")
    parsed = [parse_component(label, lens) for label in labels]
    if any(component.kind not in ("head", "pair") for component in parsed):
        raise CliplensError("tracking follows ViT heads (L<layer>H<head>) or ResNet pairs (H<head>N<neuron>)")
    return [component.label for component in parsed]


def select_heads(labels: Sequence[str], covariance: torch.Tensor, direction: torch.Tensor, count: int) -> list[str]:
    """The `count` heads whose pieces vary most along t̂: t̂ᵀ Σ_h t̂ (docs/methods/tracking.md#selection)."""
    heads = [i for i, label in enumerate(labels) if (piece := match_label(label)) is not None and piece.kind == "head"]
    if count > len(heads):
        raise CliplensError(f"cannot select {count} heads: the model has {len(heads)}")
    unit = direction.double() / direction.double().norm()
    variance = torch.einsum("d,cde,e->c", unit, covariance[heads].double(), unit)
    chosen = variance.argsort(descending=True, stable=True)[:count].tolist()
    return [labels[heads[i]] for i in sorted(chosen)]


def piece_columns(lens: Lens, result: Any, pieces: Sequence[str], tracked: Sequence[int], direction: torch.Tensor
                  ) -> torch.Tensor:
    """Per image [B, 2 + len(pieces)]: the tracked set's score (the pieces at positions `tracked`), the whole
    embedding's (its cosine with t̂), then each piece's own score."""
    if lens.kind == "vit":
        each = torch.stack([result[label] for label in pieces], 1)  # [B, k, d]
    else:
        parsed = [parse_component(label, lens).index for label in pieces]
        each = result.pieces(torch.tensor([h for h, _ in parsed]), torch.tensor([n for _, n in parsed]))
    norm = result.embedding.norm(dim=-1, keepdim=True).double()
    direction = direction.to(each.device, torch.float64)
    singles = (each.double() @ direction) / norm  # [B, k]
    whole = (result.embedding.double() @ direction)[:, None] / norm
    return torch.cat([singles[:, list(tracked)].sum(1, keepdim=True), whole, singles], 1)


def track_scores(
    lens: Lens, source: Any, pieces: Sequence[str], tracked: Sequence[str], direction: torch.Tensor,
    group_of: Callable[[int], Hashable], attribute_of: Callable[[int], bool] | None = None, *, batch_size: int = 32,
    num_workers: int = 0, progress: bool = False,
) -> tuple[GroupMoments, GroupMoments | None]:
    """One pass: group moments of the columns of `piece_columns` (the `tracked` pieces' set, the embedding, each of
    `pieces`), and of the attribute (0/1) where `attribute_of` is given."""
    pieces = check_pieces(lens, pieces)
    missing = [label for label in tracked if label not in pieces]
    if missing:
        raise CliplensError(f"tracked piece {missing[0]} is not among the scored pieces")
    positions_tracked = [pieces.index(label) for label in tracked]
    settings = Settings(granularity="head" if lens.kind == "vit" else "pair", convention="reference")
    scores = GroupMoments(2 + len(pieces))
    rates = GroupMoments(1) if attribute_of is not None else None
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"track {lens.name}"):
            positions = batch.indices.tolist()
            groups = [group_of(i) for i in positions]
            result = lens.decomposer.decompose(batch.images, settings)
            scores.update(groups, piece_columns(lens, result, pieces, positions_tracked, direction))
            if rates is not None:
                rates.update(groups, torch.tensor([[float(attribute_of(i))] for i in positions]))
    if not scores.counts:
        raise CliplensError("no image of the data could be read; nothing to track")
    return scores, rates


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of two equal-length sequences (nan when either is constant)."""
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y) / denominator) if denominator > 0 else float("nan")

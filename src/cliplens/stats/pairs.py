"""Closed-form statistics of ResNet neuron×head pairs from scalar moments (docs/methods/resnet-pairs.md#closed-forms).

Each pair varies across images only through its scalar coefficient s, so its mean, its centred norms, its top images
and its principal direction all follow from the moments and extremes of s plus the fixed direction u. The reference
stores every pair for every image (~450 GB per 1,000 images for RN50x16); here the whole state is a few arrays of
size [H, C, k], whatever the number of images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..decompose.resnet_pairs import pair_directions
from ..errors import CliplensError
from ..io.artifacts import save_artifact, under
from ..settings import Settings
from .identity import check_compatible, merged_metadata


class PairStats:
    """Running moments and extremes of pair coefficients s [H, C], plus the factor weights that give directions."""

    # what `state()` holds, for checking a loaded artifact (k: extremes kept so far, at most top_k)
    STATE_SHAPES = {
        "count": (1,), "coef_mean": ("H", "C"), "coef_scatter": ("H", "C"), "high_values": ("H", "C", "k"),
        "high_index": ("H", "C", "k"), "low_values": ("H", "C", "k"), "low_index": ("H", "C", "k"),
        "factor.out_weight": ("H", "O", "d_h"), "factor.value_weight": ("H", "d_h", "C"),
        "factor.offsets": ("H", "O"), "factor.bias": ("O",),
    }

    def __init__(self, factors: dict[str, torch.Tensor], top_k: int = 50, metadata: dict[str, Any] | None = None):
        self.factors = {name: t.detach().double().cpu() for name, t in factors.items()}  # out_weight, value_weight, ...
        heads, _, neurons = self.factors["value_weight"].shape
        self.top_k, self.metadata = top_k, dict(metadata or {})
        self.report = None  # the LoadReport of the pass that collected these statistics
        self.count = 0
        self.coef_mean = torch.zeros(heads, neurons, dtype=torch.float64)
        self.coef_scatter = torch.zeros(heads, neurons, dtype=torch.float64)
        empty = torch.empty(heads, neurons, 0, dtype=torch.float64)
        self.high_values, self.low_values = empty, empty.clone()
        self.high_index = torch.empty(heads, neurons, 0, dtype=torch.int64)
        self.low_index = self.high_index.clone()

    @property
    def settings(self) -> Settings:
        """The pairs' settings (granularity "pair", their convention), as the metadata records."""
        return Settings.from_metadata(self.metadata)

    @property
    def heads(self) -> int:
        return self.coef_mean.shape[0]

    @property
    def neurons(self) -> int:
        return self.coef_mean.shape[1]

    # accumulation ----------------------------------------------------------------------------------------------------
    def update(self, coefficients: torch.Tensor, indices: torch.Tensor) -> None:
        """Add a batch: coefficients s [B, H, C] of the images at dataset positions `indices` [B]."""
        s = coefficients.detach().double().cpu()
        n = s.shape[0]
        if n == 0:
            return
        batch_mean = s.mean(0)
        self._combine(n, batch_mean, ((s - batch_mean) ** 2).sum(0))
        position = indices.to(torch.int64).cpu().view(n, 1, 1).expand_as(s).permute(1, 2, 0)
        self._keep_extremes(s.permute(1, 2, 0), position)

    def _combine(self, n: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        total = self.count + n
        delta = mean - self.coef_mean
        self.coef_scatter += scatter + delta**2 * (self.count * n / total)
        self.coef_mean += delta * (n / total)
        self.count = total

    def _keep_extremes(self, values: torch.Tensor, index: torch.Tensor, *, only: str | None = None) -> None:
        """Fold candidates [H, C, b] into the k largest (and/or k smallest) coefficients seen so far."""
        for sign, attr in ((1.0, "high"), (-1.0, "low")):
            if only not in (None, attr):
                continue
            kept = torch.cat([getattr(self, f"{attr}_values"), values], -1)
            kept_index = torch.cat([getattr(self, f"{attr}_index"), index], -1)
            top = torch.topk(sign * kept, min(self.top_k, kept.shape[-1]), dim=-1)
            setattr(self, f"{attr}_values", sign * top.values)
            setattr(self, f"{attr}_index", kept_index.gather(-1, top.indices))

    def merge(self, other: "PairStats") -> "PairStats":
        """Statistics of `self`'s data followed by `other`'s: moments combine exactly, extremes are re-ranked."""
        check_compatible(self.metadata, other.metadata)
        if self.coef_mean.shape != other.coef_mean.shape or self.top_k != other.top_k:
            raise CliplensError("pair statistics of different models or --top-k cannot be merged; collect them alike")
        merged = PairStats(self.factors, self.top_k)
        # `other`'s images come after all of `self`'s, so its positions shift by the size of self's data
        shift = int(self.metadata.get("data_size", self.count))
        for source, offset in ((self, 0), (other, shift)):
            if source.count:
                merged._combine(source.count, source.coef_mean, source.coef_scatter)
                merged._keep_extremes(source.high_values, source.high_index + offset, only="high")
                merged._keep_extremes(source.low_values, source.low_index + offset, only="low")
        merged.metadata = merged_metadata(self.metadata, other.metadata, merged.count)
        return merged

    # closed forms ----------------------------------------------------------------------------------------------------
    @property
    def coef_variance(self) -> torch.Tensor:
        return self.coef_scatter / max(self.count, 1)

    def directions(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """u = W_o^h W_v^h[:, n] for the listed pairs: [k, O]."""
        return pair_directions(self.factors["out_weight"], self.factors["value_weight"], heads, neurons)

    def direction_norms(self) -> torch.Tensor:
        """‖u‖ for every pair [H, C], one head at a time (never all directions at once)."""
        out, value = self.factors["out_weight"], self.factors["value_weight"]
        return torch.stack([(out[h] @ value[h]).norm(dim=0) for h in range(self.heads)])

    def means(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """Dataset mean of the listed pairs, s̄·u + c: [k, O]."""
        heads, neurons = torch.as_tensor(heads), torch.as_tensor(neurons)
        offsets = self.factors["offsets"][heads]
        return self.coef_mean[heads, neurons, None] * self.directions(heads, neurons) + offsets

    def top_deviations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pair, the k largest |s − s̄| (descending) and their image positions: ([H, C, k], [H, C, k]).

        The k images farthest from the mean are among the k largest or the k smallest s, which is why keeping both
        extremes while streaming is enough; an image in both lists is counted once.
        """
        k = min(self.top_k, self.count)
        deviation = torch.cat([self.high_values, self.low_values], -1) - self.coef_mean[..., None]
        index = torch.cat([self.high_index, self.low_index], -1)
        width = self.high_index.shape[-1]
        magnitude = deviation.abs()
        for h in range(self.heads):  # per head keeps the [C, k, k] comparison small
            seen = (self.low_index[h, :, :, None] == self.high_index[h, :, None, :]).any(-1)
            magnitude[h, :, width:] = magnitude[h, :, width:].masked_fill(seen, -1.0)
        order = magnitude.argsort(dim=-1, descending=True, stable=True)[..., :k]
        return deviation.gather(-1, order), index.gather(-1, order)

    def norms(self) -> torch.Tensor:
        """The reference's `norms` [H, C, k]: top-k centred pair norms |s − s̄|·‖u‖, ascending."""
        deviation, _ = self.top_deviations()
        return (deviation.abs() * self.direction_norms()[..., None]).flip(-1)

    def scores(self) -> torch.Tensor:
        """Pair importance [H, C]: mean of the top-k centred norms (the masks of docs/methods/resnet-pairs.md#ablation
        rank by this)."""
        return self.norms().mean(-1)

    def principal_signs(self) -> torch.Tensor:
        """σ [H, C]: +1 when most top-k images deviate positively; ties take the sign of u's largest entry."""
        deviation, _ = self.top_deviations()
        positive = (deviation > 0).sum(-1) * 2
        k = deviation.shape[-1]
        out, value = self.factors["out_weight"], self.factors["value_weight"]
        tie_sign = torch.stack([_largest_entry_sign(out[h] @ value[h]) for h in range(self.heads)])
        return torch.where(positive > k, 1.0, torch.where(positive < k, -1.0, tie_sign)).double()

    def principal_directions(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """pc0 = σ·u/‖u‖ for the listed pairs [k, O]: exactly the first PC of the pair's top-k centred block."""
        heads, neurons = torch.as_tensor(heads), torch.as_tensor(neurons)
        u = self.directions(heads, neurons)
        return self.principal_signs()[heads, neurons, None] * u / u.norm(dim=-1, keepdim=True)

    # persistence -----------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        return save_artifact(path, *self.artifact())

    def artifact(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) as saved, alone or as a part of an analysis."""
        return self.state(), {**self.metadata, "count": self.count, "top_k": self.top_k}

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "count": torch.tensor([self.count]),
            "coef_mean": self.coef_mean,
            "coef_scatter": self.coef_scatter,
            "high_values": self.high_values,
            "high_index": self.high_index,
            "low_values": self.low_values,
            "low_index": self.low_index,
            **{f"factor.{name}": tensor for name, tensor in self.factors.items()},
        }

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> "PairStats":
        factors = under(tensors, "factor.")
        stats = cls(factors, int(metadata["top_k"]), metadata)
        stats.count = int(tensors["count"][0])
        for name in ("coef_mean", "coef_scatter", "high_values", "high_index", "low_values", "low_index"):
            setattr(stats, name, tensors[name])
        return stats


def _largest_entry_sign(directions: torch.Tensor) -> torch.Tensor:
    """Sign of the largest-magnitude entry of each column of [O, C]."""
    rows = directions.abs().argmax(0)
    return torch.sign(directions.gather(0, rows[None])[0])

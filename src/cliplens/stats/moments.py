"""Mergeable first and second moments of many vector-valued pieces, accumulated in float64.

We keep the centred scatter matrix (Chan et al.'s pairwise form) instead of raw sums: merging two shards then stays
accurate even when the mean is large compared to the spread, which is the usual case for CLIP pieces.
"""

from __future__ import annotations

import torch


class Moments:
    """Running count, mean [C, d] and centred scatter [C, d, d] of C pieces of dimension d."""

    def __init__(self, pieces: int, dim: int, *, device: torch.device | str = "cpu"):
        self.count = 0
        self.mean = torch.zeros(pieces, dim, dtype=torch.float64, device=device)
        self.scatter = torch.zeros(pieces, dim, dim, dtype=torch.float64, device=device)

    @classmethod
    def from_state(cls, count: int, mean: torch.Tensor, scatter: torch.Tensor) -> "Moments":
        moments = cls.__new__(cls)
        moments.count, moments.mean, moments.scatter = int(count), mean.double(), scatter.double()
        return moments

    def state(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The exact running state as named tensors (for artifacts, checkpoints and exchanges between processes)."""
        return {f"{prefix}count": torch.tensor([self.count]), f"{prefix}mean": self.mean,
                f"{prefix}scatter": self.scatter}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "") -> "Moments":
        """The inverse of `state`."""
        return cls.from_state(int(tensors[f"{prefix}count"][0]), tensors[f"{prefix}mean"], tensors[f"{prefix}scatter"])

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch of pieces [B, C, d] (any float dtype).

        The batch is centred on its own mean first (so a large common offset cannot cancel catastrophically), then
        combined with the running state by Chan's formula, written as one in-place batched product: Chan's correction
        (count·n/total) δδᵀ rides as one more row, √(count·n/total) δ, beside the centred rows. No [C, d, d]
        temporaries, and one pass over the scatter per batch: with many large pieces (SigLIP's heads, 144 × 768²)
        the pass, not the arithmetic, is the cost.
        """
        batch = batch.to(self.mean.device, torch.float64)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(0)
        centred = (batch - batch_mean).transpose(0, 1)  # [C, B, d]
        total = self.count + n
        delta = batch_mean - self.mean
        if self.count:
            centred = torch.cat([centred, delta[:, None] * (self.count * n / total) ** 0.5], 1)
        self.scatter.baddbmm_(centred.transpose(1, 2), centred)
        self.mean += delta * (n / total)
        self.count = total

    def _shift(self, n: int, mean: torch.Tensor) -> None:
        """Account for n more points with mean `mean` whose own scatter is already added."""
        total = self.count + n
        delta = mean - self.mean
        self.scatter.baddbmm_(delta[:, :, None], delta[:, None, :], alpha=self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total

    def merge(self, other: "Moments") -> "Moments":
        """A new Moments equal to having seen both shards' data (order does not matter)."""
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"cannot merge moments of shape {tuple(self.mean.shape)} and {tuple(other.mean.shape)}")
        merged = Moments.from_state(self.count, self.mean.clone(), self.scatter.clone())
        merged._combine(other.count, other.mean.to(self.mean.device), other.scatter.to(self.mean.device))
        return merged

    def _combine(self, n: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        if n:
            self.scatter += scatter
            self._shift(n, mean)

    @property
    def covariance(self) -> torch.Tensor:
        """Population covariance (divides by the count, as TextSpan's variance scores do)."""
        return self.scatter / max(self.count, 1)

    @property
    def second_moment(self) -> torch.Tensor:
        """Uncentred second moment E[x xᵀ]; its top eigenvectors span what TextSpan's uncentred SVD spans."""
        return self.covariance + torch.einsum("ci,cj->cij", self.mean, self.mean)

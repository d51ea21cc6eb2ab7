"""The k largest scores of every row seen in a stream, each with its image position and a payload vector.

The entries are kept in slots, unsorted, and sorted only when read: a batch writes just the entries it promotes into
the slots of those it evicts. Keeping them sorted instead re-orders every kept payload on every batch; for the
second-order ranking of ViT-B-32 (3,072 neurons × 100 images × 65 coordinates in float64) that copy was 0.15 s per
batch, a tenth of the forward it rides on. Equal scores are ordered by position (dataset order), for keeping and for
reading, so what is kept depends neither on how the stream was batched nor on a resume from sorted lists.
"""

from __future__ import annotations

import torch


class TopRows:
    """Per row, the k largest scores so far, their positions [R, ≤k] and payloads [R, ≤k, D]."""

    def __init__(self, scores: torch.Tensor, index: torch.Tensor, payload: torch.Tensor, k: int):
        self.k, self.scores, self.index, self.payload = k, scores, index, payload
        self.filled = scores.shape[1]

    @classmethod
    def empty(cls, rows: int, dim: int, k: int, *, dtype: torch.dtype, device: torch.device | str) -> "TopRows":
        return cls(torch.empty(rows, 0, dtype=dtype, device=device),
                   torch.empty(rows, 0, dtype=torch.int64, device=device),
                   torch.empty(rows, 0, dim, dtype=dtype, device=device), k)

    def push(self, scores: torch.Tensor, index: torch.Tensor, payload: torch.Tensor) -> None:
        """Offer a batch: scores and positions [R, B], payloads [R, B, D]."""
        filled = self.filled
        candidates = torch.cat([self.scores[:, :filled], scores], 1)
        kept = min(self.k, candidates.shape[1])
        chosen = torch.zeros_like(candidates, dtype=torch.bool)
        chosen.scatter_(1, ranked(candidates, torch.cat([self.index[:, :filled], index], 1))[:, :kept], True)
        if self.scores.shape[1] < kept:
            self._reserve()
        # every row frees as many slots (evicted ones, then the new ones up to `kept`) as it promotes new entries;
        # nonzero lists both in row-major order, so the i-th free slot takes the i-th promoted entry
        free = torch.cat([~chosen[:, :filled], chosen.new_ones(len(chosen), kept - filled)], 1)
        rows, slots = free.nonzero(as_tuple=True)
        _, batch = chosen[:, filled:].nonzero(as_tuple=True)
        self.scores[rows, slots] = scores[rows, batch]
        self.index[rows, slots] = index[rows, batch]
        self.payload[rows, slots] = payload[rows, batch]
        self.filled = kept

    def _reserve(self) -> None:
        """Room for k entries per row, the filled ones copied (once per stream)."""
        rows, dim = self.payload.shape[0], self.payload.shape[2]
        grown = (self.scores.new_empty(rows, self.k), self.index.new_empty(rows, self.k),
                 self.payload.new_empty(rows, self.k, dim))
        for new, old in zip(grown, (self.scores, self.index, self.payload)):
            new[:, : self.filled] = old[:, : self.filled]
        self.scores, self.index, self.payload = grown

    def sorted(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scores, positions, payloads), largest score first; equal scores in dataset order."""
        order = ranked(self.scores[:, : self.filled], self.index[:, : self.filled])
        return (self.scores.gather(1, order), self.index.gather(1, order),
                self.payload.gather(1, order[..., None].expand(-1, -1, self.payload.shape[2])))


def ranked(scores: torch.Tensor, positions: torch.Tensor, *, descending: bool = True) -> torch.Tensor:
    """Along the last dimension, the order of largest (or smallest) score first, equal scores by position."""
    by_position = positions.argsort(dim=-1, stable=True)
    return by_position.gather(-1, scores.gather(-1, by_position).argsort(dim=-1, descending=descending, stable=True))

"""Per-batch reducers behind `collect`: each turns one batch of images into running statistics and forgets it.

Three shapes of data need three reducers: materialised pieces (layers, ResNet heads), ViT heads in their
coefficient form (the cheap path that keeps `collect` close to a plain forward pass), and ResNet pairs as scalar
coefficients.

Each reducer's `state()` is its exact running state as named tensors (float64 accumulators as they are, never
rounded or re-derived) and `from_state` rebuilds it, so a pass checkpointed and resumed continues bit for bit.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..decompose.finite import require_finite
from ..decompose.vit import ViTDecomposer, piece_labels
from ..errors import CliplensError
from ..labels import parse_label
from ..settings import Settings
from .moments import Moments
from .pairs import PairStats


def piece_state(moments: Moments, token_mean: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The exact state of materialised pieces: their moments and, for spatial pieces, their token means. Shared by the
    reducer (checkpoints) and `PieceStats` (artifacts and exchanges between ranks), which must read each other's."""
    return {**moments.state(), **({} if token_mean is None else {"token_mean": token_mean})}


def piece_from_state(tensors: dict[str, torch.Tensor]) -> tuple[Moments, torch.Tensor | None]:
    """The inverse of `piece_state`: (moments, token means or None)."""
    return Moments.from_tensors(tensors), tensors.get("token_mean")


class DenseReducer:
    """Moments of materialised pieces [B, C, d]; with spatial pieces also their per-token means [C, N, d]."""

    def __init__(self, decomposer, settings: Settings):
        self.decomposer, self.settings = decomposer, settings
        self.labels, self.moments, self.token_mean = None, None, None

    def update(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        result = self.decomposer.decompose(images, self.settings)
        require_finite(images, result.components)
        pieces = result.components.sum(2) if result.spatial else result.components
        if self.moments is None:
            self.labels, self.moments = result.labels, Moments(pieces.shape[1], pieces.shape[2])
            if result.spatial:
                self.token_mean = torch.zeros(result.components.shape[1:], dtype=torch.float64)
        if result.spatial:
            batch_mean = result.components.double().cpu().mean(0)
            self.token_mean += (batch_mean - self.token_mean) * (len(images) / (self.moments.count + len(images)))
        self.moments.update(pieces)

    def finish(self) -> tuple[list[str], Moments, torch.Tensor | None]:
        return self.labels, self.moments, self.token_mean

    def state(self) -> dict[str, torch.Tensor]:
        """The moments (and token means); the labels travel beside them, in `labels`."""
        return piece_state(self.moments, self.token_mean)

    def load_state(self, tensors: dict[str, torch.Tensor], labels: list[str] | None = None) -> None:
        """Continue from `state()`; the labels are the decomposer's for these settings unless given."""
        self.labels = list(labels) if labels is not None else self.decomposer.labels(self.settings)
        self.moments, self.token_mean = piece_from_state(tensors)

    @classmethod
    def from_state(cls, decomposer, settings: Settings, tensors: dict[str, torch.Tensor],
                   labels: list[str]) -> "DenseReducer":
        reducer = cls(decomposer, settings)
        reducer.load_state(tensors, labels)
        return reducer


class HeadReducer:
    """ViT heads: moments of each head's pieces, in whichever space is smaller (docs/methods/statistics.md#collect).

    A head's piece is c B with per-image coefficients c [k] and a fixed basis B [k, d]. For k < d (k = d_h or d_h + 3
    at a CLS or mean pool) the moments of c are kept and expanded once in `finish` (mean = c̄ B, covariance =
    Bᵀ Σ_c B): k² instead of d² work per image and head (64² vs 512² for ViT-B-32). Through a MAP head (SigLIP) a
    head has k = J·d_h ≥ d coefficients: there that space is no smaller and the expansion costs as much as 2d images
    (k²d + kd² per head), so every batch's pieces are materialised in d dimensions, in label order, and their moments
    kept as `finish` returns them. Per-token means stay in coefficient space either way (first moments, expanded
    once).
    """

    def __init__(self, decomposer: ViTDecomposer, settings: Settings):
        self.decomposer, self.settings = decomposer, settings
        self.embedded = self.pieces = self.heads = self.dense = self.basis = None
        self.token_basis = self.token_mean = None

    @property
    def count(self) -> int:
        return (self.pieces if self.embedded else self.heads).count

    def update(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        f = self.decomposer.factorise(images, self.settings)
        if self.embedded is None:
            self.embedded = f.basis.shape[-2] >= f.basis.shape[-1]
        if self.settings.spatial:
            tokens = f.token_coefficients.flatten(1, 2)  # [B, L·H, N, k]
            if self.token_mean is None:
                self.token_basis = f.token_basis.flatten(0, 1).double().cpu()
                self.token_mean = torch.zeros(tokens.shape[1:], dtype=torch.float64)
            seen = 0 if self.heads is None and self.pieces is None else self.count
            batch_mean = tokens.double().cpu().mean(0)
            self.token_mean += (batch_mean - self.token_mean) * (len(images) / (seen + len(images)))
        if self.embedded:  # the pieces as `decompose` materialises them (in the model's precision)
            pieces = self.decomposer.group(replace(f, settings=replace(self.settings, spatial=False))).components
            require_finite(images, pieces)
            if self.pieces is None:
                self.pieces = Moments(*pieces.shape[1:])
            self.pieces.update(pieces)
            return
        dense, coefficients = f.dense(), f.coefficients.flatten(1, 2)  # [B, P, d], [B, L·H, k]
        require_finite(images, dense, coefficients)
        if self.heads is None:
            self.heads, self.dense = Moments(*coefficients.shape[1:]), Moments(*dense.shape[1:])
            self.basis = f.basis.flatten(0, 1).double().cpu()
        self.heads.update(coefficients)
        self.dense.update(dense)

    def finish(self) -> tuple[list[str], Moments, torch.Tensor | None]:
        spec = self.decomposer.spec
        labels = piece_labels(spec, self.settings)
        is_head = torch.tensor([parse_label(label).kind == "head" for label in labels])
        if self.embedded:
            moments = self.pieces
        else:
            basis, d = self.basis, self.basis.shape[-1]
            mean = torch.empty(len(labels), d, dtype=torch.float64)
            scatter = torch.empty(len(labels), d, d, dtype=torch.float64)
            mean[is_head] = torch.einsum("ck,ckd->cd", self.heads.mean, basis)
            scatter[is_head] = basis.transpose(1, 2) @ self.heads.scatter @ basis
            mean[~is_head], scatter[~is_head] = self.dense.mean, self.dense.scatter
            moments = Moments.from_state(self.heads.count, mean, scatter)
        token_mean = None
        if self.settings.spatial:
            token_mean = torch.zeros(len(labels), spec.tokens, moments.mean.shape[-1], dtype=torch.float64)
            token_mean[is_head] = torch.einsum("cnk,ckd->cnd", self.token_mean, self.token_basis)
            token_mean[~is_head, 0] = moments.mean[~is_head]
        return labels, moments, token_mean

    labels = None  # computed from the model's spec in `finish`, so nothing to carry beside the state

    def state(self) -> dict[str, torch.Tensor]:
        """Which space the moments are in; the pieces' moments, or the head and dense moments and the heads' bases;
        with spatial settings the token bases and means."""
        tensors = {"embedded": torch.tensor([int(self.embedded)])}
        if self.embedded:
            tensors.update(self.pieces.state("pieces."))
        else:
            tensors.update({**self.heads.state("heads."), **self.dense.state("dense."), "basis": self.basis})
        if self.settings.spatial:
            tensors.update(token_basis=self.token_basis, token_mean=self.token_mean)
        return tensors

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        # checkpoints written before the embedded space existed hold coefficient moments
        self.embedded = bool(tensors.get("embedded", torch.tensor([0]))[0])
        if self.embedded:
            self.pieces = Moments.from_tensors(tensors, "pieces.")
        else:
            self.heads = Moments.from_tensors(tensors, "heads.")
            self.dense, self.basis = Moments.from_tensors(tensors, "dense."), tensors["basis"]
        self.token_basis, self.token_mean = tensors.get("token_basis"), tensors.get("token_mean")

    @classmethod
    def from_state(cls, decomposer: ViTDecomposer, settings: Settings, tensors: dict[str, torch.Tensor],
                   labels: None = None) -> "HeadReducer":
        reducer = cls(decomposer, settings)
        reducer.load_state(tensors)
        return reducer


class PairReducer:
    """ResNet pairs: scalar moments and extremes of the coefficients s [B, H, C]."""

    def __init__(self, decomposer, settings: Settings, *, top_k: int):
        if settings.normalize:
            raise CliplensError("pair statistics describe the unnormalised embedding (pairs of a normalised one are "
                                "not rank-1); drop normalize")
        self.decomposer, self.settings, self.top_k = decomposer, settings, top_k
        self.stats: PairStats | None = None

    def update(self, images: torch.Tensor, indices: torch.Tensor) -> None:
        pairs = self.decomposer.pairs(images, self.settings)
        require_finite(images, pairs.coefficients)
        if self.stats is None:
            factors = {"out_weight": pairs.out_weight, "value_weight": pairs.value_weight, "offsets": pairs.offsets,
                       "bias": pairs.bias}
            self.stats = PairStats(factors, self.top_k)
        self.stats.update(pairs.coefficients, indices)

    labels = None  # pairs are addressed by (head, neuron) positions, not labels

    def state(self) -> dict[str, torch.Tensor]:
        return self.stats.state()

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.stats = PairStats.from_state(tensors, {"top_k": self.top_k})

    @classmethod
    def from_state(cls, decomposer, settings: Settings, tensors: dict[str, torch.Tensor], labels: None = None, *,
                   top_k: int) -> "PairReducer":
        reducer = cls(decomposer, settings, top_k=top_k)
        reducer.load_state(tensors)
        return reducer

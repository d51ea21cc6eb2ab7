"""TextSpan (Gandelsman et al.) computed from a piece's mean and covariance alone (docs/methods/textspan.md).

Every score the per-image algorithm computes is the variance of the deflated data along a text, tᵀΣt, so the count,
mean and covariance of a piece carry everything it needs: no per-image pieces are ever stored. After the texts are
projected onto the piece's top-r span, all later steps happen inside that span, in the coordinates of its orthonormal
basis: the same arithmetic as in R^d, but r×r instead of d×d per step.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import CliplensError, require_positive_int
from .base import AffineReconstruction, checked_piece, require_fitted

# A picked text whose residual (after orthogonalisation against earlier picks) is shorter than this fraction of the
# longest projected text is made of rounding error: its direction would carry errors of order eps/fraction ≈ 1e-8,
# the orthogonality the directions promise. Such texts are treated as used up.
COLLAPSED_TEXT = 1e-8


class TextSpan(AffineReconstruction):
    """Greedy, variance-maximising orthogonal text basis of one piece (docs/methods/textspan.md#algorithm).

    The span is the top-`rank` eigenvectors of the uncentred second moment Σ + μμᵀ (what the reference's uncentred SVD
    of the data spans). `center_texts` and `centered_span` give PCLens's port (docs/methods/svd-poles.md): texts centred
    by their mean, span of the covariance instead.

    Fitted attributes: `ids_` and `texts_` in picking order, `directions_` [m, d] (each text orthogonalised against
    the earlier picks, unnormalised, as picked), `variance_explained_` [m] (fraction of tr Σ per step), `mean_` [d].
    """

    def __init__(self, n_texts: int = 20, rank: int = 80, center_texts: bool = False, centered_span: bool = False):
        require_positive_int("n_texts", n_texts)
        require_positive_int("rank", rank)
        self.n_texts = n_texts
        self.rank = rank
        self.center_texts = bool(center_texts)
        self.centered_span = bool(centered_span)

    def get_params(self) -> dict[str, Any]:
        return {
            "n_texts": self.n_texts,
            "rank": self.rank,
            "center_texts": self.center_texts,
            "centered_span": self.centered_span,
        }

    def fit(self, count: int, mean: Any, covariance: Any, text_embeddings: Any, texts: Sequence[str]) -> TextSpan:
        mean, covariance, pool = checked_piece(count, mean, covariance, text_embeddings, texts)
        rank = min(self.rank, len(mean))
        if self.n_texts > len(pool):
            raise CliplensError(f"n_texts={self.n_texts} exceeds the text pool ({len(pool)} texts); ask for fewer")
        if self.n_texts > rank:
            raise CliplensError(
                f"n_texts={self.n_texts} exceeds the span rank {rank}: the picked directions are orthogonal inside "
                "the span; ask for fewer texts or a larger rank"
            )
        if self.center_texts:
            pool = pool - pool.mean(0)
        spanned = covariance if self.centered_span else covariance + torch.outer(mean, mean)
        basis = torch.linalg.eigh(spanned).eigenvectors.flip(-1)[:, :rank].T  # [rank, d], orthonormal rows
        coordinates = pool @ basis.T  # the texts projected onto the span, in the basis [M, rank]
        variance = basis @ covariance @ basis.T  # the covariance seen inside the span [rank, rank]
        floor = COLLAPSED_TEXT * coordinates.norm(dim=1).max()
        identity = torch.eye(rank, dtype=torch.float64, device=mean.device)
        ids, picked, explained = [], [], []
        for _ in range(self.n_texts):
            scores = ((coordinates @ variance) * coordinates).sum(1)  # tᵀΣt with t unnormalised, as the reference
            alive = coordinates.norm(dim=1) > floor
            if not alive.any():
                raise CliplensError(
                    f"the texts span only {len(ids)} directions of this piece's span; ask for at most {len(ids)} texts"
                )
            # Masking only matters once Σ is exhausted and every score is rounding noise: the reference would then
            # pick a direction made of rounding error, we pick a real one.
            j = int(torch.where(alive, scores, -torch.inf).argmax())
            text = coordinates[j]
            length2 = text @ text
            ids.append(j)
            picked.append(text)
            explained.append(scores[j] / length2)
            deflate = identity - torch.outer(text, text) / length2
            variance = deflate @ variance @ deflate
            coordinates = coordinates @ deflate
        self.ids_ = ids
        self.texts_ = [texts[j] for j in ids]
        self.directions_ = torch.stack(picked) @ basis
        self.variance_explained_ = torch.stack(explained) / covariance.trace()
        self.mean_ = mean
        return self

    def projector(self) -> torch.Tensor:
        """Q_m = Σ_j t̂_j t̂_jᵀ [d, d], the orthogonal projector onto the picked directions."""
        require_fitted(self, "directions_")
        units = self.directions_ / self.directions_.norm(dim=1, keepdim=True)
        return units.T @ units

    def descriptions(self) -> list[dict[str, Any]]:
        """One row per picked text (docs/outputs.md#descriptions): rank (picking order), description,
        variance_explained, method."""
        require_fitted(self, "ids_")
        return [
            {"rank": rank, "description": text, "variance_explained": float(share), "method": "textspan"}
            for rank, (text, share) in enumerate(zip(self.texts_, self.variance_explained_.tolist()))
        ]

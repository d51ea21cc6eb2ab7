"""TextSpan (Gandelsman et al., METHODS §3) computed from a piece's mean and covariance alone (§3.3).

Every score the per-image algorithm computes is the variance of the deflated data along a text, tᵀΣt, so the count,
mean and covariance of a piece carry everything it needs: no per-image pieces are ever stored. After the texts are
projected onto the piece's top-r span, all later steps happen inside that span, in the coordinates of its orthonormal
basis: the same arithmetic as in R^d, but r×r instead of d×d per step.

This module also holds what every statistics-based explainer shares: input checks and fitting many pieces at once.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Iterable, Protocol, Sequence, TypeVar

import torch

from ..errors import CliplensError, require_positive_int
from ..stats.moments import Moments

# A picked text whose residual (after orthogonalisation against earlier picks) is shorter than this fraction of the
# longest projected text is made of rounding error: its direction would carry errors of order eps/fraction ≈ 1e-8,
# the orthogonality the directions promise. Such texts are treated as used up.
COLLAPSED_TEXT = 1e-8


def piece_statistics(
    count: int, mean: Any, covariance: Any, text_embeddings: Any, texts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check one piece's statistics and a text pool; return float64 mean [d], covariance [d, d] and texts [M, d]."""
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
        raise CliplensError(f"the statistics must come from at least one image (count={count!r}); collect them again")
    mean = torch.as_tensor(mean).to(torch.float64)
    covariance = torch.as_tensor(covariance).to(mean.device, torch.float64)
    pool = torch.as_tensor(text_embeddings).to(mean.device, torch.float64)
    if mean.ndim != 1 or covariance.shape != (len(mean), len(mean)):
        raise CliplensError(
            f"expected mean [d] and covariance [d, d] of one piece, got {tuple(mean.shape)} and "
            f"{tuple(covariance.shape)}; pass moments.mean[i] and moments.covariance[i]"
        )
    if pool.ndim != 2 or pool.shape[1] != len(mean):
        raise CliplensError(
            f"text embeddings must be [M, {len(mean)}] to match the piece, got {tuple(pool.shape)}; "
            "embed the texts with the same model the statistics come from"
        )
    if len(texts) != len(pool):
        raise CliplensError(f"{len(texts)} texts for {len(pool)} text embeddings; pass one text per embedding row")
    for name, tensor in (("mean", mean), ("covariance", covariance), ("text embeddings", pool)):
        if not torch.isfinite(tensor).all():
            raise CliplensError(f"the {name} contain NaN or infinite values; recompute them in float32 or float64")
    if covariance.trace() <= 0:
        raise CliplensError("this piece does not vary over the data (zero covariance); text cannot explain it, skip it")
    # Accumulated scatter matrices are symmetric only up to rounding; eigh would read one triangle only.
    return mean, (covariance + covariance.T) / 2, pool


def require_fitted(explainer: object, attribute: str) -> None:
    if not hasattr(explainer, attribute):
        raise CliplensError(f"this {type(explainer).__name__} is not fitted yet; call fit(...) first")


def as_pieces(x: Any, mean: torch.Tensor) -> torch.Tensor:
    """Pieces [..., d] as float64 on the explainer's device, checked against its dimension."""
    x = torch.as_tensor(x).to(mean.device, torch.float64)
    if x.ndim == 0 or x.shape[-1] != len(mean):
        raise CliplensError(f"pieces must have last dimension {len(mean)}, got shape {tuple(x.shape)}")
    return x


class PieceExplainer(Protocol):
    def get_params(self) -> dict[str, Any]: ...

    def fit(self, count: int, mean: Any, covariance: Any, text_embeddings: Any, texts: Sequence[str]) -> Any: ...


Explainer = TypeVar("Explainer", bound=PieceExplainer)


def fit_pieces(
    explainer: Explainer,
    moments: Moments,
    labels: Sequence[str],
    text_embeddings: Any,
    texts: Sequence[str],
    *,
    only: Iterable[str] | None = None,
) -> dict[str, Explainer]:
    """Fit a fresh copy of `explainer` (same settings) to each piece of `moments`; a dict by label, in order.

    `labels` names the C pieces of `moments` in order; `only` restricts the fit to some of them (e.g. the heads of the
    last layers), which also keeps constant pieces such as `bias` out.
    """
    if len(labels) != moments.mean.shape[0]:
        raise CliplensError(f"{len(labels)} labels for {moments.mean.shape[0]} pieces; pass the statistics' labels")
    position = {label: i for i, label in enumerate(labels)}
    if len(position) != len(labels):
        raise CliplensError("piece labels must be unique; pass the labels stored with the statistics")
    chosen = list(labels) if only is None else list(only)
    unknown = [label for label in chosen if label not in position]
    if unknown:
        raise CliplensError(f"no piece labelled {unknown[0]!r} in these statistics; pick from e.g. {list(labels)[:5]}")
    covariance = moments.covariance
    fitted = {}
    for label in chosen:
        i = position[label]
        fitted[label] = type(explainer)(**explainer.get_params()).fit(
            moments.count, moments.mean[i], covariance[i], text_embeddings, texts
        )
    return fitted


class TextSpan:
    """Greedy, variance-maximising orthogonal text basis of one piece (METHODS §3.3).

    The span is the top-`rank` eigenvectors of the uncentred second moment Σ + μμᵀ (what the reference's uncentred
    SVD of the data spans). `center_texts` and `centered_span` give PCLens's port (§7.1): texts centred by their mean,
    span of the covariance instead.

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
        mean, covariance, pool = piece_statistics(count, mean, covariance, text_embeddings, texts)
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

    def reconstruct(self, x: Any) -> torch.Tensor:
        """μ + (x − μ) Q_m for pieces x [..., d] (float64): the per-image reconstruction of §3.2, as a fixed map."""
        require_fitted(self, "mean_")
        x = as_pieces(x, self.mean_)
        return self.mean_ + (x - self.mean_) @ self.projector()

    def descriptions(self) -> list[dict[str, Any]]:
        """One row per picked text: rank (0-based), description, similarity (= variance explained), method."""
        require_fitted(self, "ids_")
        return [
            {"rank": rank, "description": text, "similarity": float(share), "method": "textspan"}
            for rank, (text, share) in enumerate(zip(self.texts_, self.variance_explained_.tolist()))
        ]

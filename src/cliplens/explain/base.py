"""What every statistics-based explainer shares: the `PieceExplainer` protocol, input checks, and fitting many
pieces at once.

An explainer (TextSpan, SVDPoles, ...) fits one piece from its count, mean and covariance and a text pool, with
scikit-learn's shape: settings in `__init__`, `get_params()`, `fit(...)` setting trailing-underscore attributes.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Iterable, Protocol, Sequence, TypeVar

import torch

from ..errors import CliplensError
from ..progress import progress_over
from ..stats.moments import Moments


def checked_piece(
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


class AffineReconstruction:
    """An explainer whose reconstruction of a piece is the fixed affine map x ↦ μ + (x − μ) P, with P its
    `projector()`: one map for every image, so reconstructions are scored like ablations."""

    def reconstruct(self, x: Any) -> torch.Tensor:
        """μ + (x − μ) P for pieces x [..., d] (float64)."""
        require_fitted(self, "mean_")
        x = as_pieces(x, self.mean_)
        return self.mean_ + (x - self.mean_) @ self.projector()


class ThroughComponents(AffineReconstruction):
    """Reconstruction through kept principal components V_r [r, d] and a text projector Π [r, r] on their
    coordinates: P = V_rᵀ Π V_r."""

    def projector(self) -> torch.Tensor:
        require_fitted(self, "text_projector_")
        return self.components_.T @ self.text_projector_ @ self.components_


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
    progress: bool = False,
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
    for label in progress_over(chosen, f"fit {type(explainer).__name__}", "piece", progress):
        i = position[label]
        fitted[label] = type(explainer)(**explainer.get_params()).fit(
            moments.count, moments.mean[i], covariance[i], text_embeddings, texts
        )
    return fitted

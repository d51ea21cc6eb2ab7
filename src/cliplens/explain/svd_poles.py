"""SVD poles (PCLens `svd_data_approx`, docs/methods/svd-poles.md) from a piece's count, mean and covariance.

The thin SVD of the centred data X_c = U S Vᵀ and the eigen-decomposition of the population covariance
Σ = X_cᵀX_c / n share V, with S_i = sqrt(n·λ_i); so the principal components, their singular values and the rank rule
need no per-image data. Each component is named by the texts at its two ends (its poles), and the texts that top
each component give a text-based reconstruction of the piece.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import CliplensError, require_positive_int
from .base import ThroughComponents, checked_piece, require_fitted

TEXT_MODES = ("center_normalize", "normalize", "center")
STRENGTHS = ("squared", "singular")
SIGN_RULE = "the largest-magnitude entry of each component is positive (first such entry on ties)"


@dataclass(frozen=True)
class Pole:
    """One end of a component: the texts with the largest (sign +1) or smallest (sign −1) coordinates on it."""

    sign: int
    ids: tuple[int, ...]
    texts: tuple[str, ...]
    scores: tuple[float, ...]


@dataclass(frozen=True)
class PrincipalComponent:
    """One principal component: its strengths and its two poles, the one with the larger best |score| first."""

    index: int
    strength_abs: float
    strength_rel: float
    poles: tuple[Pole, Pole]


def nuclear_rank(singular_values: torch.Tensor, mass: float, max_components: int) -> int:
    """r = 1 + #{i : cumsum(S)_i / ΣS < mass}, capped at max_components; S sorted in decreasing order.

    The mass is that of the singular values themselves (nuclear norm), not of the variance, as in the reference.
    """
    fractions = singular_values.cumsum(0) / singular_values.sum()
    return min(1 + int((fractions < mass).sum()), max_components)


def signed_components(vectors: torch.Tensor) -> torch.Tensor:
    """Rows [k, d] flipped so that each row follows SIGN_RULE; SVD signs are otherwise arbitrary."""
    largest = vectors.abs().argmax(dim=1)
    signs = torch.sign(vectors.gather(1, largest[:, None]))
    return vectors * signs


def component_poles(coordinates: torch.Tensor, texts: Sequence[str], per_pole: int) -> list[tuple[Pole, Pole]]:
    """For each column i of Γ [M, r]: the positive and negative poles, the one with the larger best |Γ| first.

    On an exact tie of the best values the positive pole comes first.
    """
    top = coordinates.topk(per_pole, dim=0)
    bottom = coordinates.topk(per_pole, dim=0, largest=False)
    poles = []
    for i in range(coordinates.shape[1]):
        positive = _pole(+1, top.indices[:, i], top.values[:, i], texts)
        negative = _pole(-1, bottom.indices[:, i], bottom.values[:, i], texts)
        positive_first = top.values[0, i] >= -bottom.values[0, i]
        poles.append((positive, negative) if positive_first else (negative, positive))
    return poles


def _pole(sign: int, ids: torch.Tensor, scores: torch.Tensor, texts: Sequence[str]) -> Pole:
    ids_list = ids.tolist()
    return Pole(sign, tuple(ids_list), tuple(texts[j] for j in ids_list), tuple(scores.tolist()))


def prepare_texts(pool: torch.Tensor, mode: str) -> torch.Tensor:
    """The text embeddings as the chosen reference era used them (see TEXT_MODES and docs/methods/svd-poles.md step
    3)."""
    if mode in ("center_normalize", "center"):
        pool = pool - pool.mean(0)
    if mode in ("center_normalize", "normalize"):
        lengths = pool.norm(dim=1, keepdim=True)
        if (lengths == 0).any():
            raise CliplensError(
                f"text_mode={mode!r} leaves a zero text vector (a text equal to the pool's mean, or a zero "
                "embedding); remove it from the pool"
            )
        pool = pool / lengths
    return pool


def row_space_projector(rows: torch.Tensor) -> torch.Tensor:
    """Π = Qᵀ(QQᵀ)⁺Q, the orthogonal projector onto the row space of Q [r, r].

    Computed from the SVD of Q rather than by forming QQᵀ, whose condition number is the square of Q's. The rank cut
    is the one pinv(QQᵀ) makes by default (singular values of QQᵀ below r·eps of the largest, i.e. those of Q below
    sqrt(r·eps) of the largest), so the result is the same projector; with full rank it is I to rounding.
    """
    _, values, right = torch.linalg.svd(rows)
    cut = (rows.shape[0] * torch.finfo(rows.dtype).eps) ** 0.5 * values[0]
    kept = right[values > cut]
    return kept.T @ kept


class SVDPoles(ThroughComponents):
    """Principal components of one piece, each named by its most positive and most negative texts
    (docs/methods/svd-poles.md).

    Fitted attributes: `mean_` [d]; `singular_values_` [d] (all of them, of the centred data); `n_components_` r;
    `components_` V_r [r, d] (orthonormal rows, signs by SIGN_RULE); `text_mean_` [d] (mean of the raw text pool, for
    centring queries); `coordinates_` Γ [M, r]; `components_poles_` (one `PrincipalComponent` per PC);
    `strength_abs_` and `strength_rel_` [r]; `reconstruction_ids_` [r] (the top text of each PC); `text_projector_` Π
    [r, r].
    """

    def __init__(
        self,
        texts_per_pole: int = 5,
        max_components: int = 80,
        mass: float = 0.99,
        text_mode: str = "center_normalize",
        strength: str = "squared",
    ):
        require_positive_int("texts per pole (--texts-per-head)", texts_per_pole)
        require_positive_int("max_components", max_components)
        if not 0 < mass <= 1:
            raise CliplensError(f"mass must be in (0, 1], got {mass!r}")
        if text_mode not in TEXT_MODES:
            raise CliplensError(f"text_mode must be one of {', '.join(TEXT_MODES)}, got {text_mode!r}")
        if strength not in STRENGTHS:
            raise CliplensError(f"strength must be one of {', '.join(STRENGTHS)}, got {strength!r}")
        self.texts_per_pole = texts_per_pole
        self.max_components = max_components
        self.mass = float(mass)
        self.text_mode = text_mode
        self.strength = strength

    def get_params(self) -> dict[str, Any]:
        return {
            "texts_per_pole": self.texts_per_pole,
            "max_components": self.max_components,
            "mass": self.mass,
            "text_mode": self.text_mode,
            "strength": self.strength,
        }

    def fit(self, count: int, mean: Any, covariance: Any, text_embeddings: Any, texts: Sequence[str]) -> SVDPoles:
        mean, covariance, pool = checked_piece(count, mean, covariance, text_embeddings, texts)
        if self.texts_per_pole > len(pool):
            raise CliplensError(
                f"--texts-per-head {self.texts_per_pole} (texts per pole) exceeds the text pool ({len(pool)} texts); ask for fewer texts"
            )
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        # Descending order; eigenvalues of a covariance are ≥ 0, negatives are rounding.
        singular = (int(count) * eigenvalues.flip(0).clamp(min=0)).sqrt()
        rank = nuclear_rank(singular, self.mass, self.max_components)
        components = signed_components(eigenvectors.flip(1)[:, :rank].T)
        coordinates = prepare_texts(pool, self.text_mode) @ components.T
        strength = singular[:rank] ** 2 if self.strength == "squared" else singular[:rank]
        relative = 100 * strength / strength.sum()
        self.mean_ = mean
        self.singular_values_ = singular
        self.n_components_ = rank
        self.components_ = components
        self.text_mean_ = pool.mean(0)
        self.coordinates_ = coordinates
        self.strength_abs_ = strength
        self.strength_rel_ = relative
        self.components_poles_ = [
            PrincipalComponent(i, float(strength[i]), float(relative[i]), poles)
            for i, poles in enumerate(component_poles(coordinates, texts, self.texts_per_pole))
        ]
        self.reconstruction_ids_ = coordinates.argmax(dim=0)
        self.text_projector_ = row_space_projector(coordinates[self.reconstruction_ids_])
        return self

    def descriptions(self) -> list[dict[str, Any]]:
        """One row per pole text (docs/outputs.md#descriptions): direction = component index, pole + or -, rank = the
        text's place in its pole (0 the most extreme), similarity = its coordinate Γ."""
        require_fitted(self, "components_poles_")
        rows = []
        for component in self.components_poles_:
            for pole in component.poles:
                rows.extend(
                    {"method": "svd", "direction": component.index, "pole": "+" if pole.sign > 0 else "-",
                     "rank": rank, "description": text, "similarity": score}
                    for rank, (text, score) in enumerate(zip(pole.texts, pole.scores))
                )
        return rows

"""Principal components of a head, explained and scored without depending on their signs
(docs/methods/components.md).

An eigenvector is defined up to its sign, so anything a component is used for must give the same answer for v and −v.
`SVDPoles` reproduces the reference, which names each component's reconstruction text from its positive pole; here
every result is built from sign-free quantities only: the variance λ_j, the rank-one projector v_j v_jᵀ, the poles as
an unordered pair ordered by distance from the origin, and the text of largest |coordinate|.

Concepts are sets of texts. Their directions are the span of the texts' embeddings, centred on their own mean when
there are several (what "stripes", "checker" and "plain" share, the direction of every text, is not the concept), and
a piece's concept variance is the part of its variance in that span: tr(Bᵀ Σ B) for an orthonormal basis B.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import CliplensError, require_positive_int
from .base import ThroughComponents, checked_piece, require_fitted
from .svd_poles import TEXT_MODES, nuclear_rank, prepare_texts, row_space_projector

ENDS = ("dominant", "opposite")  # the pole that reaches farther from the origin, and the other one


def head_components(count: int, covariance: torch.Tensor, *, mass: float = 0.99, max_components: int = 80,
                    span: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The principal components of one piece: variances λ [r] (decreasing) and unit vectors [r, d] (signs arbitrary).

    r is SVDPoles' rank rule (docs/methods/svd-poles.md): the smallest number of components whose singular values
    S_i = sqrt(n·λ_i) reach `mass` of their sum, at most `max_components`. `span` [k, d], rows that every value of
    the piece is a combination of (a head's read-out, `decomposer.head_spans`), moves the eigen-solve to their
    k-dimensional span, QᵀΣQ for an orthonormal basis Q: the same components, the d − k others being zero up to
    round-off (for ViT-B-32's heads, 64² instead of 512²: 2 ms instead of 30).
    """
    if not 0 < mass <= 1:
        raise CliplensError(f"mass must be in (0, 1], got {mass!r}")
    require_positive_int("max_components", max_components)
    covariance = torch.as_tensor(covariance).to(torch.float64)
    if span is None or span.shape[0] >= span.shape[1]:
        eigenvalues, eigenvectors = torch.linalg.eigh((covariance + covariance.T) / 2)
    else:
        basis = torch.linalg.qr(span.to(covariance).T).Q  # [d, k]
        reduced = basis.T @ covariance @ basis
        eigenvalues, eigenvectors = torch.linalg.eigh((reduced + reduced.T) / 2)
        eigenvectors = basis @ eigenvectors
    variances = eigenvalues.flip(0).clamp(min=0)
    if variances.sum() <= 0:
        raise CliplensError("this piece does not vary over the data (zero covariance); it has no principal components")
    rank = nuclear_rank((int(count) * variances).sqrt(), mass, max_components)
    return variances[:rank], eigenvectors.flip(1)[:, :rank].T


def concept_basis(text_embeddings: Any) -> torch.Tensor:
    """Orthonormal columns B [d, r] spanning a concept's texts: several texts centred on their mean, one text as is."""
    texts = torch.as_tensor(text_embeddings).to(torch.float64)
    if texts.ndim != 2 or len(texts) == 0:
        raise CliplensError(f"a concept needs at least one text embedding [M, d], got shape {tuple(texts.shape)}")
    if len(texts) > 1:
        texts = texts - texts.mean(0)
    left, values, _ = torch.linalg.svd(texts.T, full_matrices=False)
    kept = values > values.max() * max(texts.shape) * torch.finfo(texts.dtype).eps
    if not kept.any():
        raise CliplensError("the concept's texts are all the same direction after centring; give different words")
    return left[:, kept]


def concept_variance(covariance: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """tr(Bᵀ Σ B) for covariances [..., d, d]: the variance of each piece inside the concept's span."""
    basis = basis.to(covariance.device, covariance.dtype)
    return torch.einsum("...de,dr,er->...", covariance, basis, basis)


def along(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """‖Bᵀ v‖² for vectors [..., d]: the fraction of a unit vector's length² inside the span (sign-free)."""
    return (vectors.to(basis.dtype) @ basis).square().sum(-1)


@dataclass(frozen=True)
class ComponentPole:
    """One end of a component: `dominant` reaches farther from the origin than `opposite`; scores are |coordinates|."""

    end: str
    ids: tuple[int, ...]
    texts: tuple[str, ...]
    scores: tuple[float, ...]


class ComponentTexts(ThroughComponents):
    """Every principal component of one piece named by the texts at its two ends, with no dependence on the signs
    the eigen-solver happened to return (docs/methods/components.md#signs).

    Fitted attributes: `mean_` [d]; `variances_` λ [r]; `components_` [r, d] (signs as the solver gave them; use only
    through sign-free quantities); `coordinates_` Γ [M, r]; `poles_` (dominant, opposite) per component;
    `reconstruction_ids_` [r] (the text of largest |Γ| per component); `text_projector_` Π [r, r]. Flipping
    component j maps Γ to ΓD and Π to DΠD, so the reconstruction's projector V_rᵀ Π V_r does not change.
    """

    def __init__(self, texts_per_pole: int = 5, max_components: int = 80, mass: float = 0.99,
                 text_mode: str = "center_normalize"):
        require_positive_int("--texts-per-pole", texts_per_pole)
        require_positive_int("max_components", max_components)
        if text_mode not in TEXT_MODES:
            raise CliplensError(f"text_mode must be one of {', '.join(TEXT_MODES)}, got {text_mode!r}")
        self.texts_per_pole, self.max_components, self.mass, self.text_mode = (
            texts_per_pole, max_components, float(mass), text_mode)

    def get_params(self) -> dict[str, Any]:
        return {"texts_per_pole": self.texts_per_pole, "max_components": self.max_components, "mass": self.mass,
                "text_mode": self.text_mode}

    def fit(self, count: int, mean: Any, covariance: Any, text_embeddings: Any, texts: Sequence[str],
            components: torch.Tensor | None = None, span: torch.Tensor | None = None) -> ComponentTexts:
        """`components` [r, d] replaces the eigenvectors (any signs): the invariance tests pass flipped ones; `span`
        is the piece's (`head_components`)."""
        mean, covariance, pool = checked_piece(count, mean, covariance, text_embeddings, texts)
        if self.texts_per_pole > len(pool):
            raise CliplensError(f"--texts-per-pole {self.texts_per_pole} exceeds the text pool ({len(pool)} texts)")
        if components is None:
            _, vectors = head_components(count, covariance, mass=self.mass, max_components=self.max_components,
                                         span=span)
        else:
            vectors = torch.as_tensor(components).to(mean.device, torch.float64)
        variances = torch.einsum("rd,de,re->r", vectors, covariance, vectors)  # vᵀΣv: bit-identical for −v
        coordinates = prepare_texts(pool, self.text_mode) @ vectors.T
        self.mean_, self.variances_, self.components_, self.coordinates_ = mean, variances, vectors, coordinates
        self.poles_ = [self._poles(coordinates[:, j], texts) for j in range(len(vectors))]
        self.reconstruction_ids_ = coordinates.abs().argmax(dim=0)
        self.text_projector_ = row_space_projector(coordinates[self.reconstruction_ids_])
        return self

    def _poles(self, column: torch.Tensor, texts: Sequence[str]) -> tuple[ComponentPole, ComponentPole]:
        """Both ends of one component; which is dominant depends on |Γ| only, so not on the component's sign."""
        ends = [column.topk(self.texts_per_pole), (-column).topk(self.texts_per_pole)]
        if ends[1].values[0] > ends[0].values[0]:
            ends.reverse()
        return tuple(ComponentPole(end, tuple(top.indices.tolist()), tuple(texts[i] for i in top.indices.tolist()),
                                   tuple(top.values.abs().tolist())) for end, top in zip(ENDS, ends))

    def rows(self, piece: str) -> list[dict[str, Any]]:
        """One row per component: its variance (absolute and % of the kept ones) and the texts at both ends."""
        require_fitted(self, "poles_")
        share = 100 * self.variances_ / self.variances_.sum()
        return [{"piece": piece, "component": j, "variance": float(self.variances_[j]),
                 "variance_percent": float(share[j]), **{f"{pole.end}_texts": " | ".join(pole.texts) for pole in poles},
                 "reconstruction_text": poles[0].texts[0]}
                for j, poles in enumerate(self.poles_)]

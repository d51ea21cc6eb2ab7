"""The five CLIP-Dissect similarity functions: Sim[k, c] between neuron k and concept c (docs/methods/dissect.md).

Each takes P [N, M] (probe image–concept cosines of the judge CLIP) and A [N, K] (one activation per probe image and
neuron) and returns Sim [K, M] float32, computed with matrix products and batched gathers over blocks of neurons and
concepts, never a Python loop over single neurons. Defaults are the reference's (METHODS §8.2).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import CliplensError

EPS = 1e-7  # inside every log, as the reference
BLOCK = 2**24  # elements of one [top_k, neurons, concepts] block: 64 MB of float32
MARGINALS = ("layer", "uniform")
TINY = 1e-12


def _checked(P: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if P.dim() != 2 or A.dim() != 2 or P.shape[0] != A.shape[0]:
        raise CliplensError(f"similarity needs P [N, M] and A [N, K] over the same images, got {tuple(P.shape)} and "
                            f"{tuple(A.shape)}")
    if P.shape[0] < 2:
        raise CliplensError("CLIP-Dissect needs at least 2 probe images")
    return P.float(), A.float()


def _unit_columns(x: torch.Tensor, floor: float = TINY) -> torch.Tensor:
    """Columns scaled to unit L2 norm over images; a dead (all-zero) column stays zero instead of NaN."""
    return x / x.norm(dim=0, keepdim=True).clamp_min(floor)


def cos_similarity(P: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Sim = Âᵀ P̂, every column of A and P at unit norm over the probe images (docs/methods/dissect.md#similarity)."""
    P, A = _checked(P, A)
    return _unit_columns(A).T @ _unit_columns(P)


def cos_similarity_cubed(P: torch.Tensor, A: torch.Tensor, min_norm: float = 1e-3) -> torch.Tensor:
    """Columns centred over images and cubed elementwise, each divided by max(its norm, min_norm); Sim = Âᵀ P̂."""
    P, A = _checked(P, A)

    def cubed(x: torch.Tensor) -> torch.Tensor:
        return _unit_columns((x - x.mean(0, keepdim=True)) ** 3, min_norm)

    return cubed(A).T @ cubed(P)


def _top_images(A: torch.Tensor, top_k: int) -> torch.Tensor:
    """[top_k, K] probe positions of each neuron's most activating images, most activating first."""
    return A.topk(min(top_k, A.shape[0]), dim=0).indices


def _pmi(conditional: torch.Tensor, uniform: Callable[[], torch.Tensor], marginal: str, lam: float) -> torch.Tensor:
    """log p(c|E_k) − λ log p(c): the layer marginal averages p(c|E_k) over the layer's neurons; the uniform one is
    the expected log p(c|E) of a random image set, which no other neuron changes."""
    if marginal == "layer":
        prior = torch.logsumexp(conditional, dim=0, keepdim=True) - math.log(conditional.shape[0])
    else:
        prior = uniform()[None, :]
    return conditional - lam * prior


def _check_marginal(marginal: str) -> None:
    if marginal not in MARGINALS:
        raise CliplensError(f"marginal must be one of {', '.join(MARGINALS)}, got {marginal!r}")


def wpmi(P: torch.Tensor, A: torch.Tensor, top_k: int = 28, a: float = 2.0, lam: float = 0.6,
         marginal: str = "layer") -> torch.Tensor:
    """Σ_{i∈E_k} log(p(c|x_i) + 1e-7) − λ log p(c) with p(c|x_i) = softmax_c(a·P_i)
    (docs/methods/dissect.md#similarity).

    The sum over each neuron's top images is one product with a 0/1 membership matrix [K, N]."""
    P, A = _checked(P, A)
    _check_marginal(marginal)
    log_p = torch.log(torch.softmax(a * P, dim=1) + EPS)  # [N, M]
    top = _top_images(A, top_k)  # [k, K]
    member = torch.zeros(A.shape[1], A.shape[0]).scatter_(1, top.T, 1.0)  # [K, N]
    conditional = member @ log_p  # [K, M]
    return _pmi(conditional, lambda: top.shape[0] * log_p.mean(0), marginal, lam)


def soft_pi(top_k: int, p_start: float = 0.998, p_end: float = 0.97) -> torch.Tensor:
    """π_r = p_start − (r/top_k)(p_start − p_end), r = 0..top_k−1: the membership weight of the r-th top image."""
    return p_start - torch.arange(top_k, dtype=torch.float32) / top_k * (p_start - p_end)


def soft_wpmi(P: torch.Tensor, A: torch.Tensor, top_k: int = 100, a: float = 10.0, lam: float = 1.0,
              p_start: float = 0.998, p_end: float = 0.97, marginal: str = "layer") -> torch.Tensor:
    """Σ_r log(1 + π_r (p(c|x_(r)) − 1) + 1e-7) − λ log p(c) (docs/methods/dissect.md#similarity), the default.

    With fewer than top_k probe images, all of them are used and π keeps its schedule over top_k."""
    P, A = _checked(P, A)
    _check_marginal(marginal)
    prob = torch.softmax(a * P, dim=1)  # [N, M]
    top = _top_images(A, top_k)  # [k, K]
    pi = soft_pi(top_k, p_start, p_end)[: top.shape[0], None, None]  # [k, 1, 1]
    K, M = A.shape[1], P.shape[1]
    conditional = torch.empty(K, M)
    step = max(1, BLOCK // (top.shape[0] * M))
    for start in range(0, K, step):  # blocks of neurons: memory stays at BLOCK floats whatever K is
        conditional[start:start + step] = _sum_of_logs(prob[top[:, start:start + step]], pi)  # gathered [k, b, M]

    def uniform() -> torch.Tensor:  # the ranks' terms for one uniformly random image: Σ_r mean_i = mean_i Σ_r
        return torch.cat([_sum_of_logs(prob[None, i:i + step].expand(len(pi), -1, -1).clone(), pi)
                          for i in range(0, len(prob), step)]).mean(0)

    return _pmi(conditional, uniform, marginal, lam)


def _sum_of_logs(gathered: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
    """Σ_r log(1 + π_r (p_r − 1) + 1e-7) over the first dimension of `gathered` [k, ...] (overwritten), as the logs of
    products of a few ranks' factors: a log costs more than the gather and the products together, so this takes
    about half the time. Each factor is at least 1 − π_r + 1e-7, so a product of `group` of them stays above 1e-30,
    far from float32's smallest normal number (1e-38), and no factor exceeds 1 + 1e-7."""
    factors = gathered.mul_(pi).add_(1 - pi + EPS)
    group = max(1, int(math.log(1e-30) / math.log(1 - float(pi.max()) + EPS)))
    whole = len(factors) // group * group
    total = factors[:whole].unflatten(0, (-1, group)).prod(1).log_().sum(0)
    return total + factors[whole:].prod(0).log_() if whole < len(factors) else total


def rank_reorder(P: torch.Tensor, A: torch.Tensor, top_fraction: float = 0.05, p: float = 3.0, scale_p: float = 0.5,
                 concept_chunk: int = 1500, seed: int = 0, permutations: int = 5) -> torch.Tensor:
    """−(err / B) / (mean_top P)^scale_p (docs/methods/dissect.md#similarity).

    Over neuron k's top n = ⌊top_fraction·N⌋ images (at least 2), activations a sorted descending; concept c re-ranks
    them by P[:, c] and gives its r-th image the r-th largest activation (ã); err = mean |a − ã|^p, B = the same error
    averaged over `permutations` seeded random orders. A mean top cosine at or below zero is floored at 1e-6."""
    P, A = _checked(P, A)
    n = max(2, int(A.shape[0] * top_fraction))
    values, top = A.topk(n, dim=0)  # [n, K], descending
    generator = torch.Generator().manual_seed(seed)
    orders = torch.stack([torch.randperm(n, generator=generator) for _ in range(permutations)])  # [R, n]
    baseline = (values[None] - values[orders]).abs().pow(p).mean(1).mean(0)  # [K]
    K, M = A.shape[1], P.shape[1]
    sim = torch.empty(K, M)
    for c0 in range(0, M, concept_chunk):
        chunk = P[:, c0:c0 + concept_chunk]
        step = max(1, BLOCK // (n * chunk.shape[1]))
        for k0 in range(0, K, step):
            gathered = chunk[top[:, k0:k0 + step]]  # [n, b, m]
            ranks = gathered.argsort(dim=0, descending=True, stable=True).argsort(dim=0, stable=True)
            moved = values[:, k0:k0 + step, None].expand_as(gathered).gather(0, ranks)  # ã
            error = (values[:, k0:k0 + step, None] - moved).abs().pow(p).mean(0)  # [b, m]
            error = error / baseline[k0:k0 + step, None].clamp_min(TINY)
            sim[k0:k0 + step, c0:c0 + concept_chunk] = -error / gathered.mean(0).clamp_min(1e-6).pow(scale_p)
    return sim


SIMILARITIES: dict[str, Callable[..., torch.Tensor]] = {
    "soft_wpmi": soft_wpmi, "wpmi": wpmi, "cos_similarity": cos_similarity,
    "cos_similarity_cubed": cos_similarity_cubed, "rank_reorder": rank_reorder,
}
DEFAULT_SIMILARITY = "soft_wpmi"


def similarity_function(name: str) -> Callable[..., torch.Tensor]:
    if name not in SIMILARITIES:
        raise CliplensError(f"unknown similarity {name!r}; choose one of {', '.join(SIMILARITIES)}")
    return SIMILARITIES[name]

"""CLIP-Dissect's five similarity functions against literal per-neuron, per-image loops (METHODS §8.2)."""

from __future__ import annotations

import math

import pytest
import torch

from cliplens.dissect.similarity import (
    SIMILARITIES, cos_similarity, cos_similarity_cubed, rank_reorder, soft_pi, soft_wpmi, wpmi,
)
from cliplens.errors import CliplensError

N, M, K = 60, 7, 5


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    P = torch.rand(N, M, generator=generator, dtype=torch.float64) * 0.4 - 0.1
    A = torch.randn(N, K, generator=generator, dtype=torch.float64)
    return P, A


def column(x: torch.Tensor, j: int) -> list[float]:
    return [float(x[i, j]) for i in range(x.shape[0])]


def dot(u: list[float], v: list[float]) -> float:
    return sum(a * b for a, b in zip(u, v))


def slow_cos(P, A, transform=lambda col: col, floor=0.0):
    sim = torch.zeros(K, M)
    for k in range(K):
        a = transform(column(A, k))
        a = [x / max(math.sqrt(dot(a, a)), floor) for x in a]
        for c in range(M):
            p = transform(column(P, c))
            p = [x / max(math.sqrt(dot(p, p)), floor) for x in p]
            sim[k, c] = dot(a, p)
    return sim


def cube_centred(col: list[float]) -> list[float]:
    mean = sum(col) / len(col)
    return [(x - mean) ** 3 for x in col]


def slow_probabilities(P, a):
    rows = []
    for i in range(N):
        exps = [math.exp(a * float(P[i, c])) for c in range(M)]
        rows.append([e / sum(exps) for e in exps])
    return rows


def top_positions(A, k, top_k):
    return sorted(range(N), key=lambda i: -float(A[i, k]))[:top_k]


def slow_pmi(P, A, top_k, a, lam, weight, marginal):
    prob = slow_probabilities(P, a)
    conditional = [[sum(math.log(1 + weight(r) * (prob[i][c] - 1) + 1e-7)
                        for r, i in enumerate(top_positions(A, k, top_k))) for c in range(M)] for k in range(K)]
    sim = torch.zeros(K, M)
    for c in range(M):
        if marginal == "layer":
            prior = math.log(sum(math.exp(conditional[k][c]) for k in range(K)) / K)
        else:
            prior = sum(sum(math.log(1 + weight(r) * (prob[i][c] - 1) + 1e-7) for i in range(N)) / N
                        for r in range(min(top_k, N)))
        for k in range(K):
            sim[k, c] = conditional[k][c] - lam * prior
    return sim


def test_cos_similarity(data):
    P, A = data
    assert torch.allclose(cos_similarity(P, A), slow_cos(P, A), atol=1e-5)


def test_cos_similarity_cubed(data):
    P, A = data
    assert torch.allclose(cos_similarity_cubed(P, A), slow_cos(P, A, cube_centred, 1e-3), atol=1e-5)


@pytest.mark.parametrize("marginal", ["layer", "uniform"])
def test_wpmi(data, marginal):
    P, A = data
    expected = slow_pmi(P, A, 28, 2.0, 0.6, lambda r: 1.0, marginal)  # hard membership: log(p + 1e-7)
    assert torch.allclose(wpmi(P, A, marginal=marginal), expected, atol=1e-3)


@pytest.mark.parametrize("marginal", ["layer", "uniform"])
def test_soft_wpmi(data, marginal):
    P, A = data
    top_k = 100  # more than N: every image, π still scheduled over 100

    def weight(r):
        return 0.998 - r / top_k * (0.998 - 0.97)

    expected = slow_pmi(P, A, top_k, 10.0, 1.0, weight, marginal)
    assert torch.allclose(soft_wpmi(P, A, marginal=marginal), expected, rtol=1e-4, atol=1e-3)
    expected = slow_pmi(P, A, 20, 10.0, 1.0, lambda r: 0.998 - r / 20 * (0.998 - 0.97), marginal)
    assert torch.allclose(soft_wpmi(P, A, top_k=20, marginal=marginal), expected, rtol=1e-4, atol=1e-3)


def test_soft_pi_schedule():
    pi = soft_pi(100)
    assert pi[0] == pytest.approx(0.998) and pi[-1] == pytest.approx(0.97028, abs=1e-5)


def test_rank_reorder(data):
    P, A = data
    n, p, scale = 6, 3.0, 0.5  # ⌊0.1·60⌋
    generator = torch.Generator().manual_seed(11)
    orders = [torch.randperm(n, generator=generator).tolist() for _ in range(5)]
    expected = torch.zeros(K, M)
    for k in range(K):
        top = top_positions(A, k, n)
        acts = [float(A[i, k]) for i in top]  # descending
        base = sum(sum(abs(acts[i] - acts[order[i]]) ** p for i in range(n)) / n for order in orders) / 5
        for c in range(M):
            by_clip = sorted(range(n), key=lambda j: -float(P[top[j], c]))  # by_clip[r]: image with r-th highest P
            moved = [0.0] * n
            for r, j in enumerate(by_clip):
                moved[j] = acts[r]
            error = sum(abs(acts[j] - moved[j]) ** p for j in range(n)) / n / base
            mean_top = sum(float(P[i, c]) for i in top) / n
            expected[k, c] = -error / max(mean_top, 1e-6) ** scale
    assert torch.allclose(rank_reorder(P, A, top_fraction=0.1, seed=11), expected, rtol=1e-4, atol=1e-5)


def test_rank_reorder_is_seeded_and_chunking_changes_nothing(data):
    P, A = data
    first = rank_reorder(P, A, top_fraction=0.2, seed=1)
    assert torch.equal(first, rank_reorder(P, A, top_fraction=0.2, seed=1))
    assert not torch.equal(first, rank_reorder(P, A, top_fraction=0.2, seed=2))
    assert torch.allclose(first, rank_reorder(P, A, top_fraction=0.2, seed=1, concept_chunk=2))


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_a_planted_neuron_gets_its_concept(name):
    """A[:, k] = P[:, c_k] (a neuron that is exactly concept c_k's detector) is labelled c_k by every function (the
    layer holds a detector of every concept, so the layer marginal favours none)."""
    generator = torch.Generator().manual_seed(5)
    P = torch.rand(400, 12, generator=generator) * 0.3 + 0.1
    planted = torch.randperm(12, generator=generator).tolist()
    A = P[:, planted] * 5
    labels = SIMILARITIES[name](P, A).argmax(1).tolist()
    assert labels == planted


def test_dead_neuron_is_finite_and_bad_shapes_refused(data):
    P, A = data
    A = A.clone()
    A[:, 0] = 0
    for function in SIMILARITIES.values():
        assert torch.isfinite(function(P, A)).all()
    with pytest.raises(CliplensError, match="same images"):
        cos_similarity(P, A[:10])
    with pytest.raises(CliplensError, match="marginal"):
        wpmi(P, A, marginal="global")

"""Reconstruction accuracy (docs/methods/reconstruction.md#protocol) on a tiny float64 ViT: each method's maps against
literal oracles."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from sklearn.linear_model import OrthogonalMatchingPursuit

from cliplens import CliplensError
from cliplens.evaluate.ablation import Variant, VariantBank, evaluate_variants
from cliplens.evaluate.groups import select
from cliplens.evaluate.reconstruction import (
    COLUMNS, omp_bases, random_bases, reconstruction_accuracy, split_heads, svd_bases, textspan_bases, write_csv, plot,
)
from cliplens.explain.svd_poles import SVDPoles
from conftest import random_images, tiny_vit, wrap

# Float64 throughout. Projectors built by eigh/QR/SVD are exact to ~1e-14 on these O(1) pieces; 1e-10 leaves room for
# the sums over heads and still catches any wrong direction (errors of order 1e-2 and up).
TOLERANCE = 1e-10
CLASSES = 4
HEAD_DIM = 16  # d_h of the tiny ViT: a head's pieces span at most d_h directions (separate) or d_h + 3 (reference)


def labelled(images: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, int]]:
    labels = torch.randint(CLASSES, (len(images),), generator=torch.Generator().manual_seed(seed))
    return [(image, int(label)) for image, label in zip(images, labels)]


def unit_rows(count: int, dim: int, seed: int) -> torch.Tensor:
    rows = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return rows / rows.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def vit():
    return wrap(tiny_vit(), "tiny-vit")


@pytest.fixture(scope="module")
def fit_images():
    return random_images(40, 32, seed=21)


@pytest.fixture(scope="module")
def eval_images():
    return random_images(12, 32, seed=22)


@pytest.fixture(scope="module")
def pool():
    return unit_rows(40, 32, seed=5), [f"text {i}" for i in range(40)]


@pytest.fixture(scope="module")
def stats(vit, fit_images):
    return vit.collect(labelled(fit_images, 0))


def weights(dim: int = 32) -> torch.Tensor:
    return torch.randn(dim, CLASSES, generator=torch.Generator().manual_seed(9), dtype=torch.float64)


def combined(stats, variants, pieces):
    return VariantBank(variants, stats.labels, stats.mean).combine(pieces)


@pytest.mark.parametrize("convention,span", [("separate", HEAD_DIM), ("reference", HEAD_DIM + 3)])
def test_full_rank_textspan_gives_back_the_heads(vit, fit_images, eval_images, pool, convention, span):
    stats = vit.collect(labelled(fit_images, 0), convention=convention)
    analysed, earlier = split_heads(stats.labels, 2)
    bases = textspan_bases(stats, analysed, *pool, [span], rank=span)[span]
    variants = [Variant("baseline", tuple(earlier)), Variant("textspan", tuple(earlier), bases)]
    pieces = vit.decompose(eval_images, convention=convention).components
    out = combined(stats, variants, pieces)
    assert (out[:, 1] - out[:, 0]).abs().max() <= TOLERANCE
    # With fewer texts than the span the heads are not rebuilt, so the check above can fail.
    fewer = textspan_bases(stats, analysed, *pool, [span - 4], rank=span)[span - 4]
    short = combined(stats, [Variant("fewer", tuple(earlier), fewer)], pieces)[:, 0]
    assert (short - out[:, 0]).abs().max() > 1e-3


def residual_energy(stats, bases, pieces) -> float:
    """Σ over analysed heads and images of ‖δ − δUUᵀ‖², δ the piece minus its fit mean."""
    total = 0.0
    for label, basis in bases.items():
        deviation = pieces[:, stats.labels.index(label)] - stats.mean[stats.labels.index(label)]
        total += (deviation - deviation @ basis @ basis.T).square().sum().item()
    return total


def test_reconstruction_error_decreases_with_texts(vit, stats, eval_images, pool):
    analysed, _ = split_heads(stats.labels, 2)
    counts = [1, 2, 4, 8, 16]
    pieces = vit.decompose(eval_images).components
    for bases in (textspan_bases(stats, analysed, *pool, counts, rank=16),
                  random_bases(stats, analysed, 40, counts, rank=16, seed=0)):
        energies = [residual_energy(stats, bases[m], pieces) for m in counts]
        assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(energies, energies[1:])), energies
        assert energies[-1] <= TOLERANCE * energies[0]  # 16 texts fill the 16-dimensional head span
    # Prefixes of one TextSpan fit are the fits with fewer texts: the ranks grow by one per text.
    bases = textspan_bases(stats, analysed, *pool, counts, rank=16)
    assert [bases[m]["L2H0"].shape[1] for m in counts] == counts


def test_svd_truncation_equals_a_fit_with_m_components(stats, pool):
    analysed, _ = split_heads(stats.labels, 1)
    counts = [1, 3, 8]
    bases = svd_bases(stats, analysed, *pool, counts)
    for label in analysed:
        i = stats.labels.index(label)
        for m in counts:
            direct = SVDPoles(texts_per_pole=1, max_components=m).fit(stats.count, stats.mean[i], stats.covariance[i],
                                                                       *pool)
            basis = bases[m][label]
            assert (basis @ basis.T - direct.projector()).abs().max() <= TOLERANCE


def omp_oracle_projector(covariance: np.ndarray, texts: np.ndarray, m: int) -> np.ndarray:
    """The `omp` method written out: principal directions, scikit-learn OMP, variance-weighted atom scores, span."""
    variances, vectors = np.linalg.eigh(covariance)
    variances, vectors = np.clip(variances[::-1], 0, None), vectors[:, ::-1]
    singular = np.sqrt(variances)
    count = min(1 + int((np.cumsum(singular) / singular.sum() < 0.99).sum()), m)
    atoms = texts - texts.mean(0)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    importance = np.zeros(len(atoms))
    for i in range(count):
        direction = vectors[:, i] * np.sign(vectors[np.abs(vectors[:, i]).argmax(), i])
        solver = OrthogonalMatchingPursuit(n_nonzero_coefs=m, fit_intercept=False).fit(atoms.T, direction)
        importance += variances[i] * solver.coef_**2
    chosen = np.argsort(-importance, kind="stable")[: min(m, int((importance > 0).sum()))]
    q, _ = np.linalg.qr(atoms[chosen].T)
    return q @ q.T


def test_omp_maps_follow_their_definition(stats, pool):
    analysed, _ = split_heads(stats.labels, 1)
    counts = [1, 2, 5]
    bases = omp_bases(stats, analysed, pool[0], counts)
    for label in analysed[:2]:
        covariance = stats.covariance[stats.labels.index(label)].numpy()
        for m in counts:
            expected = omp_oracle_projector(covariance, pool[0].numpy(), m)
            basis = bases[m][label]
            assert basis.shape[1] == m
            # scikit-learn's OMP refits with its own Gram solver: coefficients agree to ~1e-12, not to the last ulp.
            assert np.abs(basis.numpy() @ basis.numpy().T - expected).max() <= 1e-8


def test_reconstruction_rows_and_outputs(vit, stats, eval_images, pool, tmp_path):
    data = labelled(eval_images, 1)
    counts = [1, 4, 16]
    result = reconstruction_accuracy(vit, data, weights(), stats, *pool, counts=counts, num_last_layers=2, rank=16)
    rows = result.rows
    assert [row["method"] for row in rows[:3]] == ["full model", "mean-ablation baseline", "chance"]
    assert rows[2]["accuracy"] == 1 / CLASSES
    assert [(row["method"], row["texts"]) for row in rows[3:]] == [
        (method, m) for method in ("textspan", "svd", "omp", "random") for m in counts
    ]
    # The baseline row is the mean-ablation of every head before the last two layers, scored independently.
    baseline = evaluate_variants(vit, data, [Variant("b", tuple(select(stats.labels, ["attn[:1]"])))], weights(), stats)
    assert rows[1]["correct"] == baseline.correct[0]
    assert rows[0]["correct"] == baseline.full_correct
    # At 16 texts TextSpan and random vectors fill the head span, so they score exactly the baseline.
    full = {row["method"]: row["correct"] for row in rows if row["texts"] == 16}
    assert full["textspan"] == full["random"] == rows[1]["correct"]
    assert result.metadata["analysed_heads"] == [f"L{l}H{h}" for l in (1, 2) for h in range(4)]
    assert result.metadata["in_sample"] is False and result.metadata["fit_images"] == 40

    with open(write_csv(tmp_path / "r.csv", result)) as stream:
        table = list(csv.DictReader(stream))
    assert tuple(table[0]) == COLUMNS and len(table) == 3 + 4 * len(counts)
    png = plot(tmp_path / "r.png", result).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_requests_are_refused(vit, stats, eval_images, fit_images, pool):
    data = labelled(eval_images, 1)

    def run(stats=stats, num_last_layers=2, **options):
        return reconstruction_accuracy(vit, data, weights(), stats, *pool, num_last_layers=num_last_layers, **options)

    with pytest.raises(CliplensError, match="exceeds the span"):
        run(counts=[1, 33], rank=80)  # d = 32
    with pytest.raises(CliplensError, match="exceeds the span"):
        run(counts=[17], rank=16)
    with pytest.raises(CliplensError, match="--num-last-layers"):
        run(counts=[1], num_last_layers=4)
    with pytest.raises(CliplensError, match="unknown reconstruction method"):
        run(counts=[1], methods=["textspan", "pca"])
    with pytest.raises(CliplensError, match="made with other .*, but this is tiny-vit"):
        run(counts=[1], stats=wrap(tiny_vit(seed=1), "other").collect(labelled(fit_images[:4], 0)))
    with pytest.raises(CliplensError, match="per-head statistics"):
        run(counts=[1], stats=vit.collect(labelled(fit_images[:4], 0), granularity="layer"))

"""SVD poles (docs/methods/svd-poles.md) from a piece's covariance, checked against the SVD of the per-image data, in
float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliplens.errors import CliplensError
from cliplens.explain.svd_poles import (
    SVDPoles,
    component_poles,
    nuclear_rank,
    prepare_texts,
    row_space_projector,
    signed_components,
)
from cliplens.explain.tables import description_rows
from cliplens.stats.moments import Moments

TEXTS = [f"text {i}" for i in range(500)]


def statistics(X):
    moments = Moments(1, X.shape[1])
    moments.update(torch.from_numpy(X)[:, None])
    return moments.count, moments.mean[0], moments.covariance[0]


def low_rank_data(rng, n, d, strong):
    """A mean offset, `strong` directions with spread variances and a faint rest, so that 99% of the nuclear mass
    is reached at exactly `strong` components."""
    scales = np.concatenate([np.geomspace(5.0, 1.0, strong), np.full(d - strong, 1e-4)])
    rotation = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return 2.0 * rng.standard_normal(d) + (rng.standard_normal((n, d)) * scales) @ rotation


def unit_rows(rng, m, d):
    T = rng.standard_normal((m, d))
    return T / np.linalg.norm(T, axis=1, keepdims=True)


def test_components_and_singular_values_match_the_data_svd():
    rng = np.random.default_rng(0)
    X = low_rank_data(rng, 400, 10, strong=10)
    fitted = SVDPoles(mass=1.0, max_components=10).fit(*statistics(X), unit_rows(rng, 30, 10), TEXTS[:30])
    _, S, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    # sqrt(n·λ) from a well-conditioned fp64 eigh against the data's own SVD: both are backward stable, so they
    # agree to ~1e-14 relative to S_max = O(100); 1e-10 absolute would catch any wrong factor or ordering.
    np.testing.assert_allclose(fitted.singular_values_.numpy(), S, rtol=0, atol=1e-10)
    alignment = np.abs(np.sum(fitted.components_.numpy() * Vt, axis=1))
    np.testing.assert_allclose(alignment, 1.0, rtol=0, atol=1e-10)  # same axes; signs are set by the sign rule
    largest = fitted.components_.abs().argmax(dim=1)
    assert torch.all(fitted.components_.gather(1, largest[:, None]) > 0)


def test_distinct_top_texts_give_the_pca_truncation():
    rng = np.random.default_rng(1)
    X = low_rank_data(rng, 300, 12, strong=5)
    T = unit_rows(rng, 400, 12)  # many texts: the top text of each component differs
    fitted = SVDPoles().fit(*statistics(X), T, TEXTS[:400])
    assert fitted.n_components_ == 5
    assert len(set(fitted.reconstruction_ids_.tolist())) == 5  # the premise of the claim
    # Π from an orthogonal r×r factor: I up to a few eps.
    torch.testing.assert_close(fitted.text_projector_, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-13)
    U, S, Vt = np.linalg.svd(X - X.mean(0), full_matrices=False)
    truncation = X.mean(0) + (U[:, :5] * S[:5]) @ Vt[:5]
    # Two fp64 routes to the same rank-5 projection of data with entries O(10): ~1e-13 apart.
    np.testing.assert_allclose(fitted.reconstruct(X).numpy(), truncation, rtol=0, atol=1e-10)


def test_repeated_top_texts_give_the_literal_pseudo_inverse_projector():
    rng = np.random.default_rng(2)
    X = low_rank_data(rng, 200, 8, strong=4)
    T = unit_rows(rng, 3, 8)  # 3 texts for 4 components: some component shares its top text
    fitted = SVDPoles(texts_per_pole=2).fit(*statistics(X), T, TEXTS[:3])
    Q = fitted.coordinates_[fitted.reconstruction_ids_].numpy()
    literal = Q.T @ np.linalg.pinv(Q @ Q.T) @ Q
    distinct = len(set(fitted.reconstruction_ids_.tolist()))
    assert distinct < fitted.n_components_
    assert np.linalg.matrix_rank(fitted.text_projector_.numpy()) == distinct
    # pinv of QQᵀ squares Q's condition number (entries O(1)): agreement to ~1e-12, so 1e-9 is a safe claim.
    np.testing.assert_allclose(fitted.text_projector_.numpy(), literal, rtol=0, atol=1e-9)


def test_row_space_projector_drops_collinear_rows():
    rows = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    direction = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64) / 5**0.5
    expected = torch.outer(direction, direction) + torch.diag(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(row_space_projector(rows), expected, rtol=0, atol=1e-15)


def test_flipping_a_component_swaps_its_poles():
    coordinates = torch.tensor(
        [[0.9, 0.3], [-0.2, -0.8], [0.1, 0.5], [-0.5, -0.1], [0.4, 0.2]], dtype=torch.float64
    )  # column 0: positive pole dominant (0.9 > 0.5); column 1: negative pole dominant (0.8 > 0.5)
    texts = ["a", "b", "c", "d", "e"]
    poles = component_poles(coordinates, texts, 2)
    assert [(p.sign, p.texts) for p in poles[0]] == [(1, ("a", "e")), (-1, ("d", "b"))]
    assert [(p.sign, p.texts) for p in poles[1]] == [(-1, ("b", "d")), (1, ("c", "a"))]
    assert poles[0][0].scores == (0.9, 0.4)

    flipped = coordinates.clone()
    flipped[:, 1] *= -1
    flipped_poles = component_poles(flipped, texts, 2)
    assert flipped_poles[0] == poles[0]  # the other component is untouched
    for before, after in zip(poles[1], flipped_poles[1]):  # same texts at the same end, now with the other sign
        assert after.sign == -before.sign and after.ids == before.ids
        assert after.scores == tuple(-s for s in before.scores)


def test_sign_rule_is_deterministic():
    vectors = torch.tensor([[0.1, -0.9, 0.3], [0.5, 0.2, -0.5]], dtype=torch.float64)
    expected = torch.tensor([[-0.1, 0.9, -0.3], [0.5, 0.2, -0.5]], dtype=torch.float64)
    torch.testing.assert_close(signed_components(vectors), expected, rtol=0, atol=0)
    torch.testing.assert_close(signed_components(-vectors), expected, rtol=0, atol=0)


def test_rank_rule_on_a_hand_computed_example():
    # S = [4, 3, 2, 1]: cumulative shares of the nuclear mass 0.4, 0.7, 0.9, 1.0.
    S = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    assert nuclear_rank(S, 0.99, 80) == 4  # 0.4, 0.7, 0.9 < 0.99
    assert nuclear_rank(S, 0.8, 80) == 3  # 0.4, 0.7 < 0.8
    assert nuclear_rank(S, 0.5, 80) == 2  # 0.4 < 0.5
    assert nuclear_rank(S, 0.3, 80) == 1  # nothing below: still one component
    assert nuclear_rank(S, 0.99, 2) == 2  # the cap

    # The same spectrum built into a covariance: λ_i = S_i² / n in a random orthonormal basis.
    n = 50
    basis = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    covariance = basis @ torch.diag(S**2 / n) @ basis.T
    pool, texts = torch.eye(4, dtype=torch.float64), TEXTS[:4]
    squared = SVDPoles(texts_per_pole=1, mass=0.8).fit(n, torch.zeros(4), covariance, pool, texts)
    assert squared.n_components_ == 3
    # Eigenvalues of an exactly built 4×4 covariance: rounding of order 1e-15 relative to 16.
    torch.testing.assert_close(squared.strength_abs_, torch.tensor([16.0, 9.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(squared.strength_rel_, 100 * torch.tensor([16.0, 9.0, 4.0], dtype=torch.float64) / 29)
    plain = SVDPoles(texts_per_pole=1, mass=0.8, strength="singular").fit(n, torch.zeros(4), covariance, pool, texts)
    torch.testing.assert_close(plain.strength_rel_, 100 * torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64) / 9)
    assert [c.strength_abs for c in plain.components_poles_] == pytest.approx([4.0, 3.0, 2.0], rel=1e-12)


def test_text_modes():
    pool = torch.tensor([[3.0, 0.0], [1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)
    centred = prepare_texts(pool, "center")
    torch.testing.assert_close(centred, pool - torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(prepare_texts(pool, "normalize").norm(dim=1), torch.ones(3, dtype=torch.float64))
    both = prepare_texts(torch.tensor([[3.0, 0.0], [1.0, 2.0]], dtype=torch.float64), "center_normalize")
    half = 0.5**0.5
    torch.testing.assert_close(both, torch.tensor([[half, -half], [-half, half]], dtype=torch.float64))
    with pytest.raises(CliplensError, match="zero text vector"):
        prepare_texts(pool, "center_normalize")  # the third text is the pool's mean


def test_description_rows_name_the_poles():
    rng = np.random.default_rng(3)
    X = low_rank_data(rng, 200, 6, strong=3)
    fitted = SVDPoles(texts_per_pole=2).fit(*statistics(X), unit_rows(rng, 20, 6), TEXTS[:20])
    rows = description_rows({"L1H2": fitted})
    assert len(rows) == fitted.n_components_ * 2 * 2
    first = fitted.components_poles_[0].poles[0]
    assert rows[0] == {
        "label": "L1H2",
        "layer": 1,
        "head": 2,
        "neuron": "",
        "method": "svd",
        "direction": 0,
        "pole": "+" if first.sign > 0 else "-",
        "rank": 0,
        "description": first.texts[0],
        "similarity": first.scores[0],
        "coefficient": "",
        "variance_explained": "",
    }
    assert {row["pole"] for row in rows} == {"+", "-"}
    # within a component and pole, rank counts the texts from the most extreme
    assert [row["rank"] for row in rows[:4]] == [0, 1, 0, 1]
    assert [row["direction"] for row in rows] == sorted(row["direction"] for row in rows)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SVDPoles(text_mode="centre"), "text_mode"),
        (lambda: SVDPoles(strength="abs"), "strength"),
        (lambda: SVDPoles(mass=0.0), "mass"),
        (lambda: SVDPoles(mass=1.5), "mass"),
        (lambda: SVDPoles(texts_per_pole=0), "positive integer"),
        (lambda: SVDPoles(texts_per_pole=5).fit(9, torch.zeros(4), torch.eye(4), torch.eye(4), TEXTS[:4]), "pool"),
        (lambda: SVDPoles().fit(9, torch.zeros(4), torch.eye(4), torch.eye(3), TEXTS[:3]), "text embeddings must"),
        (lambda: SVDPoles().fit(9, torch.zeros(3), torch.eye(4), torch.eye(4), TEXTS[:4]), "covariance"),
        (lambda: SVDPoles().fit(9, torch.zeros(4), torch.eye(4) * torch.nan, torch.eye(4), TEXTS[:4]), "NaN"),
        (lambda: SVDPoles().reconstruct(torch.zeros(4)), "not fitted"),
    ],
)
def test_bad_input_raises(make, message):
    with pytest.raises(CliplensError, match=message):
        make()

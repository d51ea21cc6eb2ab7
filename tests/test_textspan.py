"""TextSpan from statistics (docs/methods/textspan.md#algorithm) against a literal per-image implementation of
docs/methods/textspan.md, in float64."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from cliplens.errors import CliplensError
from cliplens.explain.tables import COLUMNS, description_rows, unit_columns, write_descriptions
from cliplens.explain.base import fit_pieces
from cliplens.explain.textspan import TextSpan
from cliplens.stats.moments import Moments


def textspan_per_image(X, T, m, rank, centred_span=False, centred_texts=False):
    """docs/methods/textspan.md written out on per-image pieces: ids, the picked (unnormalised) directions and the
    reconstruction R."""
    X = np.array(X, dtype=np.float64)
    T = np.array(T, dtype=np.float64)
    mu = X.mean(0)
    if centred_texts:
        T = T - T.mean(0)
    _, _, Vt = np.linalg.svd(X - mu if centred_span else X, full_matrices=False)
    V = Vt[:rank]
    T = T @ V.T @ V
    X = X - mu
    R = np.tile(mu, (len(X), 1))
    ids, directions = [], []
    for _ in range(m):
        scores = (X @ T.T).std(axis=0)
        j = int(np.argmax(scores))
        t = T[j].copy()
        ids.append(j)
        directions.append(t)
        beta = X @ t / (t @ t)
        R = R + np.outer(beta, t)
        X = X - np.outer(beta, t)
        T = T - np.outer(T @ t / (t @ t), t)
    return ids, np.stack(directions), R


def statistics(X):
    """(count, mean, covariance) of pieces X [n, d] through the package's own streaming moments."""
    moments = Moments(1, X.shape[1])
    for batch in np.array_split(X, 3):  # several batches, so the merge path is exercised too
        moments.update(torch.from_numpy(batch)[:, None])
    return moments.count, moments.mean[0], moments.covariance[0]


def unit_rows(rng, m, d):
    T = rng.standard_normal((m, d))
    return T / np.linalg.norm(T, axis=1, keepdims=True)


def anisotropic_data(rng, n, d, offset=3.0):
    """Pieces with a strongly non-zero mean and a spread spectrum, like a head's output."""
    scales = np.geomspace(4.0, 0.05, d)
    return offset * rng.standard_normal(d) + (rng.standard_normal((n, d)) * scales) @ np.linalg.qr(
        rng.standard_normal((d, d))
    )[0]


TEXTS = [f"text {i}" for i in range(200)]


@pytest.mark.parametrize("pclens_port", [False, True])
def test_covariance_form_equals_per_image_oracle(pclens_port):
    rng = np.random.default_rng(0)
    X = anisotropic_data(rng, 300, 12)
    T = unit_rows(rng, 50, 12)
    rank, m = 8, 8  # rank < d so the projection onto the span matters; m = rank runs the span dry
    ids, directions, R = textspan_per_image(X, T, m, rank, centred_span=pclens_port, centred_texts=pclens_port)
    fitted = TextSpan(n_texts=m, rank=rank, center_texts=pclens_port, centered_span=pclens_port).fit(
        *statistics(X), T, TEXTS[:50]
    )
    assert fitted.ids_ == ids
    assert fitted.texts_ == [TEXTS[j] for j in ids]
    # Both sides are well-conditioned fp64 computations of the same quantities (|entries| ≲ 10, an eigh against an
    # SVD, ~10 deflation steps): their differences sit at ~1e-13; 1e-10 leaves room without hiding a real error,
    # which would show at the size of the entries.
    np.testing.assert_allclose(fitted.directions_.numpy(), directions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fitted.reconstruct(X).numpy(), R, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fitted.mean_.numpy(), X.mean(0), rtol=0, atol=1e-12)


def test_planted_text_directions_are_recovered_in_order():
    rng = np.random.default_rng(1)
    d, n = 32, 2000
    T = unit_rows(rng, 100, d)
    planted = [17, 3, 88, 42, 60]
    stds = [8.0, 4.0, 2.0, 1.0, 0.5]
    codes = rng.standard_normal((n, len(planted))) * stds
    X = 0.7 * rng.standard_normal(d) + codes @ T[planted] + 0.01 * rng.standard_normal((n, d))
    fitted = TextSpan(n_texts=5).fit(*statistics(X), T, TEXTS[:100])
    assert fitted.ids_ == planted
    assert torch.all(fitted.variance_explained_[:-1] > fitted.variance_explained_[1:])
    # Five texts carry all the variance but the noise (0.01² per dimension, tiny against the planted variances).
    assert fitted.variance_explained_.sum() > 0.999


def test_directions_are_orthogonal():
    rng = np.random.default_rng(2)
    X = anisotropic_data(rng, 200, 20)
    fitted = TextSpan(n_texts=20, rank=20).fit(*statistics(X), unit_rows(rng, 120, 20), TEXTS[:120])
    units = fitted.directions_ / fitted.directions_.norm(dim=1, keepdim=True)
    off_diagonal = units @ units.T - torch.eye(20, dtype=torch.float64)
    assert off_diagonal.abs().max() <= 1e-8
    projector = fitted.projector()
    torch.testing.assert_close(projector @ projector, projector, rtol=0, atol=1e-12)  # a projector: rounding only


def test_residual_energy_never_increases_and_matches_variance_explained():
    rng = np.random.default_rng(3)
    X = anisotropic_data(rng, 250, 10)
    T = unit_rows(rng, 40, 10)
    stats = statistics(X)
    centred_energy = ((X - X.mean(0)) ** 2).sum()
    residuals = []
    for m in range(1, 11):
        fitted = TextSpan(n_texts=m).fit(*stats, T, TEXTS[:40])
        residual = ((X - fitted.reconstruct(X).numpy()) ** 2).sum()
        # Orthogonal directions split the variance: the residual is what the explained shares leave. Both sides
        # carry rounding of order (m + d)·eps of the total energy (1 − Σ shares cancels to 0 at m = d), so an
        # error above 1e-12 of the total is real.
        predicted = centred_energy * (1 - fitted.variance_explained_.sum().item())
        assert abs(residual - predicted) <= 1e-12 * centred_energy
        residuals.append(residual)
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(residuals, residuals[1:]))
    assert residuals[-1] <= 1e-12 * centred_energy  # m = d texts rebuild every piece


def test_fit_pieces_fits_each_label_like_a_single_fit():
    rng = np.random.default_rng(4)
    pieces = np.stack([anisotropic_data(rng, 150, 8) for _ in range(3)], axis=1)  # [n, C, d]
    moments = Moments(3, 8)
    moments.update(torch.from_numpy(pieces))
    T = unit_rows(rng, 30, 8)
    labels = ["L0H0", "L0H1", "bias"]
    fitted = fit_pieces(TextSpan(n_texts=3, rank=6), moments, labels, T, TEXTS[:30], only=["L0H1", "L0H0"])
    assert list(fitted) == ["L0H1", "L0H0"]
    single = TextSpan(n_texts=3, rank=6).fit(*statistics(pieces[:, 1]), T, TEXTS[:30])
    assert fitted["L0H1"].ids_ == single.ids_
    assert fitted["L0H1"].get_params() == single.get_params()
    with pytest.raises(CliplensError, match="no piece labelled"):
        fit_pieces(TextSpan(n_texts=3), moments, labels, T, TEXTS[:30], only=["L9H9"])
    with pytest.raises(CliplensError, match="labels for 3 pieces"):
        fit_pieces(TextSpan(n_texts=3), moments, labels[:2], T, TEXTS[:30])


def test_description_table_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    X = anisotropic_data(rng, 100, 6)
    T = unit_rows(rng, 10, 6)
    fitted = {"L3H7": TextSpan(n_texts=2).fit(*statistics(X), T, TEXTS[:10])}
    path = write_descriptions(tmp_path / "heads.csv", description_rows(fitted))
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["label"], r["layer"], r["head"], r["neuron"], r["rank"], r["method"]) for r in rows] == [
        ("L3H7", "3", "7", "", "0", "textspan"),
        ("L3H7", "3", "7", "", "1", "textspan"),
    ]
    assert [r["description"] for r in rows] == fitted["L3H7"].texts_
    assert [float(r["variance_explained"]) for r in rows] == fitted["L3H7"].variance_explained_.tolist()
    assert {(r["similarity"], r["coefficient"], r["direction"], r["pole"]) for r in rows} == {("", "", "", "")}


@pytest.mark.parametrize(
    "label, numbers",
    [
        ("L3H7", (3, 7, "")),
        ("L11N3071", (11, "", 3071)),
        ("H1N5", ("", 1, 5)),
        ("N17", ("", "", 17)),
        ("L2.mlp", (2, "", "")),
        ("bias", ("", "", "")),
        ("L3H7T4", ("", "", "")),
    ],
)
def test_unit_columns_never_mix_kinds(label, numbers):
    """layer holds only layer numbers, head only heads, neuron only neurons (docs/outputs.md#descriptions)."""
    columns = unit_columns(label)
    assert columns["label"] == label and (columns["layer"], columns["head"], columns["neuron"]) == numbers


def test_bad_rows_are_refused(tmp_path):
    with pytest.raises(CliplensError, match="columns unit"):
        write_descriptions(tmp_path / "bad.csv", [{"layer": 0, "unit": 1}])
    assert not (tmp_path / "bad.csv").exists()


GOOD = dict(count=10, mean=torch.zeros(4), covariance=torch.eye(4, dtype=torch.float64), texts=torch.eye(4))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(mean=torch.zeros(5)), "covariance"),
        (dict(covariance=torch.eye(4)[:3]), "covariance"),
        (dict(texts=torch.eye(5)), "text embeddings must be"),
        (dict(covariance=torch.full((4, 4), float("nan"))), "NaN"),
        (dict(texts=torch.eye(4) * float("inf")), "NaN"),
        (dict(count=0), "at least one image"),
        (dict(covariance=torch.zeros(4, 4)), "does not vary"),
        (dict(texts=torch.eye(4)[:2]), "exceeds the text pool"),
    ],
)
def test_bad_input_raises(change, message):
    args = {**GOOD, **change}
    pool = args["texts"]
    with pytest.raises(CliplensError, match=message):
        TextSpan(n_texts=3).fit(args["count"], args["mean"], args["covariance"], pool, TEXTS[: len(pool)])


def test_bad_settings_and_use_raise():
    with pytest.raises(CliplensError, match="one text per embedding"):
        TextSpan(n_texts=2).fit(10, torch.zeros(4), torch.eye(4), torch.eye(4), TEXTS[:3])
    with pytest.raises(CliplensError, match="span rank"):
        TextSpan(n_texts=3, rank=2).fit(10, torch.zeros(4), torch.eye(4), torch.eye(4), TEXTS[:4])
    with pytest.raises(CliplensError, match="span only 2 directions"):
        pool = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 0]])
        TextSpan(n_texts=3).fit(10, torch.zeros(4), torch.eye(4), pool, TEXTS[:3])
    with pytest.raises(CliplensError, match="positive integer"):
        TextSpan(n_texts=0)
    with pytest.raises(CliplensError, match="not fitted"):
        TextSpan().reconstruct(torch.zeros(4))
    with pytest.raises(CliplensError, match="last dimension 4"):
        TextSpan(n_texts=1).fit(10, torch.zeros(4), torch.eye(4), torch.eye(4), TEXTS[:4]).reconstruct(torch.zeros(3))

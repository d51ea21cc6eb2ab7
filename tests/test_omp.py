"""Batched OMP (docs/methods/omp.md) against a literal per-target OMP and scikit-learn, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import SparseCoder
from sklearn.linear_model import orthogonal_mp_gram

from cliplens.errors import CliplensError
from cliplens.explain.omp import (
    SparseTextDecomposition,
    orthogonal_matching_pursuit,
    prepare_dictionary,
    reconstruct_from_codes,
)

# Well-conditioned problems: 20-dimensional, a few dozen random unit atoms, at most 10 picks. The picked blocks have
# condition numbers below 4 (measured on these seeds), so two float64 solvers agree to ~1e2·eps; 1e-10 is the
# project's fp64 bar and still far below any coefficient (|coef| > 0.2 here).
EXACT = 1e-10
# The literal oracle refuses problems whose two best correlations are closer than this: below it the pick could
# legitimately differ between two correct float64 implementations (rounding ≈ 1e-15), so "same support" means nothing.
TIE_GAP = 1e-6


def random_problem(seed: int, atoms: int = 60, dim: int = 20, targets: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    dictionary = torch.randn(atoms, dim, generator=generator, dtype=torch.float64)
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    return torch.randn(targets, dim, generator=generator, dtype=torch.float64), dictionary


def literal_omp(y: np.ndarray, dictionary: np.ndarray, k: int) -> tuple[list[int], np.ndarray, list[float]]:
    """Textbook OMP for one target: pick, refit by least squares, repeat. Returns picks, coefs and ‖r‖ by step."""
    support: list[int] = []
    residual = y.copy()
    norms = [float(np.linalg.norm(residual))]
    coef = np.zeros(0)
    for _ in range(k):
        scores = np.abs(dictionary @ residual)
        scores[support] = -1.0
        ranked = np.sort(scores)
        assert ranked[-1] - ranked[-2] > TIE_GAP, "near-tie: pick another seed"
        support.append(int(np.argmax(scores)))
        coef = np.linalg.lstsq(dictionary[support].T, y, rcond=None)[0]
        residual = y - coef @ dictionary[support]
        norms.append(float(np.linalg.norm(residual)))
    return support, coef, norms


def dense(ids: torch.Tensor, coef: torch.Tensor, atoms: int) -> np.ndarray:
    out = np.zeros((len(ids), atoms))
    for b in range(len(ids)):
        used = ids[b] >= 0
        out[b, ids[b][used].numpy()] = coef[b][used].numpy()
    return out


@pytest.mark.parametrize("seed,k", [(0, 1), (1, 5), (2, 8)])
def test_matches_literal_oracle_and_scikit_learn(seed: int, k: int) -> None:
    targets, dictionary = random_problem(seed)
    codes = orthogonal_matching_pursuit(targets, dictionary, k)
    oracle = np.zeros((len(targets), len(dictionary)))
    for b, y in enumerate(targets.numpy()):
        support, coef, _ = literal_omp(y, dictionary.numpy(), k)
        oracle[b, support] = coef
        assert set(codes.ids[b].tolist()) == set(support)
    coder = SparseCoder(dictionary=dictionary.numpy(), transform_algorithm="omp", transform_n_nonzero_coefs=k)
    reference = coder.transform(targets.numpy())
    assert np.abs(dense(codes.ids, codes.coef, len(dictionary)) - oracle).max() < EXACT
    assert np.abs(reference - oracle).max() < EXACT


def test_exactly_k_distinct_nonzero_atoms_sorted_by_magnitude() -> None:
    targets, dictionary = random_problem(3, targets=9)
    codes = orthogonal_matching_pursuit(targets, dictionary, 8)
    assert codes.ids.dtype == torch.int64 and codes.ids.shape == (9, 8)
    assert (codes.n_nonzero == 8).all()
    assert all(len(set(row)) == 8 and min(row) >= 0 for row in codes.ids.tolist())
    assert (codes.coef != 0).all()
    magnitudes = codes.coef.abs()
    assert (magnitudes[:, :-1] >= magnitudes[:, 1:]).all()


def test_residual_never_grows_and_supports_nest() -> None:
    targets, dictionary = random_problem(4)
    previous_norms = targets.norm(dim=1)
    previous_support = [set() for _ in targets]
    for k in range(1, 11):
        codes = orthogonal_matching_pursuit(targets, dictionary, k)
        norms = (targets - reconstruct_from_codes(codes.ids, codes.coef, dictionary)).norm(dim=1)
        # Strictly non-increasing in exact arithmetic; allow the rounding of a 20-term sum.
        assert (norms <= previous_norms + 1e-12).all()
        supports = [set(row) for row in codes.ids.tolist()]
        assert all(old < new for old, new in zip(previous_support, supports))
        previous_norms, previous_support = norms, supports
    for b, y in enumerate(targets.numpy()):  # and equal the oracle's per-step norms at the last step
        assert previous_norms[b].item() == pytest.approx(literal_omp(y, dictionary.numpy(), 10)[2][-1], abs=EXACT)


def test_fidelity_is_cosine_of_target_and_reconstruction() -> None:
    targets, dictionary = random_problem(5)
    codes = orthogonal_matching_pursuit(targets, dictionary, 6)
    rebuilt = reconstruct_from_codes(codes.ids, codes.coef, dictionary)
    expected = torch.nn.functional.cosine_similarity(targets, rebuilt, dim=1)
    assert torch.allclose(codes.fidelity, expected, atol=1e-14, rtol=0)
    assert (codes.fidelity > 0).all() and (codes.fidelity < 1).all()


def test_ties_go_to_the_lowest_atom_id() -> None:
    # 600 atoms span three blocks of the blocked argmax (256 atoms each): ties must resolve across blocks too.
    targets, dictionary = random_problem(6, atoms=600, targets=2)
    dictionary[40] = dictionary[11]  # exact duplicate, same block
    dictionary[25] = -dictionary[11]  # same |correlation|, opposite sign, lower id than 40
    dictionary[300] = dictionary[530]  # duplicate in an earlier block
    dictionary[520] = -dictionary[530]
    targets[0] = 0.95 * dictionary[11] + 0.05 * targets[0] / targets[0].norm()
    targets[1] = 0.95 * dictionary[530] + 0.05 * targets[1] / targets[1].norm()
    codes = orthogonal_matching_pursuit(targets, dictionary, 4)
    assert codes.ids[:, 0].tolist() == [11, 300]
    # copies of a picked atom lie in its span: never picked again
    assert not {25, 40} & set(codes.ids[0].tolist()) and not {520, 530} & set(codes.ids[1].tolist())


def test_float64_picks_survive_float32_screening() -> None:
    # float64 work screens atoms in float32 and rescores the near-best ones in float64. Twins 1e-7 apart are closer
    # than float32 can order (its error here is ~1e-7 relative): rescoring must find the float64 best (target 0), in
    # another block too (target 2), and with more exact copies than one rescoring holds (target 1).
    targets, dictionary = random_problem(15, atoms=600, targets=3)
    generator = torch.Generator().manual_seed(16)
    for twin, original in ((7, 5), (8, 5), (9, 5), (450, 50)):
        dictionary[twin] = dictionary[original] + 1e-7 * torch.randn(20, generator=generator, dtype=torch.float64)
    dictionary[10:30] = dictionary[31]
    dictionary /= dictionary.norm(dim=1, keepdim=True)
    for b, atom in enumerate((5, 31, 50)):
        targets[b] = 0.95 * dictionary[atom] + 0.05 * targets[b] / targets[b].norm()
    codes = orthogonal_matching_pursuit(targets, dictionary, 3)
    first = [int(np.argmax(np.abs(dictionary.numpy() @ y))) for y in targets.numpy()]  # float64, lowest id on ties
    assert first[0] in (5, 7, 8, 9) and first[1] == 10 and first[2] in (50, 450)
    single = [orthogonal_matching_pursuit(targets[b : b + 1], dictionary, 1).ids[0, 0].item() for b in range(3)]
    assert single == first
    assert all(first[b] in codes.ids[b].tolist() for b in range(3))


def test_stops_early_when_the_target_is_in_the_span() -> None:
    _, dictionary = random_problem(7)
    dictionary[:2] = torch.eye(20, dtype=torch.float64)[:2]
    planted = 0.6 * dictionary[0] + 0.8 * dictionary[1]
    targets, _ = random_problem(8, targets=4)
    targets[2] = planted  # one early stopper in the middle of a batch of running targets
    codes = orthogonal_matching_pursuit(targets, dictionary, 8, batch_size=3)
    assert codes.n_nonzero.tolist() == [8, 8, 2, 8]
    assert codes.ids[2].tolist() == [1, 0] + [-1] * 6
    assert torch.allclose(codes.coef[2], torch.tensor([0.8, 0.6] + [0.0] * 6, dtype=torch.float64), atol=1e-15)
    assert codes.fidelity[2].item() == pytest.approx(1.0, abs=1e-15)
    for b in range(4):  # batching and masking change nothing: each row equals its own single-target solve
        alone = orthogonal_matching_pursuit(targets[b : b + 1], dictionary, 8)
        assert codes.ids[b].tolist() == alone.ids[0].tolist()
        assert torch.allclose(codes.coef[b], alone.coef[0], atol=EXACT, rtol=0)


def test_more_atoms_than_dimensions_stops_at_the_rank() -> None:
    targets, dictionary = random_problem(9, atoms=30, dim=6, targets=3)
    codes = orthogonal_matching_pursuit(targets, dictionary, 12)
    assert codes.n_nonzero.tolist() == [6, 6, 6]
    assert torch.allclose(codes.fidelity, torch.ones(3, dtype=torch.float64), atol=1e-12)


def test_tolerance_stops_like_scikit_learn() -> None:
    targets, dictionary = random_problem(10)
    tol = 0.5
    codes = orthogonal_matching_pursuit(targets, dictionary, len(dictionary), tol=tol)
    norms = (targets - reconstruct_from_codes(codes.ids, codes.coef, dictionary)).norm(dim=1)
    assert (norms <= tol).all()
    for b, y in enumerate(targets.numpy()):  # and not one step later than needed
        used = codes.n_nonzero[b].item()
        assert literal_omp(y, dictionary.numpy(), used - 1)[2][-1] > tol
    # scikit-learn's tol is the squared residual norm.
    gram = (dictionary @ dictionary.T).numpy()
    reference = orthogonal_mp_gram(
        gram, (dictionary @ targets.T).numpy(), tol=tol**2, norms_squared=(targets**2).sum(1).numpy()
    ).T
    assert np.abs(dense(codes.ids, codes.coef, len(dictionary)) - reference).max() < EXACT


def test_float32_gives_the_float64_codes_on_a_well_separated_problem() -> None:
    targets, dictionary = random_problem(11)
    exact = orthogonal_matching_pursuit(targets, dictionary, 5)
    single = orthogonal_matching_pursuit(targets.float(), dictionary.float(), 5)
    assert single.coef.dtype == torch.float32 and single.fidelity.dtype == torch.float32
    assert single.ids.tolist() == exact.ids.tolist()
    # float32 refit of a well-conditioned 5×5 system: ~10 eps32 relative.
    assert torch.allclose(single.coef.double(), exact.coef, atol=1e-5, rtol=0)


def test_dictionary_row_and_axis0_conventions() -> None:
    generator = torch.Generator().manual_seed(12)
    pool = torch.randn(50, 8, generator=generator, dtype=torch.float64)
    pool /= pool.norm(dim=1, keepdim=True)
    e = pool.numpy()
    centred = e - e.mean(axis=0)
    # The second-order reference: coefficient · centred / (per-dimension norm over the texts), coefficient = 100.
    reference = 100.0 * centred / np.linalg.norm(centred, axis=0, keepdims=True)
    axis0 = prepare_dictionary(pool, "axis0", scale=100.0)
    assert np.abs(axis0.numpy() - reference).max() < 1e-12
    # Unit columns put the total squared mass at d·scale², so atoms average scale·√(d/M) in length
    # (docs/methods/omp.md#dictionary).
    assert (axis0**2).sum(1).mean().item() == pytest.approx(100.0**2 * 8 / 50, rel=1e-12)
    row = prepare_dictionary(pool)
    assert np.abs(row.numpy() - centred / np.linalg.norm(centred, axis=1, keepdims=True)).max() < 1e-15
    assert torch.allclose(row.norm(dim=1), torch.ones(50, dtype=torch.float64), atol=1e-15, rtol=0)


def test_explainer_fits_texts_directions_and_reconstruction() -> None:
    targets, pool = random_problem(13, atoms=40, dim=12, targets=3)
    texts = [f"text {i}" for i in range(40)]
    explainer = SparseTextDecomposition(n_atoms=4, dict_norm="axis0", scale=100.0).fit(targets.numpy(), pool, texts)
    direct = orthogonal_matching_pursuit(targets, prepare_dictionary(pool, "axis0", 100.0), 4)
    assert explainer.ids_.tolist() == direct.ids.tolist()
    assert torch.equal(explainer.coef_, direct.coef) and torch.equal(explainer.fidelity_, direct.fidelity)
    assert explainer.n_nonzero_.tolist() == [4, 4, 4]
    assert explainer.texts_[1] == [(texts[j], c) for j, c in zip(direct.ids[1].tolist(), direct.coef[1].tolist())]
    raw = explainer.reconstruct(renormalize=False)
    assert torch.allclose(raw, direct.coef[:, :, None].mul(explainer.dictionary_[direct.ids]).sum(1), atol=1e-12)
    assert torch.allclose(explainer.directions_, raw / raw.norm(dim=1, keepdim=True), atol=1e-15)
    unnormalised = SparseTextDecomposition(n_atoms=4, renormalize=False).fit(targets.float(), pool.float())
    assert unnormalised.texts_ is None and unnormalised.coef_.dtype == torch.float32
    assert torch.equal(unnormalised.directions_, unnormalised.reconstruct(renormalize=False))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t, d: orthogonal_matching_pursuit(t, d, 61), "exceeds the dictionary size"),
        (lambda t, d: orthogonal_matching_pursuit(t, d, 0), "positive integer"),
        (lambda t, d: orthogonal_matching_pursuit(t.index_fill(1, torch.tensor([3]), torch.nan), d, 2), "NaN"),
        (lambda t, d: orthogonal_matching_pursuit(t[:, :10], d, 2), "dimension"),
        (lambda t, d: orthogonal_matching_pursuit(t.float(), d, 2), "dtype"),
        (lambda t, d: orthogonal_matching_pursuit(t * 0, d, 2), "zero vectors"),
        (lambda t, d: orthogonal_matching_pursuit(t, d, 2, tol=-1.0), "tol"),
        (lambda t, d: prepare_dictionary(d, "l2"), "dict_norm"),
        (lambda t, d: prepare_dictionary(d[:1]), "at least two texts"),
        (lambda t, d: prepare_dictionary(torch.cat([d, d.mean(0, keepdim=True)])), "mean text"),
        (lambda t, d: SparseTextDecomposition(2).fit(t, d, ["one", "two"]), "one text per embedding"),
        (lambda t, d: SparseTextDecomposition(2).reconstruct(), "not fitted"),
    ],
)
def test_bad_inputs_raise_one_line_errors(call, message: str) -> None:
    targets, dictionary = random_problem(14)
    with pytest.raises(CliplensError, match=message) as raised:
        call(targets, dictionary)
    assert "\n" not in str(raised.value)

"""Principal components of heads: sign-free poles, reconstructions, scores and edits (docs/methods/components.md)."""

from __future__ import annotations

import pytest
import torch

import cliplens
from cliplens.errors import CliplensError
from cliplens.evaluate.components import component_edits, query_rows
from cliplens.evaluate.piece_edits import ComponentFamily, Edit, GroupBoard, HeadFamily
from cliplens.evaluate.zeroshot import predict
from cliplens.explain.components import ComponentTexts, concept_basis, concept_variance, head_components
from cliplens.explain.svd_poles import SVDPoles
from conftest import random_images

DIM, TEXTS = 12, 40


def piece(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64) * torch.logspace(0, -2, DIM)
    covariance = factors @ factors.T
    pool = torch.randn(TEXTS, DIM, generator=generator, dtype=torch.float64)
    return covariance, torch.randn(DIM, generator=generator, dtype=torch.float64), pool, [f"t{i}" for i in range(TEXTS)]


def flips(count: int, seed: int = 1) -> torch.Tensor:
    signs = torch.where(torch.rand(count, generator=torch.Generator().manual_seed(seed)) < 0.5, -1.0, 1.0)
    signs[0] = -1.0  # at least one flip
    return signs.double()


def test_every_component_result_is_the_same_when_component_signs_flip():
    covariance, mean, pool, texts = piece()
    first = ComponentTexts(texts_per_pole=3).fit(100, mean, covariance, pool, texts)
    signs = flips(len(first.components_))[:, None]
    flipped = ComponentTexts(texts_per_pole=3).fit(100, mean, covariance, pool, texts,
                                                   components=first.components_ * signs)
    assert first.rows("h") == flipped.rows("h")
    assert first.poles_ == flipped.poles_
    assert torch.equal(first.reconstruction_ids_, flipped.reconstruction_ids_)
    torch.testing.assert_close(first.projector(), flipped.projector(), rtol=0, atol=1e-10)
    x = torch.randn(5, DIM, dtype=torch.float64)
    torch.testing.assert_close(first.reconstruct(x), flipped.reconstruct(x), rtol=0, atol=1e-10)


def test_the_positive_pole_rule_of_the_reference_is_what_a_sign_flip_changes():
    """The reason for the rule above: the reference's reconstruction text (the positive pole's top) moves under a flip
    for some component, while the one of largest |coordinate| does not."""
    covariance, mean, pool, texts = piece()
    poles = SVDPoles(texts_per_pole=3).fit(100, mean, covariance, pool, texts)
    coordinates = poles.coordinates_
    assert not torch.equal(coordinates.argmax(0), (-coordinates).argmax(0))
    assert torch.equal(coordinates.abs().argmax(0), (-coordinates).abs().argmax(0))


def test_components_carry_the_kept_variance_and_rank_by_the_nuclear_rule():
    covariance, *_ = piece()
    variances, vectors = head_components(100, covariance, mass=1.0, max_components=DIM)
    torch.testing.assert_close(variances.sum(), covariance.trace())
    torch.testing.assert_close(vectors @ vectors.T, torch.eye(DIM, dtype=torch.float64))
    fewer, _ = head_components(100, covariance, mass=0.5)
    assert 1 <= len(fewer) < DIM and torch.equal(fewer, variances[: len(fewer)])


@pytest.mark.parametrize("model", ["vit", "resnet"])
@pytest.mark.parametrize("convention, normalize", [("separate", False), ("reference", True)])
def test_a_heads_components_found_in_its_read_out_span_are_the_full_eigen_solves(model, convention, normalize,
                                                                                  vit_lens, resnet_lens):
    """Every head's statistics lie in the span of `head_spans`' rows (k < d), so solving there gives the components
    of the full d × d eigen-solve: same rank, variances and kept subspace, to float64 round-off (1e-10 relative: the
    two solves differ by ~1e-15 ‖Σ‖ divided by the spectral gap at the cut, ≥ 1e-3 ‖Σ‖ for these random heads)."""
    lens = vit_lens if model == "vit" else resnet_lens
    size = lens.spec.image_size
    images = [(image, 0) for image in random_images(24, size, seed=3)]
    stats = lens.collect(images, convention=convention, normalize=normalize, batch_size=8)
    spans = lens.decomposer.head_spans(stats.settings)
    heads = [label for label in stats.labels if label in spans]
    assert heads and len(heads) == len(spans)
    for head in heads:
        covariance = stats[head][1]
        basis = torch.linalg.qr(spans[head].T.double()).Q
        assert basis.shape[1] < covariance.shape[0]
        outside = covariance - basis @ (basis.T @ covariance)
        assert outside.abs().max() <= 1e-12 * covariance.abs().max()
        values, vectors = head_components(24, covariance)
        reduced_values, reduced_vectors = head_components(24, covariance, span=spans[head])
        assert len(values) == len(reduced_values)
        scale = values[0].item()
        torch.testing.assert_close(reduced_values, values, rtol=0, atol=1e-10 * scale)
        torch.testing.assert_close(reduced_vectors.T @ reduced_vectors, vectors.T @ vectors, rtol=0, atol=1e-10)


def test_a_concept_is_the_centred_span_of_its_texts():
    texts = torch.tensor([[1.0, 0, 5], [0, 1, 5], [1, 1, 5]], dtype=torch.float64)
    basis = concept_basis(texts)
    assert basis.shape == (3, 2) and basis[2].abs().max() < 1e-12  # the shared third axis is not the concept
    torch.testing.assert_close(basis.T @ basis, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(concept_variance(torch.eye(3, dtype=torch.float64), basis), torch.tensor(2.0).double())
    assert concept_basis(texts[:1]).shape == (3, 1)
    with pytest.raises(CliplensError, match="same direction"):
        concept_basis(texts[[0, 0]])


@pytest.fixture(scope="module")
def toy():
    lens = cliplens.load("toy:vit")
    stats = lens.collect("shapes:test:48:5", batch_size=48)
    from cliplens.shapes import ShapesDataset

    data = ShapesDataset(16, seed=6, split="test", label="shape")
    images = lens.images_to_tensor([data[i][0] for i in range(len(data))])
    weights = torch.randn(stats.mean.shape[1], 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return lens, stats, images, weights


def test_the_components_of_a_head_sum_to_the_head_and_flips_change_no_logit(toy):
    lens, stats, images, weights = toy
    family = ComponentFamily(stats, heads=["L3H0", "L3H2"], mass=1.0, max_components=128)
    full, deviations = family.logits(lens, images, weights)
    count = family.component_count
    for h in range(2):
        head = deviations[:, count + h]
        own = deviations[:, :count][:, family.owner == h].sum(1)
        # exact up to the float32 pieces' rounding, which the components of near-zero variance do not all carry
        torch.testing.assert_close(own, head, rtol=0, atol=1e-5 * head.abs().max().item())
    family.vectors = family.vectors * flips(count)[:, None]
    _, flipped = family.logits(lens, images, weights)
    torch.testing.assert_close(flipped, deviations, rtol=0, atol=1e-12)
    embedding = lens.decompose(images).embedding.double()
    torch.testing.assert_close(full, embedding @ weights)


def test_keep_remove_and_amplify_match_a_literal_rebuild_of_the_embedding(toy):
    lens, stats, images, weights = toy
    family = ComponentFamily(stats, heads=["L3H1"])
    edits = component_edits(family, [0], amplify=3.0)
    result = lens.decompose(images)
    h = result.labels.index("L3H1")
    mean = stats.mean[h].double()
    delta = result.components[:, h].double() - mean
    v = family.vectors[0]
    along = (delta @ v)[:, None] * v
    literal = {"keep": -delta + along, "remove": -along, "amplify": 2 * along}
    full, deviations = family.logits(lens, images, weights)
    for edit in edits[1:]:
        logits = full + torch.einsum("u,buk->bk", edit.coefficients, deviations)
        expected = (result.embedding.double() + literal[edit.name]) @ weights
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-9)
    with pytest.raises(CliplensError, match="amplify=1"):
        component_edits(family, [0], amplify=1.0)


def test_the_group_board_counts_every_image_once_and_the_full_model_predicts_as_the_model(toy):
    lens, stats, images, weights = toy
    family = HeadFamily(stats)
    full, deviations = family.logits(lens, images, weights)
    groups = torch.arange(len(images)) % 3
    classes = [0, 3, 5]
    ablate = torch.zeros(len(family.labels), dtype=torch.float64)
    ablate[:4] = -1
    board = GroupBoard([Edit("none", torch.zeros_like(ablate)), Edit("four", ablate)], classes, ["a", "b", "c"])
    board.update(full[:7], deviations[:7], groups[:7])
    board.update(full[7:], deviations[7:], groups[7:])
    rows = board.rows()
    assert board.counts.tolist() == [6, 5, 5] and all(row["images"] == 16 for row in rows)
    truth = torch.tensor(classes)[groups]
    expected = (predict(full, torch.eye(6, dtype=torch.float64)) == truth)
    assert rows[0]["average"] == expected.double().mean().item()
    for row, correct in zip(rows, board.correct):
        weighted = sum(row[name] * n for name, n in zip("abc", board.counts.tolist())) / 16
        assert row["average"] == pytest.approx(weighted) and row["worst_group"] == min(row[name] for name in "abc")
        assert int(correct.sum()) == round(row["average"] * 16)


def test_a_query_ranks_heads_and_components_by_variance_along_it_and_ignores_signs(toy):
    _, stats, _, _ = toy
    family = ComponentFamily(stats)
    query = torch.randn(stats.mean.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    rows = query_rows(family, "q", query, top=5)
    heads = [row for row in rows if row["level"] == "head"]
    assert [row["rank"] for row in heads] == list(range(5))
    assert all(a["query_variance"] >= b["query_variance"] for a, b in zip(heads, heads[1:]))
    unit = query / query.norm()
    best = family.heads.labels.index(heads[0]["piece"])
    assert heads[0]["query_variance"] == pytest.approx(float(unit @ family.heads.covariance[best] @ unit))
    family.vectors = -family.vectors
    assert query_rows(family, "q", -query, top=5) == rows


def test_a_head_pattern_that_names_nothing_is_refused_before_the_first_pass(monkeypatch):
    from cliplens.workflows import component_study as workflow

    monkeypatch.setattr(workflow, "obtain_piece_stats", lambda *a, **k: pytest.fail("the first pass ran"))
    with pytest.raises(CliplensError, match="matches no piece"):
        workflow.component_study(cliplens.load("toy:vit"), "shapes:test:4", heads=["L9H*"])
    with pytest.raises(CliplensError, match="unknown text pool"):
        workflow.component_study(cliplens.load("toy:rn"), "shapes:test:4", pool="no-such-pool")

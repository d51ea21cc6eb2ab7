"""Mean-ablation (docs/methods/mean-ablation.md#definition): the streaming pass against a literal per-image loop, in
float64 on tiny models."""

from __future__ import annotations

import csv

import pytest
import torch

from cliplens import CliplensError
from cliplens.evaluate.ablation import (
    Variant, VariantBank, cls_cell_means, cls_variants, evaluate_variants, layer_curve, mean_ablation, mlp_variants,
    pattern_variants, write_scores,
)
from cliplens.evaluate.groups import attention_layers, select, split_patterns
from cliplens.io.tables import SCHEMAS
from cliplens.settings import Settings
from conftest import random_images, tiny_vit, wrap

# Float64 pieces of these tiny models are O(1); the streaming sum and the loop add the same numbers in different
# orders, so they differ by a few ulps times the number of pieces (~1e-15). 1e-10 leaves room and still catches any
# misplaced piece, whose size is ~1e-1.
TOLERANCE = 1e-10
CLASSES = 5


def labelled(images: torch.Tensor, seed: int) -> list[tuple[torch.Tensor, int]]:
    """A dataset of preprocessed image tensors with seeded labels (the loader passes tensors through)."""
    labels = torch.randint(CLASSES, (len(images),), generator=torch.Generator().manual_seed(seed))
    return [(image, int(label)) for image, label in zip(images, labels)]


def classifier_weights(dim: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(dim, CLASSES, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def random_basis(dim: int, rank: int, seed: int) -> torch.Tensor:
    matrix = torch.randn(dim, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.qr(matrix).Q


def oracle_embeddings(lens, images, variant: Variant, means: torch.Tensor, labels: list[str], **settings):
    """The variant's embedding of each image, one image and one piece at a time, as docs/methods/mean-ablation.md writes
    it."""
    out = []
    for image in images:
        dec = lens.decompose(image[None], **settings)
        assert dec.labels == labels
        total = torch.zeros(means.shape[1], dtype=torch.float64)
        for i, label in enumerate(labels):
            piece = dec.components[0, i]
            if label in variant.ablated:
                total += means[i]
            elif label in variant.projected:
                basis = variant.projected[label]
                total += means[i] + (piece - means[i]) @ basis @ basis.T
            else:
                total += piece
        out.append(total)
    return torch.stack(out)


@pytest.fixture(scope="module")
def vit():
    return wrap(tiny_vit(), "tiny-vit")


@pytest.fixture(scope="module")
def reference_images():
    return random_images(24, 32, seed=11)


@pytest.fixture(scope="module")
def eval_images():
    return random_images(10, 32, seed=12)


def some_variants(labels: list[str], dim: int) -> list[Variant]:
    projected = {"L2H1": random_basis(dim, 3, 0), "L1H0": random_basis(dim, 1, 1), "L2H3": random_basis(dim, 0, 2)}
    return [
        *layer_curve(labels),
        *mlp_variants(labels)[1:],
        *pattern_variants(labels, [["L1H2", "L2.mlp"], ["attn"]]),
        Variant("projected", ("L0H0", "embed"), projected),
    ]


@pytest.mark.parametrize("convention,normalize", [("separate", False), ("reference", True), ("reference", False)])
def test_streaming_equals_per_image_loop(vit, reference_images, eval_images, convention, normalize):
    settings = dict(granularity="head", convention=convention, normalize=normalize)
    stats = vit.collect(labelled(reference_images, 0), batch_size=7, **settings)
    variants = some_variants(stats.labels, stats.mean.shape[1])
    bank = VariantBank(variants, stats.labels, stats.mean)
    combined = bank.combine(vit.decompose(eval_images, **settings).components)
    weights = classifier_weights(stats.mean.shape[1])
    data = labelled(eval_images, 1)
    truth = torch.tensor([label for _, label in data])
    scores = evaluate_variants(vit, data, variants, weights, stats, batch_size=4)
    for v, variant in enumerate(variants):
        expected = oracle_embeddings(vit, eval_images, variant, stats.mean, stats.labels, **settings)
        assert (combined[:, v] - expected).abs().max() <= TOLERANCE, variant.name
        assert scores.correct[v] == int(((expected @ weights).argmax(1) == truth).sum()), variant.name
    assert scores.count == len(eval_images)


@pytest.mark.parametrize("granularity,convention,normalize",
                         [("head", "separate", False), ("head", "reference", True), ("layer", "reference", False)])
def test_cls_ablation_equals_the_literal_loop(vit, reference_images, eval_images, granularity, convention, normalize):
    """TextSpan's CLS ablation: in every kept attention piece, the token-0 cell of the per-token decomposition (itself
    checked against explicit token loops in test_decompose_vit) swapped for its mean over the reference images."""
    settings = dict(granularity=granularity, convention=convention, normalize=normalize)
    stats = vit.collect(labelled(reference_images, 0), spatial=True, batch_size=7, **settings)
    labels = stats.labels
    attention = [labels.index(label) for members in attention_layers(labels).values() for label in members]
    reference = vit.decompose(reference_images, **settings).components
    cls_means = vit.decompose(reference_images, spatial=True, **settings).components[:, attention, 0].mean(0)
    variants = cls_variants(labels) + [Variant("layer 1 + cls", tuple(select(labels, ["L1.attn"])), cls=True)]
    plain = vit.decompose(eval_images, **settings).components
    cells = vit.decompose(eval_images, spatial=True, **settings).components[:, :, 0]
    expected = torch.zeros(len(eval_images), len(variants), plain.shape[-1], dtype=torch.float64)
    for v, variant in enumerate(variants):
        for b in range(len(eval_images)):
            for i, label in enumerate(labels):
                if label in variant.ablated:
                    expected[b, v] += reference[:, i].mean(0)
                    continue
                expected[b, v] += plain[b, i]
                if variant.cls and i in attention:
                    expected[b, v] += cls_means[attention.index(i)] - cells[b, i]
    bank = VariantBank(variants, labels, stats.mean, cls_cell_means(stats))
    factors = vit.decomposer.factorise(eval_images, Settings(**settings), tokens=True)
    fast_cells = vit.decomposer.cls_cells(factors)
    assert (fast_cells - cells[:, attention]).abs().max() <= TOLERANCE
    assert (bank.combine(plain, fast_cells) - expected).abs().max() <= TOLERANCE
    weights = classifier_weights(plain.shape[-1])
    data = labelled(eval_images, 1)
    truth = torch.tensor([label for _, label in data])
    scores = evaluate_variants(vit, data, variants, weights, stats, batch_size=4)
    for v, variant in enumerate(variants):
        assert scores.correct[v] == int(((expected[:, v] @ weights).argmax(1) == truth).sum()), variant.name


def test_cls_ablation_needs_per_token_means_and_attention(vit, reference_images, eval_images, resnet_lens):
    flat = vit.collect(labelled(reference_images[:4], 0))
    with pytest.raises(CliplensError, match="per token"):
        evaluate_variants(vit, labelled(eval_images, 1), cls_variants(flat.labels), classifier_weights(32), flat)
    scores, stats = mean_ablation(vit, labelled(eval_images, 1), cls_variants(flat.labels), classifier_weights(32),
                                  mean_source="eval")
    assert stats.token_mean is not None and scores.names == ["none", "cls", "mlps", "mlps+cls"]
    resnet = resnet_lens.collect(labelled(random_images(4, 64, seed=5), 0), spatial=True)
    with pytest.raises(CliplensError, match="attention pieces"):
        VariantBank([Variant("cls", cls=True)], resnet.labels, resnet.mean, resnet.token_mean[:, 0])


def test_resnet_heads_stream_like_the_loop(resnet_lens):
    stats = resnet_lens.collect(labelled(random_images(12, 64, seed=5), 0), batch_size=5)
    variant = Variant("two heads", tuple(select(stats.labels, ["H0", "H1"])))
    images = random_images(4, 64, seed=6)
    combined = VariantBank([variant], stats.labels, stats.mean).combine(resnet_lens.decompose(images).components)
    expected = oracle_embeddings(resnet_lens, images, variant, stats.mean, stats.labels, granularity="head")
    assert (combined[:, 0] - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize("normalize", [False, True])
def test_ablating_nothing_is_the_model(vit, reference_images, eval_images, normalize):
    stats = vit.collect(labelled(reference_images, 0), normalize=normalize)
    dec = vit.decompose(eval_images, normalize=normalize)
    nothing = VariantBank([Variant("none")], stats.labels, stats.mean).combine(dec.components)[:, 0]
    assert (nothing - dec.target()).abs().max() <= TOLERANCE
    data = labelled(eval_images, 1)
    scores = evaluate_variants(vit, data, [Variant("none")], classifier_weights(32), stats)
    assert scores.correct[0] == scores.full_correct
    assert scores.full_accuracy == scores.accuracy("none")


def test_ablating_everything_predicts_one_class(vit, reference_images, eval_images):
    stats = vit.collect(labelled(reference_images, 0))
    everything = Variant("all", tuple(stats.labels))
    combined = VariantBank([everything], stats.labels, stats.mean).combine(vit.decompose(eval_images).components)
    assert (combined[:, 0] - stats.mean.sum(0)).abs().max() <= TOLERANCE
    weights = classifier_weights(32)
    data = labelled(eval_images, 1)
    constant = int((stats.mean.sum(0) @ weights).argmax())
    scores = evaluate_variants(vit, data, [everything], weights, stats)
    assert scores.correct[0] == sum(label == constant for _, label in data)


def test_in_sample_means_come_from_the_evaluation_data(vit, eval_images):
    data = labelled(eval_images, 1)
    scores, stats = mean_ablation(vit, data, [Variant("none")], classifier_weights(32), mean_source="eval")
    direct = vit.collect(data)
    assert stats.count == len(data)
    assert (stats.mean - direct.mean).abs().max() <= TOLERANCE
    assert scores.accuracy("none") == scores.full_accuracy


def test_layer_curve_and_mlp_presets(vit, reference_images):
    labels = vit.collect(labelled(reference_images[:4], 0)).labels
    curve = layer_curve(labels)
    assert [variant.name for variant in curve] == ["none", "attn[:1]", "attn[:2]", "attn[:3]"]
    assert curve[2].ablated == tuple(f"L{l}H{h}" for l in range(2) for h in range(4))
    assert mlp_variants(labels)[1].ablated == ("embed", "L0.mlp", "L1.mlp", "L2.mlp")


def test_patterns_select_the_right_pieces(vit, reference_images):
    labels = vit.collect(labelled(reference_images[:4], 0)).labels
    heads = lambda layers: [f"L{l}H{h}" for l in layers for h in range(4)]  # noqa: E731
    assert select(labels, ["L1H*"]) == heads([1])
    assert select(labels, ["L1.attn"]) == heads([1])
    assert select(labels, ["attn[-2:]"]) == heads([1, 2])
    assert select(labels, ["attn[:1]", "mlp[0]"]) == heads([0]) + ["L0.mlp"]
    assert select(labels, ["attn[-1]"]) == heads([2])
    assert select(labels, ["L2H3", "embed", "L2H3"]) == ["embed", "L2H3"]
    assert select(labels, ["mlps"]) == ["embed", "L0.mlp", "L1.mlp", "L2.mlp"]
    assert select(["embed", "L0.attn", "L0.mlp", "L1.attn", "L1.mlp"], ["attn[1:]"]) == ["L1.attn"]
    assert split_patterns(" L1H*, mlps ,") == ["L1H*", "mlps"]
    for bad in (["L9H0"], ["L9H*"], ["attn[5]"], ["attn[3:]"], ["attn[]"], ["heads"]):
        with pytest.raises(CliplensError):
            select(labels, bad)
    with pytest.raises(CliplensError, match="no layers|none"):
        select(["H0", "H1", "bias"], ["attn[:1]"])


def test_statistics_of_another_model_are_refused(vit, reference_images, eval_images):
    other = wrap(tiny_vit(seed=1), "other")
    stats = other.collect(labelled(reference_images[:4], 0))
    with pytest.raises(CliplensError, match="made with other .*, but this is tiny-vit"):
        evaluate_variants(vit, labelled(eval_images, 1), [Variant("none")], classifier_weights(32), stats)


def test_bad_variants_and_data_are_refused(vit, reference_images, eval_images):
    stats = vit.collect(labelled(reference_images[:4], 0))
    weights = classifier_weights(32)
    data = labelled(eval_images, 1)
    bad = [
        [Variant("unknown", ("L7H0",))],
        [Variant("twice", ("L0H0",), {"L0H0": random_basis(32, 2, 0)})],
        [Variant("skew", (), {"L0H0": torch.ones(32, 2, dtype=torch.float64)})],
        [Variant("a"), Variant("a")],
    ]
    for variants in bad:
        with pytest.raises(CliplensError):
            evaluate_variants(vit, data, variants, weights, stats)
    with pytest.raises(CliplensError, match="no class labels"):
        evaluate_variants(vit, [(image, -1) for image in eval_images], [Variant("none")], weights, stats)
    with pytest.raises(CliplensError):
        mean_ablation(vit, data, [Variant("none")], weights)  # no reference statistics and no mean_source="eval"


def test_scores_csv_schema(vit, reference_images, eval_images, tmp_path):
    stats = vit.collect(labelled(reference_images[:6], 0))
    variants = mlp_variants(stats.labels)
    scores = evaluate_variants(vit, labelled(eval_images, 1), variants, classifier_weights(32), stats)
    with open(write_scores(tmp_path / "ablation.csv", scores, variants)) as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == SCHEMAS["ablation"]
    assert [row["variant"] for row in rows] == ["full model", "none", "mlps"]
    assert [row["level"] for row in rows] == ["model", "piece", "piece"]
    assert [int(row["ablated"]) for row in rows] == [0, 0, 4]
    pieces = len(stats.labels)
    assert [(row["kept"], row["total"]) for row in rows] == [("", ""), (str(pieces), str(pieces)),
                                                             (str(pieces - 4), str(pieces))]
    assert float(rows[2]["accuracy"]) == int(rows[2]["correct"]) / len(eval_images)
    assert {row["in_sample"] for row in rows} == {"False"}  # the means come from other images

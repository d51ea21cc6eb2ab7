"""The shared vocabulary: piece labels, the settings record, the model check and the positive-integer validator."""

from __future__ import annotations

import pytest
import torch

import cliplens
from cliplens.data.loader import LoadReport, stream
from cliplens.errors import CliplensError, require_positive_int
from cliplens.io.compat import require_match, require_model
from cliplens.labels import (
    BIAS, EMBED, KINDS, POOL_MLP, Piece, attention_label, head_label, match_label, mlp_label, neuron_label, pair_label,
    parse_label, pool_head_label, pool_neuron_label, token_label,
)
from cliplens.settings import Settings

# every formatter, what it writes, and the record the parser reads back
WRITTEN = [
    (EMBED, "embed", Piece("embed")),
    (BIAS, "bias", Piece("bias")),
    (POOL_MLP, "pool.mlp", Piece("pool")),
    (attention_label(3), "L3.attn", Piece("attn", layer=3)),
    (mlp_label(0), "L0.mlp", Piece("mlp", layer=0)),
    (head_label(11, 7), "L11H7", Piece("head", layer=11, head=7)),
    (neuron_label(2, 3071), "L2N3071", Piece("neuron", layer=2, neuron=3071)),
    (pool_head_label(5), "H5", Piece("head", head=5)),
    (pair_label(1, 262), "H1N262", Piece("pair", head=1, neuron=262)),
    (pool_neuron_label(40), "N40", Piece("neuron", neuron=40)),
    (token_label(head_label(0, 1), 16), "L0H1T16", Piece("head", layer=0, head=1, token=16)),
    (token_label(EMBED, 0), "embedT0", Piece("embed", token=0)),
    (token_label(pool_head_label(2), 10), "H2T10", Piece("head", head=2, token=10)),
]


@pytest.mark.parametrize("written,label,piece", WRITTEN)
def test_labels_round_trip(written, label, piece):
    assert written == label
    assert parse_label(label) == piece
    assert piece.label == label


def test_every_kind_is_written_and_read():
    assert {piece.kind for _, _, piece in WRITTEN} == set(KINDS)


@pytest.mark.parametrize("text", ["L03H1", "L3H01", "H007", "N01", "L3H7T05", "L3H", "L3.foo", "L3H7N2", "head3",
                                  "T3", "L3H7T", "embed0", " L3H7", "L-1H0", "", "L3H*", "mlps", "attn[:8]", "L١H٢"])
def test_malformed_labels_are_refused(text):
    assert match_label(text) is None
    with pytest.raises(CliplensError, match="cannot read the piece label") as error:
        parse_label(text)
    assert "\n" not in str(error.value)


def test_every_label_a_decomposition_writes_reads_back(vit_lens, resnet_lens, vit_images, resnet_images):
    decompositions = [vit_lens.decompose(vit_images[:1], granularity=g, convention=c)
                      for g in ("head", "layer") for c in ("separate", "reference")]
    decompositions += [resnet_lens.decompose(resnet_images[:1], granularity=g) for g in ("head", "neuron", "pair")]
    spatial = vit_lens.decompose(vit_images[:1], spatial=True)
    labels = [label for result in decompositions for label in result.labels]
    labels += [label for row in spatial.token_labels() for label in row]
    for label in labels:
        assert parse_label(label).label == label
    assert parse_label(spatial.token_labels()[1][3]) == Piece("head", layer=0, head=0, token=3)


@pytest.mark.parametrize("value", [0, -3, 1.0, True, "2", None])
def test_positive_integers_are_checked_in_one_place(value):
    with pytest.raises(CliplensError, match=r"^top_k must be a positive integer, got "):
        require_positive_int("top_k", value)
    assert require_positive_int("top_k", 3) == 3


# settings -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("changes,message", [
    (dict(granularity="token"), "granularity 'token' is unknown"),
    (dict(convention="mine"), "convention 'mine' is unknown"),
    (dict(spatial=1), "spatial must be True or False"),
    (dict(normalize="yes"), "normalize must be True or False"),
])
def test_invalid_settings_are_refused(changes, message):
    with pytest.raises(CliplensError, match=message):
        Settings(**changes)


def test_settings_round_trip_through_metadata_and_artifacts(vit_lens, vit_images, tmp_path):
    settings = Settings(granularity="layer", spatial=True, convention="reference", normalize=True)
    assert settings.metadata() == dict(granularity="layer", spatial=True, convention="reference", normalize=True)
    assert Settings.from_metadata({**settings.metadata(), "model": "x"}) == settings
    with pytest.raises(CliplensError, match="records no convention"):
        Settings.from_metadata({"granularity": "head", "spatial": False, "normalize": False})
    stats = vit_lens.collect([(image, 0) for image in vit_images], **settings.metadata())
    assert stats.settings == settings
    assert cliplens.load_stats(stats.save(tmp_path / "stats"), vit_lens).settings == settings
    result = vit_lens.decompose(vit_images, **settings.metadata())
    assert (result.settings, result.granularity, result.spatial, result.convention, result.normalize) == (
        settings, "layer", True, "reference", True)


def test_a_granularity_the_model_lacks_is_refused(vit_lens, resnet_lens, vit_images, resnet_images):
    with pytest.raises(CliplensError, match="'pair' is not available for this model; choose one of layer, head"):
        vit_lens.decompose(vit_images, granularity="pair")
    with pytest.raises(CliplensError, match="'layer' is not available for this model"):
        resnet_lens.decompose(resnet_images, granularity="layer")
    with pytest.raises(CliplensError, match="not split over tokens"):
        resnet_lens.decomposer.pairs(resnet_images, Settings(granularity="pair", spatial=True))


def test_group_lays_out_exactly_what_factorise_was_asked_for(vit_lens, vit_images):
    """The settings travel on the factors, so grouping cannot disagree with factorising."""
    decomposer = vit_lens.decomposer
    for settings in (Settings("layer", False, "reference", True), Settings("head", True, "separate", False)):
        factors = decomposer.factorise(vit_images, settings)
        grouped = decomposer.group(factors)
        direct = vit_lens.decompose(vit_images, **settings.metadata())
        assert grouped.settings == factors.settings == settings
        assert grouped.labels == direct.labels and torch.equal(grouped.components, direct.components)
    with pytest.raises(TypeError):
        decomposer.group(factors, granularity="layer")


# compatibility --------------------------------------------------------------------------------------------------------
def test_the_compatibility_check_names_what_mismatched():
    metadata = {"fingerprint": "ab12", "model": "tiny-vit", "convention": "reference"}
    require_match(metadata, {"fingerprint": "ab12", "convention": "reference"}, "stats")  # a match passes
    with pytest.raises(CliplensError, match=r"^stats: made with tiny-vit \(fingerprint ab12\), but this needs the "
                                            r"model with fingerprint cd34; recompute it with this model$"):
        require_model(metadata, "cd34", "stats")
    with pytest.raises(CliplensError, match=r"^stats: convention='reference', but this needs convention='separate'"):
        require_match(metadata, {"convention": "separate"}, "stats")
    with pytest.raises(CliplensError, match=r"made with no recorded model"):  # one policy: unrecorded is refused
        require_model({}, "cd34", "stats")


def test_every_reader_applies_the_one_check(vit_lens, resnet_lens, vit_images, resnet_images, tmp_path):
    from cliplens.apps.retrieval import retrieve
    from cliplens.evaluate.ablation import Variant, evaluate_variants
    from cliplens.evaluate.pair_ablation import PairAblation, ablation_table, standard_variants

    data = [(image, 0) for image in vit_images]
    stats = vit_lens.collect(data)
    stats.metadata["fingerprint"] = "0" * 16
    weights = torch.eye(32, 2, dtype=torch.float64)
    with pytest.raises(CliplensError, match="the statistics: made with tiny-vit \\(fingerprint 0000000000000000"):
        evaluate_variants(vit_lens, data, [Variant("none")], weights, stats)
    with pytest.raises(CliplensError, match="made with tiny-vit \\(fingerprint 0000000000000000"):
        cliplens.load_stats(stats.save(tmp_path / "stats"), vit_lens)
    pairs_data = [(image, 0) for image in resnet_images]
    pairs = resnet_lens.collect(pairs_data, granularity="pair", top_k=2)
    assert pairs.settings == Settings(granularity="pair")
    del pairs.metadata["fingerprint"]  # statistics that cannot show their model are refused like another model's
    with pytest.raises(CliplensError, match="the pair statistics: made with no recorded model"):
        retrieve(resnet_lens, pairs_data, ["H0N1"], top=1, stats=pairs)
    with pytest.raises(CliplensError, match="the pair statistics: made with no recorded model"):
        ablation_table(resnet_lens, pairs_data, weights, standard_variants(PairAblation(pairs), keeps=[50]), pairs)
    with pytest.raises(CliplensError, match="the statistics to merge: convention='reference'"):
        vit_lens.collect(data).merge(vit_lens.collect(data, convention="reference"))


# streaming ------------------------------------------------------------------------------------------------------------
def test_one_streaming_loop_feeds_every_pass(vit_lens, vit_images):
    data = [(image.float(), i % 2) for i, image in enumerate(vit_images)] + [(None, 1)]
    report = LoadReport()
    streamed = list(stream(vit_lens, data, batch_size=2, report=report))
    assert [batch.indices.tolist() for batch in streamed] == [[0, 1], [2, 3], [4]]
    assert [batch.labels.tolist() for batch in streamed] == [[0, 1], [0, 1], [0]]
    assert all(batch.images.dtype == vit_lens.dtype and batch.images.device == vit_lens.device for batch in streamed)
    assert torch.equal(torch.cat([batch.images for batch in streamed]), vit_images.float().to(vit_lens.dtype))
    assert (report.total, report.loaded, report.skipped) == (6, 5, ["item 5"])
    with pytest.raises(CliplensError, match="unlabelled images"):
        list(stream(vit_lens, [(vit_images[0], -1)], labelled=True))
    with pytest.raises(CliplensError, match=r"no readable images in the data \(0 of 1 images used"):
        list(stream(vit_lens, [(None, 0)]))

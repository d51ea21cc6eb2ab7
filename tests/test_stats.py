"""Streaming statistics: equal to statistics of materialised pieces, mergeable, persistent, and refusing misuse.

Moments accumulate in float64 from float64 pieces; the only differences from a one-shot computation are summation
order, so 1e-10 (relative to O(1) values) is a safe bound for round-off and tight enough to catch a wrong formula.
"""

from __future__ import annotations

import pytest
import torch

import cliplens
from cliplens import CliplensError
from cliplens.stats.moments import Moments
from conftest import random_images, tiny_vit, wrap


def as_dataset(images: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    return [(image, i % 3) for i, image in enumerate(images)]


@pytest.fixture(scope="module")
def images():
    return random_images(23, 32, seed=4)


def test_moments_match_torch_and_survive_a_large_offset():
    # mean 1e6, spread 1e-3: each value carries its deviation to ~eps·1e6/1e-3 ≈ 2e-7 relative, so the covariance
    # (~1e-6) is good to ~1e-6 relative; the naive E[x²]−E[x]² would be off by ~eps·1e12 ≈ 2e-4, i.e. 100 % wrong.
    data = torch.randn(40, 3, 5, dtype=torch.float64) * 1e-3 + 1e6
    moments = Moments(3, 5)
    for chunk in data.split(7):
        moments.update(chunk)
    for c in range(3):
        expected = torch.cov(data[:, c].T, correction=0)
        assert torch.allclose(moments.covariance[c], expected, rtol=1e-5, atol=1e-11)
    assert torch.allclose(moments.mean, data.mean(0), rtol=1e-15, atol=0)


@pytest.mark.parametrize("granularity,convention,normalize", [("head", "separate", False), ("head", "reference", True),
                                                               ("head", "reference", False), ("layer", "separate", True)])
def test_collect_equals_statistics_of_materialised_pieces(vit_lens, images, granularity, convention, normalize):
    options = dict(granularity=granularity, convention=convention, normalize=normalize)
    stats = vit_lens.collect(as_dataset(images), batch_size=5, **options)
    pieces = vit_lens.decompose(images, **options).components
    assert stats.count == len(images) and stats.labels == vit_lens.decompose(images[:1], **options).labels
    assert torch.allclose(stats.mean, pieces.mean(0), atol=1e-10, rtol=0)
    for c in range(pieces.shape[1]):
        assert torch.allclose(stats.covariance[c], torch.cov(pieces[:, c].T, correction=0), atol=1e-10, rtol=0)
    centred_second = stats.second_moment[3]
    assert torch.allclose(centred_second, pieces[:, 3].T @ pieces[:, 3] / len(images), atol=1e-10, rtol=0)


def test_spatial_collect_keeps_token_means(vit_lens, images):
    stats = vit_lens.collect(as_dataset(images), spatial=True, convention="reference", batch_size=4)
    tokens = vit_lens.decompose(images, spatial=True, convention="reference").components
    assert torch.allclose(stats.token_mean, tokens.mean(0), atol=1e-10, rtol=0)
    assert torch.allclose(stats.mean, tokens.sum(2).mean(0), atol=1e-10, rtol=0)


def test_merge_of_halves_equals_the_whole(vit_lens, images):
    whole = vit_lens.collect(as_dataset(images), batch_size=6)
    first = vit_lens.collect(as_dataset(images[:10]), batch_size=4)
    second = vit_lens.collect(as_dataset(images[10:]), batch_size=3)
    merged = first.merge(second)
    assert merged.count == whole.count
    assert torch.allclose(merged.mean, whole.mean, atol=1e-12, rtol=0)
    assert torch.allclose(merged.covariance, whole.covariance, atol=1e-12, rtol=0)


def test_state_does_not_grow_with_the_number_of_images(vit_lens, images):
    small = vit_lens.collect(as_dataset(images[:4]))
    large = vit_lens.collect(as_dataset(images))
    assert [t.shape for t in (small.mean, small.moments.scatter)] == [t.shape for t in (large.mean, large.moments.scatter)]


def test_save_load_round_trip_is_bit_exact_and_checks_identity(vit_lens, images, tmp_path):
    stats = vit_lens.collect(as_dataset(images), convention="reference")
    path = stats.save(tmp_path / "stats")
    loaded = cliplens.load_stats(path, vit_lens, convention="reference")
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.covariance, stats.covariance)
    assert loaded.labels == stats.labels and loaded.metadata["data_fingerprint"] == stats.metadata["data_fingerprint"]
    other = wrap(tiny_vit(seed=9), "another")
    with pytest.raises(CliplensError, match="fingerprint"):
        cliplens.load_stats(path, other)
    with pytest.raises(CliplensError, match="convention"):
        cliplens.load_stats(path, vit_lens, convention="separate")
    with pytest.raises(CliplensError, match="not a cliplens artifact"):
        cliplens.load_stats(tmp_path)


def test_merge_refuses_different_settings(vit_lens, images):
    separate = vit_lens.collect(as_dataset(images[:6]))
    reference = vit_lens.collect(as_dataset(images[:6]), convention="reference")
    with pytest.raises(CliplensError, match="convention"):
        separate.merge(reference)


def test_nan_pieces_stop_the_pass_with_a_clear_error(images):
    model = tiny_vit(seed=2)
    with torch.no_grad():
        model.visual.transformer.resblocks[1].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(CliplensError, match="NaN"):
        wrap(model, "broken").collect(as_dataset(images[:3]))


def test_pair_statistics_merge_and_round_trip(resnet_lens, tmp_path):
    images = random_images(14, 64, seed=5)
    whole = resnet_lens.collect(as_dataset(images), granularity="pair", top_k=4, batch_size=5)
    merged = resnet_lens.collect(as_dataset(images[:6]), granularity="pair", top_k=4).merge(
        resnet_lens.collect(as_dataset(images[6:]), granularity="pair", top_k=4))
    assert torch.allclose(merged.coef_mean, whole.coef_mean, atol=1e-12, rtol=0)
    assert torch.allclose(merged.coef_variance, whole.coef_variance, atol=1e-12, rtol=0)
    assert torch.equal(merged.top_deviations()[1], whole.top_deviations()[1])
    assert torch.allclose(merged.norms(), whole.norms(), atol=1e-12, rtol=0)
    loaded = cliplens.load_stats(whole.save(tmp_path / "pairs"), resnet_lens, granularity="pair")
    assert torch.equal(loaded.norms(), whole.norms()) and torch.equal(loaded.principal_signs(), whole.principal_signs())
    coefficients = resnet_lens.decompose(images, granularity="pair").coefficients
    assert torch.allclose(whole.coef_mean, coefficients.mean(0), atol=1e-12, rtol=0)
    deviation = (coefficients - coefficients.mean(0)).abs()
    assert torch.allclose(whole.top_deviations()[0].abs(), deviation.topk(4, dim=0).values.permute(1, 2, 0),
                          atol=1e-12, rtol=0)


def test_pairs_need_a_resnet(vit_lens, images):
    with pytest.raises(CliplensError, match="ResNet"):
        vit_lens.collect(as_dataset(images[:2]), granularity="pair")

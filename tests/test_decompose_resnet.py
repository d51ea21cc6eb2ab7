"""ResNet attention-pool decomposition: completeness at every granularity and a literal per-pair oracle.

Float64 throughout; 1e-10 absolute is far above the ~1e-15 round-off of these few contractions and far below any
missing bias share (O(1e-2)).
"""

from __future__ import annotations

import pytest
import torch

from cliplens import CliplensError


def literal_pairs(model, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference-convention pairs r[b, h, n] [B, H, C, O] (docs/methods/resnet-pairs.md#rank-one), via a loop over heads
    and the backend's own modules for the trunk, plus the embedding from the backend."""
    visual = model.visual
    pool = visual.attnpool
    z = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
    z = z.flatten(2).transpose(1, 2)
    tokens = torch.cat([z.mean(1, keepdim=True), z], 1) + pool.positional_embedding  # [B, M, C]
    channels, heads = tokens.shape[-1], pool.num_heads
    dh = channels // heads
    pairs = []
    for h in range(heads):
        rows = slice(h * dh, (h + 1) * dh)
        q = tokens[:, 0] @ pool.q_proj.weight[rows].T + pool.q_proj.bias[rows]
        k = tokens @ pool.k_proj.weight[rows].T + pool.k_proj.bias[rows]
        a = torch.softmax(torch.einsum("be,bme->bm", q, k) / dh**0.5, -1)  # [B, M]
        w_v, b_v = pool.v_proj.weight[rows], pool.v_proj.bias[rows]  # [d_h, C], [d_h]
        w_o = pool.c_proj.weight[:, rows]  # [O, d_h]
        per_neuron = torch.einsum("bm,bmn->bn", a, tokens)[..., None] * w_v.T  # [B, C, d_h]: Σ_m a t_mn W_v[:, n]
        pairs.append((per_neuron + b_v / channels) @ w_o.T + pool.c_proj.bias / (heads * channels))
    return torch.stack(pairs, 1), model.encode_image(images)


@pytest.mark.parametrize("convention", ["separate", "reference"])
@pytest.mark.parametrize("granularity,spatial", [("head", False), ("head", True), ("neuron", False)])
def test_pieces_sum_to_embedding(resnet_lens, resnet_images, granularity, spatial, convention):
    dec = resnet_lens.decompose(resnet_images, granularity=granularity, spatial=spatial, convention=convention)
    total = dec.components.sum(1)
    total = total.sum(1) if spatial else total
    assert torch.allclose(total, resnet_lens.encode_image(resnet_images), atol=1e-10, rtol=0)
    assert torch.allclose(dec.embedding, resnet_lens.encode_image(resnet_images), atol=1e-10, rtol=0)


def test_pairs_equal_literal_oracle(resnet_lens, resnet_images):
    with torch.no_grad():
        expected, embedding = literal_pairs(resnet_lens.model, resnet_images)
    pairs = resnet_lens.decompose(resnet_images, granularity="pair", convention="reference")
    materialised = pairs.components.view_as(expected)
    assert torch.allclose(materialised, expected, atol=1e-10, rtol=0)
    assert torch.allclose(pairs.total(), embedding, atol=1e-10, rtol=0)
    assert torch.allclose(materialised.sum((1, 2)), embedding, atol=1e-10, rtol=0)
    assert pairs.labels[:2] == ["H0N0", "H0N1"] and len(pairs.labels) == materialised.shape[1] * materialised.shape[2]


def test_separate_pairs_are_rank_one_and_sum_with_bias(resnet_lens, resnet_images):
    pairs = resnet_lens.decompose(resnet_images, granularity="pair", convention="separate", normalize=True)
    assert pairs.offsets.abs().max() == 0
    heads, neurons = torch.tensor([0, 1, 1]), torch.tensor([3, 0, 7])
    pieces = pairs.pieces(heads, neurons)
    u = pairs.directions(heads, neurons)
    expected = pairs.coefficients[:, heads, neurons, None] * u / pairs.norm[..., None]
    assert torch.allclose(pieces, expected, atol=1e-12, rtol=0)
    assert torch.allclose(pairs.total(), pairs.target(), atol=1e-10, rtol=0)


def test_heads_and_neurons_are_sums_of_pairs(resnet_lens, resnet_images):
    pairs = resnet_lens.decompose(resnet_images, granularity="pair", convention="reference").components
    spec = resnet_lens.spec
    pairs = pairs.view(len(resnet_images), spec.heads, spec.channels, -1)
    heads = resnet_lens.decompose(resnet_images, granularity="head", convention="reference").components
    neurons = resnet_lens.decompose(resnet_images, granularity="neuron", convention="reference").components
    assert torch.allclose(pairs.sum(2), heads, atol=1e-10, rtol=0)
    assert torch.allclose(pairs.sum(1), neurons, atol=1e-10, rtol=0)


def test_spatial_head_pieces_sum_over_tokens(resnet_lens, resnet_images):
    for convention in ("separate", "reference"):
        heads = resnet_lens.decompose(resnet_images, granularity="head", convention=convention).components
        tokens = resnet_lens.decompose(resnet_images, granularity="head", spatial=True, convention=convention)
        assert torch.allclose(tokens.components.sum(2), heads, atol=1e-10, rtol=0)


def test_materialising_too_many_pairs_is_refused(resnet_lens, resnet_images, monkeypatch):
    from cliplens.decompose import resnet_pairs

    pairs = resnet_lens.decompose(resnet_images, granularity="pair")
    monkeypatch.setattr(resnet_pairs, "MAX_MATERIALISED_BYTES", 1024)
    with pytest.raises(CliplensError, match="pieces\\(heads, neurons\\)"):
        pairs.components


def test_unavailable_options_are_refused(resnet_lens, resnet_images):
    with pytest.raises(CliplensError, match="granularity"):
        resnet_lens.decompose(resnet_images, granularity="layer")
    with pytest.raises(CliplensError, match="spatial"):
        resnet_lens.decompose(resnet_images, granularity="pair", spatial=True)
    with pytest.raises(CliplensError, match="tokens"):
        resnet_lens.decompose(torch.zeros(1, 3, 96, 96, dtype=torch.float64))

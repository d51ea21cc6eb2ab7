"""ViT first-order decomposition: completeness, parity with the backend, and a literal per-head oracle.

Tolerances: in float64 every path is a handful of matrix products on O(1) values, so agreement is at round-off (~1e-14);
we assert 1e-10 (docs/methods/decomposition.md#invariants), which still catches any missing term (those are O(1e-2) or
larger). In float32 the backend's fused kernels and ours round differently; 1e-5 relative to the embedding norm covers
it.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from cliplens import CliplensError
from conftest import random_images, tiny_vit, wrap

OPTIONS = list(itertools.product(["layer", "head"], [False, True], ["separate", "reference"], [False, True]))


def summed(dec) -> torch.Tensor:
    total = dec.components.sum(1)
    return total.sum(1) if dec.spatial else total


@pytest.mark.parametrize("granularity,spatial,convention,normalize", OPTIONS)
def test_pieces_sum_to_embedding(vit_lens, vit_images, granularity, spatial, convention, normalize):
    dec = vit_lens.decompose(vit_images, granularity=granularity, spatial=spatial, convention=convention,
                             normalize=normalize)
    assert len(dec.labels) == dec.components.shape[1]
    assert torch.allclose(summed(dec), dec.target(), atol=1e-10, rtol=0)


def test_embedding_is_the_backends_own(vit_lens, vit_images):
    dec = vit_lens.decompose(vit_images)
    assert torch.allclose(dec.embedding, vit_lens.encode_image(vit_images), atol=1e-10, rtol=0)


@pytest.mark.parametrize("convention", ["separate", "reference"])
def test_spatial_refines_heads_and_heads_refine_layers(vit_lens, vit_images, convention):
    heads = vit_lens.decompose(vit_images, granularity="head", convention=convention)
    tokens = vit_lens.decompose(vit_images, granularity="head", spatial=True, convention=convention)
    layers = vit_lens.decompose(vit_images, granularity="layer", convention=convention)
    assert tokens.labels == heads.labels
    assert torch.allclose(tokens.components.sum(2), heads.components, atol=1e-10, rtol=0)
    spec = vit_lens.spec
    for layer in range(spec.layers):
        per_head = torch.stack([heads[f"L{layer}H{h}"] for h in range(spec.heads)]).sum(0)
        assert torch.allclose(per_head, layers[f"L{layer}.attn"], atol=1e-10, rtol=0)
        assert torch.allclose(heads[f"L{layer}.mlp"], layers[f"L{layer}.mlp"], atol=1e-10, rtol=0)
    non_head = [i for i, label in enumerate(tokens.labels) if "H" not in label]
    assert tokens.components[:, non_head, 1:].abs().max() == 0  # computed at CLS only


def literal_pieces(model, images: torch.Tensor, convention: str, normalize: bool) -> dict[str, torch.Tensor]:
    """The slow reference computation, straight from the backend's modules with explicit per-head loops.

    Builds the full [N(query), N(key), H, D] attention write of every layer (as the reference code does), keeps the CLS
    query, freezes LN_post at each image's own statistics and applies the convention's shares
    (docs/methods/decomposition.md#conventions). Returns per-image pieces keyed by label; heads are [B, N, d] (per
    source token), the rest [B, d].
    """
    visual = model.visual
    batch = images.shape[0]
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(batch, 1, -1), x], 1) + visual.positional_embedding
    x = visual.ln_pre(x)
    n, width = x.shape[1:]
    blocks = visual.transformer.resblocks
    heads = blocks[0].attn.num_heads
    dh = width // heads
    raw: dict[str, torch.Tensor] = {"embed": x[:, 0]}
    moved_bias = torch.zeros(width, dtype=x.dtype)
    for layer, block in enumerate(blocks):
        u = block.ln_1(x)
        w_in, b_in = block.attn.in_proj_weight, block.attn.in_proj_bias
        w_out, b_out = block.attn.out_proj.weight, block.attn.out_proj.bias
        attn_total = torch.zeros_like(x)
        for h in range(heads):
            rows = slice(h * dh, (h + 1) * dh)
            q = u @ w_in[:width][rows].T + b_in[:width][rows]
            k = u @ w_in[width : 2 * width][rows].T + b_in[width : 2 * width][rows]
            v = u @ w_in[2 * width :][rows].T + b_in[2 * width :][rows]
            pattern = torch.softmax(q @ k.transpose(1, 2) / dh**0.5, -1)  # [B, N, N]
            writes = pattern[..., None] * (v @ w_out[:, rows].T)[:, None]  # [B, N(query), N(key), D]
            attn_total += writes.sum(2)
            raw[f"L{layer}H{h}"] = writes[:, 0]  # CLS query row, per source token: [B, N, D]
        x = x + attn_total + b_out
        moved_bias = moved_bias + b_out
        mlp = block.mlp(block.ln_2(x))
        raw[f"L{layer}.mlp"] = mlp[:, 0]
        x = x + mlp
    r = x[:, 0]
    ln = visual.ln_post
    mu, sigma = r.mean(-1, keepdim=True), (r.var(-1, unbiased=False, keepdim=True) + ln.eps).sqrt()
    z = ln(r) @ visual.proj
    nu = z.norm(dim=-1, keepdim=True) if normalize else torch.ones_like(mu)
    terms = 2 * len(blocks) + 1
    pieces = {}
    for label, t in raw.items():
        is_head = "H" in label
        if convention == "separate":
            centred = t - t.mean(-1, keepdim=True)
            value = (ln.weight * centred / (sigma[:, None] if is_head else sigma)) @ visual.proj
        else:
            share = 1 / (terms * heads * n) if is_head else 1 / terms
            if is_head:
                t = t + b_out_of(blocks, label) / (heads * n)
                value = (ln.weight * (t - share * mu[:, None]) / sigma[:, None] + share * ln.bias) @ visual.proj
            else:
                value = (ln.weight * (t - share * mu) / sigma + share * ln.bias) @ visual.proj
        pieces[label] = value / (nu[:, None] if is_head else nu)
    if convention == "separate":
        centred = moved_bias - moved_bias.mean()
        pieces["bias"] = ((ln.weight * centred / sigma + ln.bias) @ visual.proj) / nu
    return pieces


def b_out_of(blocks, label: str) -> torch.Tensor:
    return blocks[int(label[1 : label.index("H")])].attn.out_proj.bias


@pytest.mark.parametrize("convention,normalize", [("reference", True), ("reference", False), ("separate", False),
                                                  ("separate", True)])
def test_fast_path_equals_literal_oracle(vit_lens, vit_images, convention, normalize):
    with torch.no_grad():
        expected = literal_pieces(vit_lens.model, vit_images, convention, normalize)
    dec = vit_lens.decompose(vit_images, granularity="head", spatial=True, convention=convention, normalize=normalize)
    assert sorted(expected) == sorted(dec.labels)
    for label, piece in expected.items():
        fast = dec[label]
        got = fast if "H" in label else fast[:, 0]
        assert torch.allclose(got, piece, atol=1e-10, rtol=0), label


def test_float32_matches_float64_within_tolerance(vit_images):
    lens32, lens64 = wrap(tiny_vit(), "tiny32", "fp32"), wrap(tiny_vit(), "tiny64", "fp64")  # same seed, same weights
    dec32, dec64 = lens32.decompose(vit_images.float()), lens64.decompose(vit_images)
    scale = dec64.embedding.norm(dim=-1).max()
    assert ((dec32.components.double() - dec64.components).abs().max() / scale) < 1e-5
    assert ((summed(dec32).double() - dec32.embedding.double()).abs().max() / scale) < 1e-5
    assert ((dec32.embedding.double() - lens32.encode_image(vit_images.float()).double()).abs().max() / scale) < 1e-5


@pytest.mark.parametrize("variant", [dict(ls_init_value=0.3), dict(quick_gelu=True)])
def test_layerscale_and_quickgelu_variants(variant):
    lens = wrap(tiny_vit(seed=3, **variant), "variant")
    images = random_images(3, 32, seed=1)
    dec = lens.decompose(images, convention="reference", spatial=True)
    assert torch.allclose(dec.embedding, lens.encode_image(images), atol=1e-10, rtol=0)
    assert torch.allclose(summed(dec), dec.embedding, atol=1e-10, rtol=0)
    expected = "quick_gelu" if variant.get("quick_gelu") else "gelu"
    assert lens.spec.blocks[0].activation == expected


@pytest.mark.parametrize("variant,named", [(dict(attentional_pool=True), "attentional pooler"),
                                           (dict(pool_type="avg"), "pool_type='avg'"),
                                           (dict(no_ln_pre=True), "ln_pre")])
def test_out_of_scope_variants_are_refused_by_name(variant, named):
    lens = wrap(tiny_vit(**variant), "variant")
    with pytest.raises(CliplensError, match=named):
        lens.decompose(random_images(1, 32))


def test_bad_inputs_are_refused(vit_lens):
    with pytest.raises(CliplensError, match="NaN"):
        vit_lens.decompose(torch.full((1, 3, 32, 32), float("nan"), dtype=torch.float64))
    with pytest.raises(CliplensError, match="tokens"):
        vit_lens.decompose(random_images(1, 48))
    with pytest.raises(CliplensError, match="granularity"):
        vit_lens.decompose(random_images(1, 32), granularity="neuron")
    with pytest.raises(CliplensError, match="convention"):
        vit_lens.decompose(random_images(1, 32), convention="mine")
    with pytest.raises(CliplensError, match=r"\[B, 3, H, W\]"):
        vit_lens.decompose(torch.zeros(2, 32, 32, dtype=torch.float64))

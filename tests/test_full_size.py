"""Shape-realistic parity: full-size random-init ViT-B-32, RN50 and an HF ViT-B/32-shaped CLIPModel, a few images.

fp32 (the precision users run): pieces sum to the embedding within 1e-5 of its norm, and our embedding matches the
backend's `encode_image` within 1e-5 (open_clip) or 1e-4 (HF, whose attention kernels differ;
docs/methods/decomposition.md#invariants).
"""

from __future__ import annotations

import pytest
import torch

import cliplens
from conftest import random_images


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm(dim=-1) / b.double().norm(dim=-1)).max().item()


@pytest.fixture(scope="module")
def vit_b32():
    return cliplens.load("ViT-B-32", seed=0)


@pytest.fixture(scope="module")
def rn50():
    return cliplens.load("RN50", seed=0)


def test_vit_b32_parity_and_completeness(vit_b32):
    images = random_images(2, 224, dtype=torch.float32)
    reference = vit_b32.encode_image(images)
    for convention in ("separate", "reference"):
        dec = vit_b32.decompose(images, spatial=True, convention=convention)
        assert dec.components.shape == (2, 1 + 12 * 13 + (convention == "separate"), 50, 512)
        assert relative(dec.embedding, reference) < 1e-5
        assert relative(dec.components.sum((1, 2)), dec.embedding) < 1e-5


def test_rn50_parity_and_completeness(rn50):
    images = random_images(2, 224, dtype=torch.float32)
    reference = rn50.encode_image(images)
    pairs = rn50.decompose(images, granularity="pair")
    assert pairs.coefficients.shape == (2, 32, 2048)
    assert relative(pairs.embedding, reference) < 1e-5
    assert relative(pairs.total(), reference) < 1e-5
    heads = rn50.decompose(images, granularity="head", convention="reference")
    assert relative(heads.components.sum(1), reference) < 1e-5


def test_hf_vit_b32_shaped_parity_and_completeness():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig())  # defaults are ViT-B/32 shapes
    lens = cliplens.from_hf(model, name="hf-random-b32")
    assert lens.spec.layers == 12 and lens.spec.tokens == 50 and lens.spec.blocks[0].activation == "quick_gelu"
    images = random_images(2, 224, dtype=torch.float32)
    reference = lens.encode_image(images)
    dec = lens.decompose(images, convention="reference")
    assert relative(dec.embedding, reference) < 1e-4
    assert relative(dec.components.sum(1), dec.embedding) < 1e-5


def test_hf_tiny_float64_exact():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    config = transformers.CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act="gelu"),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16,
    )
    lens = cliplens.from_hf(transformers.CLIPModel(config), name="hf-tiny", precision="fp64")
    images = random_images(3, 32)
    for spatial in (False, True):
        dec = lens.decompose(images, spatial=spatial, convention="reference", normalize=True)
        total = dec.components.sum(1)
        total = total.sum(1) if spatial else total
        assert torch.allclose(dec.embedding, lens.encode_image(images), atol=1e-10, rtol=0)
        assert torch.allclose(total, dec.target(), atol=1e-10, rtol=0)

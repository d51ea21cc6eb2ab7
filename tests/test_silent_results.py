"""Results that used to be silently wrong are now right or refused in one line.

NaN weights and huge inputs gave all-NaN pieces from `decompose`; `decompose --granularity pair --normalize` wrote the
unnormalised coefficients; fp32 and fp64 statistics merged; a merge with itself counted every image twice.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import cliplens
from cliplens import CliplensError
from cliplens.cli import decompose
from test_cli_foundation import DATA, lenses, run  # noqa: F401 (lenses is a fixture)
from test_data import to_tensor, write_image
from test_stats import as_dataset
from conftest import random_images, tiny_resnet, tiny_vit, wrap


def broken(model):
    """`model` with one NaN weight in its first MLP / first bottleneck."""
    with torch.no_grad():
        weights = model.visual.transformer.resblocks[0].mlp.c_fc.weight if hasattr(model.visual, "transformer") \
            else model.visual.layer1[0].conv1.weight
        weights.view(-1)[0] = float("nan")
    return wrap(model, "broken")


@pytest.mark.parametrize("model,size,granularity", [(tiny_vit, 32, "head"), (tiny_vit, 32, "layer"),
                                                    (tiny_resnet, 64, "head"), (tiny_resnet, 64, "pair")])
def test_nan_weights_are_refused_by_decompose_as_by_collect(model, size, granularity):
    lens = broken(model(seed=1))
    images = random_images(3, size)
    with pytest.raises(CliplensError, match="NaN") as decomposing:
        lens.decompose(images, granularity=granularity)
    with pytest.raises(CliplensError, match="NaN") as collecting:
        lens.collect(as_dataset(images), granularity=granularity)
    assert str(decomposing.value) == str(collecting.value) and "check the weights" in str(decomposing.value)


@pytest.mark.parametrize("which,size", [("vit_lens", 32), ("resnet_lens", 64)])
def test_finite_but_huge_inputs_are_refused_naming_the_cause(request, which, size):
    lens = request.getfixturevalue(which)
    images = random_images(2, size) * 1e200  # finite in fp64; a LayerNorm variance squares them past the range
    for call in (lambda: lens.decompose(images), lambda: lens.collect(as_dataset(images))):
        with pytest.raises(CliplensError, match=r"reach \|x\| = .*e\+200.*lens.preprocess"):
            call()
    assert torch.isfinite(lens.decompose(images / 1e190).components).all()  # large but safe inputs still work


def test_pair_coefficients_with_normalize_are_those_of_the_unit_embedding(lenses, monkeypatch, tmp_path):
    result = run(lenses, monkeypatch, "rn", decompose.command, "--data-path", DATA, "--output-dir", tmp_path / "o",
                 "--granularity", "pair", "--normalize")
    assert result.exit_code == 0, result.output
    written = torch.from_numpy(np.load(tmp_path / "o" / "coefficients.npy")).double()
    embedding = torch.from_numpy(np.load(tmp_path / "o" / "embedding.npy")).double()
    assert json.loads((tmp_path / "o" / "metadata.json").read_text())["normalize"] is True
    lens = lenses["rn"]
    pairs = lens.decompose(torch.zeros(1, 3, 64, 64, dtype=torch.float64), granularity="pair")
    # the pairs rebuilt from the written coefficients (separate convention: offsets are zero) sum to the unit embedding
    rebuilt = torch.einsum("bhn,hen,hoe->bo", written, pairs.value_weight, pairs.out_weight)
    unit = embedding / embedding.norm(dim=-1, keepdim=True)
    assert torch.allclose(rebuilt + pairs.bias / embedding.norm(dim=-1, keepdim=True), unit, atol=1e-4)


def test_statistics_of_different_precisions_are_not_merged():
    images = random_images(4, 32)
    fp64 = wrap(tiny_vit(seed=3), "tiny").collect(as_dataset(images[:2]))
    fp32 = wrap(tiny_vit(seed=3), "tiny", precision="fp32").collect(as_dataset(images[2:].float()))
    assert fp32.metadata["fingerprint"] == fp64.metadata["fingerprint"]  # same weights: only the precision differs
    with pytest.raises(CliplensError, match="precision='fp32', but this needs precision='fp64'"):
        fp64.merge(fp32)


def test_merging_statistics_with_themselves_or_overlapping_data_is_refused(vit_lens, resnet_lens, tmp_path,
                                                                            monkeypatch):
    for i in range(3):
        write_image(tmp_path / "a" / f"{i}.png", i)
        write_image(tmp_path / "b" / f"{10 + i}.png", 10 + i)
    monkeypatch.setattr(vit_lens, "preprocess", lambda image: to_tensor(image).double())
    first, second = vit_lens.collect(str(tmp_path / "a")), vit_lens.collect(str(tmp_path / "b"))
    loaded = cliplens.load_stats(first.save(tmp_path / "stats"), vit_lens)
    for a, b in ((first, first), (first, loaded), (first.merge(second), second)):
        with pytest.raises(CliplensError, match="count those images twice") as error:
            a.merge(b)
        assert first.metadata["data_fingerprint"] in str(error.value) or second.metadata["data_fingerprint"] in str(
            error.value)
    assert first.merge(second).count == 6  # disjoint data still merges
    monkeypatch.setattr(resnet_lens, "preprocess", lambda image: to_tensor(image.resize((64, 64))).double())
    pairs = resnet_lens.collect(str(tmp_path / "a"), granularity="pair", top_k=2)
    with pytest.raises(CliplensError, match="count those images twice"):
        pairs.merge(pairs)

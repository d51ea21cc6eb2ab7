"""`cliplens collect`, `decompose` and `info` end to end through click, on tiny models and shapes data.

Only model loading is swapped for a tiny lens; option parsing, data, the streaming pass and the files are the real
ones, and the files are checked against the library's own results.
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cliplens
from cliplens.cli import collect, decompose, info
from cliplens.data import as_source
from conftest import tiny_resnet, tiny_vit

DATA = "shapes:test:12"


def shapes_lens(model, size: int, name: str):
    import open_clip

    return cliplens.from_openclip(model, open_clip.image_transform(size, is_train=False),
                                  partial(open_clip.tokenize, context_length=16), name=name, pretrained=None,
                                  precision="fp64")


@pytest.fixture(scope="module")
def lenses():
    return {"vit": shapes_lens(tiny_vit(), 32, "tiny-vit"), "rn": shapes_lens(tiny_resnet(), 64, "tiny-rn")}


def run(lenses, monkeypatch, which: str, command, *args):
    for module in (collect, decompose, info):
        monkeypatch.setattr(module, "load_lens", lambda options: lenses[which])
    result = CliRunner().invoke(command, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_collect_writes_statistics_equal_to_the_library(lenses, monkeypatch, tmp_path):
    result = run(lenses, monkeypatch, "vit", collect.command, "--data-path", DATA, "--output-dir", tmp_path,
                 "--convention", "reference", "--batch-size", "5", "--show", "3")
    assert result.exit_code == 0, result.output
    assert "12 of 12 images used" in result.output and "share" in result.output
    saved = cliplens.load_stats(tmp_path / "stats", lenses["vit"], convention="reference")
    direct = lenses["vit"].collect(as_source(DATA), convention="reference")
    assert saved.count == 12 and torch.allclose(saved.covariance, direct.covariance, atol=1e-12, rtol=0)


def test_collect_pairs_for_a_resnet(lenses, monkeypatch, tmp_path):
    result = run(lenses, monkeypatch, "rn", collect.command, "--data-path", DATA, "--output-dir", tmp_path,
                 "--granularity", "pair", "--top-k", "4")
    assert result.exit_code == 0, result.output
    stats = cliplens.load_stats(tmp_path / "stats", lenses["rn"], granularity="pair")
    assert stats.count == 12 and stats.norms().shape[-1] == 4
    assert result.output.count("H") >= 10  # the ten highest-scoring pairs are listed


def test_decompose_writes_pieces_that_sum_to_the_embedding(lenses, monkeypatch, tmp_path):
    result = run(lenses, monkeypatch, "vit", decompose.command, "--data-path", DATA, "--output-dir", tmp_path,
                 "--spatial")
    assert result.exit_code == 0, result.output
    components, embedding = np.load(tmp_path / "components.npy"), np.load(tmp_path / "embedding.npy")
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert components.shape == (12, len(metadata["labels"]), 17, 32) and metadata["spatial"] is True
    assert np.allclose(components.sum((1, 2)), embedding, atol=1e-5)  # stored as float32


def test_decompose_refuses_large_sets(lenses, monkeypatch, tmp_path):
    with pytest.raises(cliplens.CliplensError, match="use `cliplens collect`"):
        run(lenses, monkeypatch, "vit", decompose.command, "--data-path", DATA, "--output-dir", tmp_path,
            "--max-images", "4")


@pytest.mark.parametrize("which,expected", [("vit", "pieces: head-token"), ("rn", "kept factorised")])
def test_info_describes_the_architecture(lenses, monkeypatch, which, expected):
    result = run(lenses, monkeypatch, which, info.command, "any-model", "--images", "10")
    assert result.exit_code == 0, result.output
    assert expected in result.output and "independent of the number of images" in result.output


def test_demo_runs_the_whole_pipeline_on_both_toys(small_demo):
    """The README's first command, end to end (at 64 images per set): every step's main output is written."""
    root, printed = small_demo
    tmp_path = root / "demo"
    for path in ("vit-analyze/analysis/metadata.json", "rn-analyze/analysis/scores.json", "vit-textspan/textspan.csv", "vit-reconstruct/reconstruction.png",
                 "vit-ablate/ablation.csv", "vit-second-order/neuron_words_L1.csv",
                 "vit-second-order/ablation_L1.csv", "vit-retrieve/L1H2.png", "rn-pairs/pair_words.csv",
                 "rn-neuron-ablate/ablation.csv", "rn-retrieve/N342.png", "vit-components/edits.png",
                 "vit-components/queries.csv", "rn-spurious/summary.csv", "rn-spurious/spurious.png",
                 "cnn-dissect/toy-cnn_fc.csv", "cnn-dissect/toy-cnn_fc_0.png", "vit-report/index.html",
                 "rn-report/index.html", "vit-segment/metrics.csv", "vit-segment/overlays.png",
                 "rn-segment/metrics.csv"):
        assert (tmp_path / path).is_file(), path
    assert any((tmp_path / "vit-second-order" / "top_images_L1").glob("*.png"))
    assert f"open {(tmp_path / 'vit-report' / 'index.html').resolve().as_uri()}" in printed

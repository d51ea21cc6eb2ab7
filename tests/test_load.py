"""Model loading: ids, tags, checkpoint files, seeds, and one-line errors for everything that can go wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import cliplens
from cliplens import CliplensError
from conftest import random_images

SMALL = "ViT-S-32"


@pytest.fixture(scope="module")
def small():
    return cliplens.load(SMALL, seed=3)


def test_unknown_id_suggests_the_closest_ones():
    with pytest.raises(CliplensError, match=r"unknown model id 'ViT-B-33'; closest: .*ViT-B-32"):
        cliplens.load("ViT-B-33")


def test_unknown_tag_lists_the_valid_ones():
    with pytest.raises(CliplensError, match=r"no pretrained tag 'opnai'; valid tags: .*openai"):
        cliplens.load("ViT-B-32", pretrained="opnai")


def test_unreachable_weights_say_how_to_pass_a_file():
    with pytest.raises(CliplensError, match="cannot be downloaded here.*pretrained='/path/to/weights.safetensors'"):
        cliplens.load("RN50", pretrained="openai")


def test_seed_controls_random_init(small):
    again = cliplens.load(SMALL, seed=3)
    other = cliplens.load(SMALL, seed=4)
    assert again.fingerprint == small.fingerprint and other.fingerprint != small.fingerprint


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_files_load_the_same_weights(small, tmp_path, suffix):
    state = {k: v.contiguous() for k, v in small.model.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    loaded = cliplens.load(SMALL, pretrained=str(path), seed=99)
    images = random_images(1, 224, dtype=torch.float32)
    assert torch.equal(loaded.encode_image(images), small.encode_image(images))


def test_bad_checkpoints_are_refused(small, tmp_path):
    with pytest.raises(CliplensError, match="does not exist"):
        cliplens.load(SMALL, pretrained=str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x01\x02garbage")
    with pytest.raises(CliplensError, match="cannot read checkpoint"):
        cliplens.load(SMALL, pretrained=str(corrupt))
    partial = tmp_path / "partial.safetensors"
    save_file({"visual.proj": small.model.visual.proj.detach().contiguous(), "stray": torch.zeros(1)}, partial)
    with pytest.raises(CliplensError, match="does not fit ViT-S-32"):
        cliplens.load(SMALL, pretrained=str(partial))


def test_hf_models_that_are_not_available_offline():
    pytest.importorskip("transformers")
    with pytest.raises(CliplensError, match="cannot be downloaded here"):
        cliplens.load("hf:openai/clip-vit-base-patch32")


def test_bad_settings_are_refused():
    with pytest.raises(CliplensError, match="precision"):
        cliplens.load("toy:vit", precision="fp8")
    with pytest.raises(CliplensError, match="model must be an id"):
        cliplens.load("")


def test_cli_errors_are_one_line_without_traceback():
    result = subprocess.run([sys.executable, "-m", "cliplens", "info", "ViT-B-33"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown model id 'ViT-B-33'; closest: ViT-B-32, ViT-S-32, ViT-M-32"]
    assert "Traceback" not in result.stderr


def test_cli_help_works_both_ways():
    for argv in (["-m", "cliplens", "--help"], ["-c", "from cliplens.cli import main; main(['--help'])"]):
        result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "collect" in result.stdout


def test_pretrained_means_one_thing_per_family(tmp_path):
    """A toy takes no tag or file (only a train-toy folder); an hf: id names its weights itself."""
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(b"not used")
    with pytest.raises(CliplensError, match="toy:vit takes no pretrained tag or checkpoint file"):
        cliplens.load("toy:vit", pretrained=str(checkpoint))
    with pytest.raises(CliplensError, match="toy:rn takes no pretrained tag"):
        cliplens.load("toy:rn", pretrained="openai")
    with pytest.raises(CliplensError, match=r"hf:some/repo names its weights itself; drop pretrained='openai'"):
        cliplens.load("hf:some/repo", pretrained="openai")


def test_a_toy_loads_from_a_train_toy_folder(tmp_path):
    """The folder `cliplens train-toy` writes is the toys' `pretrained`; the same weights keep the same fingerprint."""
    from cliplens.models.toy import load_toy, save_toy

    model, *_ = load_toy("vit")
    save_toy(model, tmp_path, "vit", {"architecture": load_toy("vit")[3]["architecture"]})
    shipped, retrained = cliplens.load("toy:vit"), cliplens.load("toy:vit", pretrained=str(tmp_path))
    assert retrained.pretrained == str(tmp_path)
    assert retrained.fingerprint == shipped.fingerprint  # fp16 weights written back as fp16: identical
    with torch.no_grad():
        next(retrained.model.parameters()).add_(1.0)
    del retrained.__dict__["fingerprint"]
    assert retrained.fingerprint != shipped.fingerprint


def test_the_fingerprint_depends_on_the_weights_and_id_only(small):
    relabelled = cliplens.from_openclip(small.model, small.preprocess, None, name=SMALL, pretrained="/elsewhere.pt")
    assert relabelled.fingerprint == small.fingerprint

"""Shared fixtures: tiny random-init CLIP models in float64, built directly with open_clip (fast, offline)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network; fail fast instead of retrying

import cliplens  # noqa: E402

TEXT_CFG = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)


def tiny_vit(seed: int = 0, **vision: object):
    import open_clip

    torch.manual_seed(seed)
    cfg = dict(layers=3, width=64, head_width=16, patch_size=8, image_size=32)
    cfg.update(vision)
    quick_gelu = bool(cfg.pop("quick_gelu", False))
    return open_clip.CLIP(32, cfg, TEXT_CFG, quick_gelu=quick_gelu)


def tiny_resnet(seed: int = 0):
    """A ModifiedResNet with an attention pool; bn3 weights (zero at init) are perturbed so no branch is dead."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(32, dict(layers=(1, 1, 1, 1), width=16, head_width=16, image_size=64), TEXT_CFG)
    with torch.no_grad():
        for name, param in model.visual.named_parameters():
            if name.endswith("bn3.weight"):
                param.normal_(0.0, 0.5)
    return model


def wrap(model, name: str, precision: str = "fp64"):
    import open_clip

    return cliplens.from_openclip(model, lambda image: image, open_clip.get_tokenizer("ViT-B-32", context_length=16),
                                  name=name, pretrained=None, precision=precision)


@pytest.fixture(scope="session")
def vit_lens():
    return wrap(tiny_vit(), "tiny-vit")


@pytest.fixture(scope="session")
def resnet_lens():
    return wrap(tiny_resnet(), "tiny-rn")


def random_images(n: int, size: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator, dtype=dtype)


@pytest.fixture(scope="session")
def vit_images():
    return random_images(5, 32)


@pytest.fixture(scope="session")
def resnet_images():
    return random_images(5, 64)


def run_cli(*args: object) -> str:
    """`cliplens ARGS...` in this process; its output, after checking that it succeeded (an exception is re-raised
    with its own traceback)."""
    from click.testing import CliRunner

    from cliplens.cli import cli

    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


SMALL_DEMO = "shapes:test:64"


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory):
    """(root, printed): `cliplens demo` at 64 images per set, in root/demo, run once for the whole session because it
    is the slowest thing the tests do (test_cli_foundation and test_outputs both read it); root/cache is its cache."""
    from click.testing import CliRunner

    from cliplens.cli import cli, demo

    root = tmp_path_factory.mktemp("small-demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPLENS_CACHE", str(root / "cache"))
        patch.setattr(demo, "FIT", f"{SMALL_DEMO}:0")
        patch.setattr(demo, "EVAL", f"{SMALL_DEMO}:1")
        result = CliRunner().invoke(cli, ["demo", "--output-dir", str(root / "demo")])
    assert result.exit_code == 0, result.output
    return root, result.output

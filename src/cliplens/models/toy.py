"""The toy CLIP zoo: small open_clip models trained on the shapes world and shipped inside the package.

Each toy is a stock `open_clip.CLIP` built from an explicit config (a ViT with CLS pooling, or a ModifiedResNet with
an attention pool) with a real open_clip text tower and BPE tokenizer, so every code path that serves real CLIP
models serves the toys unchanged. Weights are stored in fp16 to keep the package small; `load_toy` returns them in
the dtype asked for.
"""

from __future__ import annotations

import json
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import CliplensError
from ..io.atomic import replacing, write_text
from .weights import load_weights

CONTEXT_LENGTH = 32
TEXT_TOWER = {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit": {
        "embed_dim": 128,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 96, "patch_size": 16, "width": 64, "layers": 4, "head_width": 16, "mlp_ratio": 4.0},
        "text_cfg": TEXT_TOWER,
    },
    "rn": {
        "embed_dim": 128,
        "quick_gelu": False,
        "vision_cfg": {"image_size": 96, "layers": [1, 1, 1, 1], "width": 12, "head_width": 64},
        "text_cfg": TEXT_TOWER,
    },
}

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def toy_directory() -> Path:
    return Path(str(resources.files("cliplens") / "assets" / "toys"))


def check_name(name: str) -> None:
    if name not in ARCHITECTURES:
        available = ", ".join(f"toy:{n}" for n in ARCHITECTURES)
        raise CliplensError(f"unknown toy model {name!r}; available toys: {available}")


def build_model(architecture: dict[str, Any]) -> torch.nn.Module:
    """A freshly initialised open_clip CLIP (random weights from torch's current RNG state)."""
    import open_clip

    return open_clip.CLIP(
        embed_dim=architecture["embed_dim"],
        vision_cfg=dict(architecture["vision_cfg"]),
        text_cfg=dict(architecture["text_cfg"]),
        quick_gelu=architecture["quick_gelu"],
    )


def image_size(architecture: dict[str, Any]) -> int:
    return int(architecture["vision_cfg"]["image_size"])


def make_preprocess(architecture: dict[str, Any]) -> Callable:
    """open_clip's eval transform at the model's resolution with CLIP's mean and std (PIL image -> [3, H, W])."""
    from open_clip import image_transform

    return image_transform(image_size(architecture), is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


def make_tokenizer(architecture: dict[str, Any]) -> Callable[[list[str]], torch.Tensor]:
    import open_clip

    return partial(open_clip.tokenize, context_length=architecture["text_cfg"]["context_length"])


def weight_file(directory: Path, name: str) -> Path:
    return directory / f"{name}.safetensors"


def config_file(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def save_toy(model: torch.nn.Module, directory: Path, name: str, config: dict[str, Any]) -> None:
    """Write `<name>.safetensors` (floating tensors as fp16) and `<name>.json` (architecture + training record)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {
        key: (value.half() if value.is_floating_point() else value).contiguous()
        for key, value in model.state_dict().items()
    }
    with replacing(weight_file(directory, name)) as staging:
        save_file(state, staging)
    write_text(config_file(directory, name), json.dumps(config, indent=2) + "\n")


def load_toy(
    name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, directory: Path | None = None
) -> tuple[torch.nn.Module, Callable, Callable[[list[str]], torch.Tensor], dict[str, Any]]:
    """(model in eval mode, preprocess, tokenizer, info) for the shipped toy `name` ("vit" or "rn")."""
    from safetensors.torch import load_file

    check_name(name)
    directory = toy_directory() if directory is None else Path(directory)
    weights, config_path = weight_file(directory, name), config_file(directory, name)
    if not weights.is_file() or not config_path.is_file():
        raise CliplensError(
            f"toy {name!r} is missing from {directory} (need {weights.name} and {config_path.name}); "
            f"reinstall cliplens or rebuild it with `cliplens train-toy --model {name}`"
        )
    rebuild = f"rebuild it with `cliplens train-toy --model {name}`"
    try:
        config = json.loads(config_path.read_text())
        architecture = config["architecture"]
        model = build_model(architecture)
        state = load_file(str(weights))
    except Exception as exc:  # deliberate: a damaged JSON, config or safetensors file fails in many ways
        raise CliplensError(f"cannot read the toy {name!r} in {directory} ({type(exc).__name__}); {rebuild}") from exc
    load_weights(model, state, str(weights), f"the architecture in {config_path.name}", rebuild)
    model = model.to(device=device, dtype=dtype).eval()
    info = {"name": f"toy:{name}", "weights": str(weights), **config}
    return model, make_preprocess(architecture), make_tokenizer(architecture), info


def shipped_toys(directory: Path | None = None) -> list[str]:
    """Names of the toys whose weights and config are present (what `cliplens.load("toy:...")` can load)."""
    directory = toy_directory() if directory is None else Path(directory)
    return [name for name in ARCHITECTURES
            if weight_file(directory, name).is_file() and config_file(directory, name).is_file()]

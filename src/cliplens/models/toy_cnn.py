"""`toy:cnn`: a small convolutional shape classifier on the shapes world, shipped as a CLIP-Dissect target.

Its final layer `fc` has one neuron per shape (in `SHAPES` order), which is the ground truth that checks neuron labels
(docs/methods/dissect.md#evaluation). Four conv stages `layer1..layer4` (3x3 conv, stride 2 except the last, batch
norm, ReLU: maps of 32, 16, 8 and 8 pixels for its 64-pixel input), a global max pool and `fc` (an average pool
learned far slower: small objects on textured backgrounds drown in the mean). Weights are
stored as fp16 safetensors next to the toy CLIPs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CliplensError
from ..io.atomic import replacing, write_text
from .toy import CLIP_MEAN, CLIP_STD, toy_directory
from .weights import load_weights

NAME = "cnn"
ARCHITECTURE: dict[str, Any] = {"kind": "cnn", "image_size": 64, "widths": [16, 32, 64, 64], "classes": 6}


class ToyCNN(nn.Module):
    """layer1..layer4 (conv 3x3, batch norm, ReLU) -> global max -> fc; module paths are Dissect's layer names."""

    def __init__(self, widths: list[int], classes: int) -> None:
        super().__init__()
        channels = [3, *widths]
        for i in range(len(widths)):
            stride = 2 if i < len(widths) - 1 else 1
            stage = nn.Sequential(nn.Conv2d(channels[i], channels[i + 1], 3, stride=stride, padding=1),
                                  nn.BatchNorm2d(channels[i + 1]), nn.ReLU())
            self.add_module(f"layer{i + 1}", stage)
        self.depth = len(widths)
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for i in range(self.depth):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.amax((2, 3)))


def build_cnn(architecture: dict[str, Any] = ARCHITECTURE) -> ToyCNN:
    return ToyCNN(list(architecture["widths"]), int(architecture["classes"]))


def cnn_preprocess(architecture: dict[str, Any] = ARCHITECTURE) -> Callable:
    """open_clip's eval transform at the CNN's resolution with CLIP's mean and std (as the training batches)."""
    from open_clip import image_transform

    return image_transform(int(architecture["image_size"]), is_train=False, mean=CLIP_MEAN, std=CLIP_STD)


def save_cnn(model: ToyCNN, directory: Path, record: dict[str, Any]) -> None:
    """`cnn.safetensors` (fp16) and `cnn.json` (architecture, training record, measured accuracy)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {key: (value.half() if value.is_floating_point() else value).contiguous()
             for key, value in model.state_dict().items()}
    with replacing(directory / f"{NAME}.safetensors") as staging:
        save_file(state, staging)
    write_text(directory / f"{NAME}.json", json.dumps(record, indent=2) + "\n")


def load_cnn(directory: Path | None = None) -> tuple[ToyCNN, Callable, dict[str, Any]]:
    """(model in eval mode, fp32, preprocess, record) of the shipped toy:cnn or of a `train-toy --model cnn` folder."""
    from safetensors.torch import load_file

    directory = toy_directory() if directory is None else Path(directory)
    weights, config = directory / f"{NAME}.safetensors", directory / f"{NAME}.json"
    rebuild = "rebuild it with `cliplens train-toy --model cnn`"
    if not weights.is_file() or not config.is_file():
        raise CliplensError(f"toy:cnn is missing from {directory} (need {weights.name} and {config.name}); {rebuild}")
    try:
        record = json.loads(config.read_text())
        model = build_cnn(record["architecture"])
        state = load_file(str(weights))
    except Exception as exc:  # deliberate: a damaged JSON or safetensors file fails in many ways
        raise CliplensError(f"cannot read toy:cnn in {directory} ({type(exc).__name__}); {rebuild}") from exc
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    load_weights(model, state, str(weights), "toy:cnn", rebuild)
    return model.eval().requires_grad_(False), cnn_preprocess(record["architecture"]), record

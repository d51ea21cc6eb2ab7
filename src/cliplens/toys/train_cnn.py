"""Train `toy:cnn`, the shapes-world shape classifier that CLIP-Dissect is checked against, on CPU from a seed.

The first `scenes` scenes of the `train` split are rendered once (rendering costs more than a step of this small
net), and every step fits the shape of a seeded random batch of them with cross-entropy; the final layer therefore
has one neuron per shape, in `SHAPES` order. The same seed, steps and thread count give the same
weights (one process, deterministic CPU kernels). Accuracy is measured on held-out `test` scenes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import CliplensError, require_positive_int
from ..models.toy_cnn import ARCHITECTURE, ToyCNN, build_cnn, save_cnn
from ..shapes import render
from ..shapes.vocabulary import SHAPES
from .train import MAX_THREADS, batch_preprocess, learning_rate

SHIPPED_CNN_STEPS = 800


@dataclass(frozen=True)
class CNNConfig:
    seed: int = 0
    steps: int = SHIPPED_CNN_STEPS
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    threads: int = 1
    scenes: int = 8192

    def check(self) -> None:
        require_positive_int("--steps", self.steps)
        require_positive_int("--batch-size", self.batch_size)
        require_positive_int("scenes", self.scenes)
        require_positive_int("--threads", self.threads, maximum=MAX_THREADS)
        if not 0 <= self.seed < 2**64:
            raise CliplensError(f"--seed must be an integer from 0 to 2**64 - 1, got {self.seed}")


def _batch(n: int, seed: int, split: str, start: int) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = render(n, seed, split, start=start)
    images = batch_preprocess([scene.image for scene in scenes], ARCHITECTURE["image_size"])
    return images, torch.tensor([SHAPES.index(scene.objects[0].shape) for scene in scenes])


@torch.no_grad()
def held_out_accuracy(model: ToyCNN, n: int = 1000, seed: int = 1) -> float:
    """Top-1 shape accuracy on `n` scenes of the `test` split (never rendered in training)."""
    images, labels = _batch(n, seed, "test", 0)
    return float((model(images).argmax(1) == labels).float().mean())


def train_cnn(config: CNNConfig, output_dir: str | Path | None = None, *, command: str = "", evaluate_n: int = 1000,
              log: Callable[[str], None] = print) -> tuple[ToyCNN, dict]:
    """Train toy:cnn from scratch; write `cnn.safetensors` + `cnn.json` to `output_dir` if given."""
    config.check()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    model = build_cnn().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    started = time.time()
    pool_images, pool_labels = _batch(config.scenes, config.seed, "train", 0)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        chosen = torch.randint(config.scenes, (config.batch_size,), generator=generator)
        images, labels = pool_images[chosen], pool_labels[chosen]
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step == 0:
            log(f"step {step + 1}/{config.steps} loss {loss.item():.4f} elapsed {time.time() - started:.0f}s")
    wall = time.time() - started
    model.eval()
    with torch.no_grad():  # measure exactly the fp16 weights that are shipped
        for tensor in model.state_dict().values():
            tensor.copy_(tensor.half())
    record = {"architecture": ARCHITECTURE, "classes": list(SHAPES),
              "training": {**asdict(config), "wall_time_s": round(wall, 1), "command": command,
                           "torch": torch.__version__}}
    if evaluate_n:
        record["measured"] = {"held_out_shape_accuracy": held_out_accuracy(model, evaluate_n),
                              "held_out_images": evaluate_n, "held_out_split": "test", "held_out_seed": 1}
        log(f"measured: {record['measured']}")
    if output_dir is not None:
        save_cnn(model, Path(output_dir), record)
        log(f"wrote cnn to {output_dir} after {wall:.0f}s of training")
    return model, record

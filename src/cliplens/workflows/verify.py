"""`cliplens verify`: prove the decomposition exact on the user's own model before anything is built on it.

Every granularity the model has is decomposed on a few random and a few shapes-world images, and Σ pieces is compared
with the backend's own forward pass (docs/methods/families.md#verify).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..shapes import render

if TYPE_CHECKING:
    from ..lens import Lens

TOLERANCE = 1e-10  # max relative error of Σ pieces against the backend's embedding, in float64
GRANULARITIES = {"vit": (("layer", False), ("head", False), ("head", True)),
                 "resnet": (("head", False), ("head", True), ("neuron", False), ("pair", False))}


@dataclass(frozen=True)
class Check:
    """One granularity's result: `error` is max over images of ‖Σ pieces − z‖ / ‖z‖ (z from the backend)."""

    granularity: str
    pieces: int
    error: float
    seconds_per_image: float
    forward_seconds_per_image: float

    @property
    def passed(self) -> bool:
        return self.error <= TOLERANCE


def granularity_names(kind: str) -> list[str]:
    """What `cliplens info` and `verify` list: "head-token" for spatial head pieces."""
    return [f"{name}-token" if spatial else name for name, spatial in GRANULARITIES[kind]]


def test_images(lens: Lens, random: int, shapes: int, seed: int) -> torch.Tensor:
    """`random` images of unit Gaussian pixels (already preprocessed) and `shapes` shapes-world scenes, preprocessed."""
    size = lens.spec.image_size
    noise = torch.randn(random, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scenes = [lens.preprocess(scene.image) for scene in render(shapes, seed=seed, split="test")] if shapes else []
    return lens.images_to_tensor(torch.cat([noise.to(lens.dtype)] + ([torch.stack(scenes)] if scenes else [])))


def verify(lens: Lens, *, random: int = 2, shapes: int = 2, seed: int = 0) -> list[Check]:
    """One Check per granularity of the model (run the lens in fp64 for TOLERANCE to be meaningful)."""
    images = test_images(lens, random, shapes, seed)
    count = len(images)
    lens.encode_image(images[:1])  # warm-up: lazy spec reading and first-call costs stay out of the timings
    start = time.perf_counter()
    reference = lens.encode_image(images)
    forward = (time.perf_counter() - start) / count
    checks = []
    for name, spatial in GRANULARITIES[lens.kind]:
        start = time.perf_counter()
        result = lens.decompose(images, granularity=name, spatial=spatial)
        seconds = (time.perf_counter() - start) / count
        if name == "pair":
            total, pieces = result.total(), result.coefficients[0].numel()
        else:
            total, pieces = result.components.sum(1), result.components.shape[1]
            if spatial:
                total, pieces = total.sum(1), pieces * result.components.shape[2]
        error = ((total - reference).norm(dim=-1) / reference.norm(dim=-1)).max().item()
        checks.append(Check(f"{name}-token" if spatial else name, pieces, error, seconds, forward))
    return checks

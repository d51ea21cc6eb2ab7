"""Zero-shot segmentation heatmaps from the exact per-token pieces, and the baselines they are measured against
(docs/methods/segmentation.md).

Lenses (each gives a patch-grid map per image, upsampled bilinearly to the image size as the papers do):
- `heads` (ViT): Σ over the heads of the chosen last layers of each token's piece, projected on each class's text
  direction; the token maps sum exactly (over tokens, CLS included) to the image-level projection of those heads.
- `pairs` (ResNet): Σ over every neuron×head pair of the attention pool at each spatial token (the per-token head
  pieces), projected on each class's text direction; the mean token is not a place and is left out of the map.
- `attention`: the last attention layer's CLS→patch row (ViT; the attention pool's mean-token row for a ResNet),
  head-averaged. `rollout` (ViT): Abnar & Zuidema's rollout of the head-averaged attention with the residual
  (½A + ½I, rows renormalised), CLS row. `centre`: a Gaussian centred on the image (σ = a quarter of its side).

Class maps are centred over the classes (score − mean over classes, TextSpan's recipe) when there are several.
Per image, the foreground map (the predicted class's map for single-object data, the per-pixel max over classes
otherwise) has its negatives clipped to 0 and is min–max normalised to [0, 1]; the hard mask is map > threshold
(default: the map's mean). Multi-class labels: each foreground pixel takes its argmax class (class-specific lenses)
or the image's zero-shot class (class-agnostic ones); the rest is background (where the truth has no background,
PASCAL Context 59, every pixel takes a class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from ..errors import CliplensError
from ..labels import pool_head_label
from ..settings import Settings

if TYPE_CHECKING:
    from ..lens import Lens

LENSES = ("heads", "pairs", "attention", "rollout", "centre")
CLASS_SPECIFIC = ("heads", "pairs")
MODELS = {"heads": ("vit",), "pairs": ("resnet",), "attention": ("vit", "resnet"), "rollout": ("vit",),
          "centre": ("vit", "resnet")}
SPATIAL_HEADS = Settings(granularity="head", spatial=True, convention="separate")


@dataclass
class Maps:
    """One batch's maps for one lens on the patch grid: [B, K, G, G] per class, or [B, 1, G, G] class-agnostic.

    Kept at grid resolution and upsampled only where a rule needs it, a few classes at a time, so a thousand class
    maps never exist at image resolution at once."""

    lens: str
    grid: torch.Tensor
    size: int  # the image side the maps are upsampled to

    @property
    def class_specific(self) -> bool:
        return self.lens in CLASS_SPECIFIC

    def upsampled(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, k, G, G] → [B, k, S, S], bilinear (align_corners=False) as the papers upsample."""
        batch, classes, side, _ = grid.shape
        flat = grid.reshape(batch * classes, 1, side, side)
        return F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False).view(
            batch, classes, self.size, self.size)

    def best(self, chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pixel, the largest class value and its class [B, S, S], over classes upsampled `chunk` at a time."""
        top = index = None
        for start in range(0, self.grid.shape[1], chunk):
            values, found = self.upsampled(self.grid[:, start:start + chunk]).max(1)
            if top is None:
                top, index = values, found + start
            else:
                better = values > top
                top, index = torch.where(better, values, top), torch.where(better, found + start, index)
        return top, index


def check_lenses(lens: Lens, names: Sequence[str]) -> list[str]:
    """The requested lens names, in order without repeats, refused by name where the model cannot give them."""
    names = list(dict.fromkeys(names))
    if not names:
        raise CliplensError(f"name at least one lens: {', '.join(LENSES)}")
    for name in names:
        if name not in MODELS:
            raise CliplensError(f"unknown lens {name!r}; choose from {', '.join(LENSES)}")
        if lens.kind not in MODELS[name]:
            usable = [other for other in LENSES if lens.kind in MODELS[other]]
            raise CliplensError(f"lens {name!r} needs a {' or '.join(MODELS[name])} model but {lens.name} is a "
                                f"{lens.kind}; use {', '.join(usable)}")
    return names


def head_token_scores(lens: Lens, images: torch.Tensor, directions: torch.Tensor, layers: Sequence[int]
                      ) -> torch.Tensor:
    """ViT: per-token scores [B, K, N] (CLS first) of the heads of `layers` on class directions [K, d]. Projected
    in the heads' factor space, so no [B, L, H, N, d] tensor is built."""
    factors = lens.decomposer.factorise(images, SPATIAL_HEADS)
    chosen = torch.as_tensor(list(layers), device=images.device)
    directions = directions.to(factors.token_basis.dtype)
    token_basis = torch.einsum("lhkd,cd->lhkc", factors.token_basis[chosen], directions)
    return torch.einsum("blhnk,lhkc->bcn", factors.token_coefficients[:, chosen], token_basis)


def pair_token_scores(lens: Lens, images: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """ResNet: per-token scores [B, K, M] of all neuron×head pairs (mean token first) on class directions [K, d]."""
    result = lens.decomposer.decompose(images, SPATIAL_HEADS)
    heads = [result.index(pool_head_label(h)) for h in range(lens.spec.heads)]
    summed = result.components[:, heads].sum(1)  # [B, M, O]
    return torch.einsum("bmo,co->bcm", summed, directions.to(summed.dtype))


def attention_maps(lens: Lens, images: torch.Tensor, *, rollout: bool) -> torch.Tensor:
    """Head-averaged CLS→patch attention of the last layer, or its rollout through every layer [B, N - 1]."""
    if lens.kind == "resnet":
        return lens.decomposer.trace(images).attention.mean(1)[:, 1:]
    start = patch_start(lens)
    rolled = None
    for state in lens.decomposer.layers(images):
        if rollout:
            logits = state.queries @ state.keys.transpose(-1, -2) * state.queries.shape[-1] ** -0.5
            step = 0.5 * logits.softmax(-1).mean(1) + 0.5 * torch.eye(logits.shape[-1], dtype=logits.dtype,
                                                                        device=logits.device)
            step = step / step.sum(-1, keepdim=True)
            rolled = step if rolled is None else step @ rolled
        else:
            last = state
    return rolled[:, 0, start:] if rollout else last.cls_attention().mean(1)[:, start:]


def patch_start(lens: Lens) -> int:
    """The first patch token: after the ResNet pool's mean token, or after a ViT's CLS and register tokens."""
    return 1 if lens.kind == "resnet" else lens.spec.prefix_tokens


def to_grid(token_values: torch.Tensor) -> torch.Tensor:
    """[B, K, G²] patch values → [B, K, G, G]."""
    batch, classes, patches = token_values.shape
    side = int(round(patches**0.5))
    if side * side != patches:
        raise CliplensError(f"{patches} patch tokens do not form a square grid; segmentation needs square inputs")
    return token_values.reshape(batch, classes, side, side)


def centre_prior(batch: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A centred Gaussian, σ = size / 4, [B, 1, size, size]."""
    axis = torch.arange(size, dtype=dtype) + 0.5 - size / 2
    prior = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))
    return prior.expand(batch, 1, size, size)


def lens_maps(lens: Lens, images: torch.Tensor, names: Sequence[str], directions: torch.Tensor, *,
              layers: Sequence[int]) -> list[Maps]:
    """Every requested lens's maps for one preprocessed batch (upsampled later to the input's side)."""
    size = images.shape[-1]
    maps = []
    for name in names:
        if name in CLASS_SPECIFIC:
            tokens = (head_token_scores(lens, images, directions, layers) if name == "heads"
                      else pair_token_scores(lens, images, directions))[..., patch_start(lens):]
            if tokens.shape[1] > 1:
                tokens = tokens - tokens.mean(1, keepdim=True)
            grid = to_grid(tokens)
        elif name == "centre":
            grid = centre_prior(len(images), size, images.dtype).to(images.device)
        else:
            grid = to_grid(attention_maps(lens, images, rollout=name == "rollout")[:, None])
        maps.append(Maps(name, grid, size))
    return maps


def normalised(values: torch.Tensor) -> torch.Tensor:
    """Per image: negatives clipped to 0, then min–max to [0, 1] (a constant map becomes 0)."""
    flat = values.clamp_min(0).flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(torch.finfo(flat.dtype).tiny)).view_as(values)


def foreground(maps: Maps, predicted: torch.Tensor, *, single_object: bool, threshold: float | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft map in [0, 1], hard mask) [B, S, S]: the predicted class's map for single-object data, else the
    per-pixel max over classes; threshold None means each map's mean."""
    grid = maps.grid
    if maps.class_specific and not single_object:
        values = maps.best()[0]
    else:
        chosen = grid[torch.arange(len(grid)), predicted] if maps.class_specific else grid[:, 0]
        values = maps.upsampled(chosen[:, None])[:, 0]
    soft = normalised(values)
    cut = soft.mean(dim=(1, 2), keepdim=True) if threshold is None else threshold
    return soft, soft > cut


def class_labels(maps: Maps, predicted: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor:
    """Multi-class label maps [B, S, S]: k + 1 for class k on the foreground `hard`, 0 elsewhere; with no `hard`
    (truth without background, PASCAL Context 59) every pixel takes a class."""
    if maps.class_specific:
        chosen = maps.best()[1]
    else:
        chosen = predicted[:, None, None].expand(len(predicted), maps.size, maps.size)
    return chosen + 1 if hard is None else torch.where(hard, chosen + 1, torch.zeros_like(chosen))

"""Ground truth for CLIP-Dissect's labels (docs/methods/dissect.md#evaluation).

- Final-layer neurons with known classes: is neuron k's best concept class k (top-1, top-5, mean rank), and how close
  are label and class name in the judge's text space.
- Hidden layers in the shapes world, which knows every image's attributes and every object's mask: the attribute
  value that best explains a neuron's top-activating probe images, and, for conv maps, Network Dissection's label
  (the concept whose masks best overlap the neuron's thresholded maps, by IoU over the probe set).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import CliplensError
from ..shapes.vocabulary import VOCABULARY
from .targets import Target, hooked

ATTRIBUTES = ("shape", "colour", "size", "position", "texture", "background", "background colour")
BACKGROUND_ATTRIBUTES = ("background", "background colour")  # their masks are the pixels outside the object


def final_layer_scores(similarity: torch.Tensor, concepts: Sequence[str], classes: Sequence[str],
                       text_embeddings: torch.Tensor | None = None) -> dict[str, float]:
    """Neuron k's true label is classes[k]: top-1 / top-5 accuracy of its rank among the concepts, mean rank
    (1 = best), and the mean cosine between label and class name in `text_embeddings` ([M, d], one row per concept)."""
    concepts = list(concepts)
    missing = [name for name in classes if name not in concepts]
    if missing or similarity.shape[0] != len(classes):
        raise CliplensError(f"final-layer scores need one class per neuron ({similarity.shape[0]}), each in the "
                            f"concept set; missing: {missing[:3]}")
    truth = torch.tensor([concepts.index(name) for name in classes])
    true_score = similarity.gather(1, truth[:, None])
    rank = (similarity > true_score).sum(1) + 1  # [K], 1 = the true class is the label
    scores = {"top1": float((rank == 1).float().mean()), "top5": float((rank <= 5).float().mean()),
              "mean_rank": float(rank.float().mean())}
    if text_embeddings is not None:
        unit = torch.nn.functional.normalize(text_embeddings.float(), dim=-1)
        scores["cosine"] = float((unit[similarity.argmax(1)] * unit[truth]).sum(1).mean())
    return scores


def shapes_values(dataset: Any, positions: torch.Tensor) -> dict[str, torch.Tensor]:
    """{attribute: [N] value index in VOCABULARY order} of the probe images at `positions` (single-object splits)."""
    scenes = [dataset.scene(int(i)) for i in positions]
    if any(len(scene.objects) != 1 for scene in scenes):
        raise CliplensError("hidden-layer ground truth needs a single-object shapes split (shapes:test:<n>)")
    values = {}
    for attribute in ATTRIBUTES:
        owner = (lambda s: s.background) if attribute in BACKGROUND_ATTRIBUTES else (lambda s: s.objects[0])
        values[attribute] = torch.tensor([VOCABULARY[attribute].index(owner(s).attribute(attribute)) for s in scenes])
    return values


@dataclass
class GroundTruth:
    values: list[str]  # per neuron: the attribute value that best explains its top images
    attributes: list[str]
    strength: torch.Tensor  # [K] (precision − base rate) / (1 − base rate): 1 = all top images share the value


def best_explaining_values(activations: torch.Tensor, values: dict[str, torch.Tensor], top: int) -> GroundTruth:
    """Per neuron, over its `top` most activating probe images, the value whose share there most exceeds its share
    in the whole probe set, normalised by what a perfect detector would reach: (p_top − p) / (1 − p)."""
    N, K = activations.shape
    top = min(top, N)
    member = torch.zeros(K, N).scatter_(1, activations.topk(top, dim=0).indices.T, 1.0)  # [K, N]
    names, owners, columns = [], [], []
    for attribute, index in values.items():
        onehot = torch.nn.functional.one_hot(index, len(VOCABULARY[attribute])).float()  # [N, V]
        base = onehot.mean(0)
        columns.append((member @ onehot / top - base) / (1 - base).clamp_min(1e-6))
        names += VOCABULARY[attribute]
        owners += [attribute] * onehot.shape[1]
    strength, best = torch.cat(columns, 1).max(1)
    return GroundTruth([names[i] for i in best.tolist()], [owners[i] for i in best.tolist()], strength)


@torch.no_grad()
def network_dissection(target: Target, layer: str, dataset: Any, positions: torch.Tensor, *,
                       quantile: float = 0.005, batch_size: int = 64) -> tuple[list[str], torch.Tensor]:
    """Network Dissection on the shapes world: each conv neuron's maps, upsampled to the image and thresholded at
    its top `quantile` over all probe pixels, against the object mask (object attribute values) or the background
    mask (background values) of every image; returns (best concept per neuron, IoU [K, C] over `concepts`).

    Needs a target whose preprocessing keeps the whole image (resize, no crop), so that maps and masks align."""
    module = target.layers([layer])
    scenes = [dataset.scene(int(i)) for i in positions]
    maps = []
    with hooked(module, lambda output: output.detach().float()) as recorded:
        for start in range(0, len(scenes), batch_size):
            batch = torch.stack([target.preprocess(s.image) for s in scenes[start:start + batch_size]])
            target.module(batch.to(target.device, target.dtype))
        maps = torch.cat(recorded[layer])  # [N, K, h, w]
    if maps.dim() != 4:
        raise CliplensError(f"Network Dissection needs conv maps [N, K, h, w]; {layer} gives {tuple(maps.shape)}")
    N, K = maps.shape[:2]
    flat = maps.transpose(0, 1).reshape(K, -1)
    threshold = flat.topk(max(1, int(flat.shape[1] * quantile)), dim=1).values[:, -1]  # [K]
    values = shapes_values(dataset, positions)
    concepts = [value for attribute in ATTRIBUTES for value in VOCABULARY[attribute]]
    has = torch.cat([torch.nn.functional.one_hot(values[a], len(VOCABULARY[a])).float() for a in ATTRIBUTES], 1)
    background = torch.tensor([a in BACKGROUND_ATTRIBUTES for a in ATTRIBUTES for _ in VOCABULARY[a]])
    inside = torch.zeros(N, K)  # thresholded pixels on the object
    outside = torch.zeros(N, K)
    object_pixels = torch.zeros(N)
    size = scenes[0].masks[0].shape
    for start in range(0, N, batch_size):
        up = torch.nn.functional.interpolate(maps[start:start + batch_size], size=size, mode="bilinear",
                                             align_corners=False) > threshold[None, :, None, None]  # [B, K, H, W]
        mask = torch.stack([torch.from_numpy(s.masks[0]) for s in scenes[start:start + batch_size]])[:, None]
        inside[start:start + batch_size] = (up & mask).sum((2, 3)).float()
        outside[start:start + batch_size] = (up & ~mask).sum((2, 3)).float()
        object_pixels[start:start + batch_size] = mask.sum((1, 2, 3)).float()
    region_pixels = torch.where(background[None, :], size[0] * size[1] - object_pixels[:, None],
                                object_pixels[:, None])  # [N, C]: mask size of concept c in image n
    intersection = torch.where(background[None, :], outside.T @ has, inside.T @ has)  # [K, C]
    union = (inside + outside).sum(0)[:, None] + (has * region_pixels).sum(0)[None, :] - intersection
    iou = intersection / union.clamp_min(1)
    return [concepts[i] for i in iou.argmax(1).tolist()], iou


def agreement(labels: Sequence[str], truth: Sequence[str]) -> float:
    """Share of neurons whose label names their ground-truth value."""
    return sum(a == b for a, b in zip(labels, truth)) / max(1, len(truth))

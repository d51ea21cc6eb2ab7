"""Zero-shot classification from any embedding, or from any sum of decomposition pieces.

A classifier is one unit column per class: the renormalised mean of the unit text embeddings of the class name
filled into every template (CLIP's recipe). Predictions are argmax of dot products, so they are invariant to the
scale of the image-side vector and a sum of pieces needs no normalisation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

EncodeText = Callable[[list[str]], torch.Tensor]


def classifier(encode_text: EncodeText, classnames: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """Zero-shot weights W [d, n_classes]; templates are format strings with one `{}` for the class name."""
    if not classnames:
        raise ValueError("zero-shot classifier needs at least one class name")
    columns = []
    for name in classnames:
        embeddings = encode_text([template.format(name) for template in templates]).float()
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
        centroid = embeddings.mean(0)
        columns.append(centroid / centroid.norm())
    return torch.stack(columns, dim=1)


def predict(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class indices [B] for image-side vectors [B, d] (any scale)."""
    return (embeddings.to(weights.dtype) @ weights).argmax(-1)


def accuracy(embeddings: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return (predict(embeddings, weights).cpu() == torch.as_tensor(labels).cpu()).double().mean().item()

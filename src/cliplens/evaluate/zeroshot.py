"""Zero-shot classification from any embedding, or from any sum of decomposition pieces.

A classifier is one unit column per class: the renormalised mean of the unit text embeddings of the class name
filled into every template (CLIP's recipe). Predictions are argmax of dot products, so they are invariant to the
scale of the image-side vector and a sum of pieces needs no normalisation.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import CliplensError

EncodeText = Callable[[list[str]], torch.Tensor]


def classifier(encode_text: EncodeText, classnames: Sequence[str], templates: Sequence[str] = ("{}",)) -> torch.Tensor:
    """Zero-shot weights W [d, n_classes]; templates are format strings with one `{}` for the class name."""
    from ..text.embed import template_average

    if not classnames:
        raise CliplensError("zero-shot classifier needs at least one class name")
    return template_average(encode_text, list(classnames), tuple(templates)).T


def predict(embeddings: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class indices [B] for image-side vectors [B, d] (any scale)."""
    return (embeddings.to(weights.dtype) @ weights).argmax(-1)


def accuracy(embeddings: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    if len(labels) == 0:
        raise CliplensError("accuracy of an empty set is undefined; check that the evaluation data has images")
    return (predict(embeddings, weights).cpu() == torch.as_tensor(labels).cpu()).double().mean().item()

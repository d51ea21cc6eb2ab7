"""Zero-shot classification from any embedding, or from any sum of decomposition pieces.

A classifier is one unit column per class: the renormalised mean of the unit text embeddings of the class name
filled into every template (CLIP's recipe). Predictions are argmax of dot products, so they are invariant to the
scale of the image-side vector and a sum of pieces needs no normalisation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..errors import CliplensError
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

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


def source_prompts(source: Any) -> tuple[list[str], str | tuple[str, ...]]:
    """What to write in the templates for each class, and the default templates, for a data source.

    Shapes-world datasets use the world's own class phrases ("a red object") and held-out templates
    (`cliplens.shapes.prompts`); anything else uses its `classnames` with OpenAI's 80 ImageNet templates.
    """
    source = getattr(source, "evaluated", source)  # an analysis's evaluation data (data/analyzed.py)
    classnames = getattr(source, "classnames", None)
    if not classnames:
        raise CliplensError(
            "the evaluation data has no class names; use a folder with one sub-folder per class, or shapes:<split>"
        )
    from ..shapes import ShapesDataset

    if isinstance(source, ShapesDataset):
        from ..shapes.prompts import TEMPLATES, class_phrases

        try:
            return class_phrases(source.label), TEMPLATES
        except CliplensError:  # labels without phrases (spurious groups, shift years) are already phrases
            return list(classnames), TEMPLATES
    return list(classnames), "openai"


def classifier_prompts(source: Any, templates: str | Sequence[str] | None = None) -> tuple[list[str], Any]:
    """The class phrases and the templates a zero-shot classifier for `source` is built from, checked without embedding
    any text, so that a command can refuse unlabelled data or a malformed template before its passes.

    `templates`: None or "auto" for the source's default, a named set ("openai", "simple", "photo", "none", or
    "shapes" for the shapes world's held-out templates), or format strings with one "{}".
    """
    phrases, default = source_prompts(source)
    if templates in (None, "auto"):
        templates = default
    elif templates == "shapes":
        from ..shapes.prompts import TEMPLATES

        templates = TEMPLATES
    resolve_templates(templates)
    return phrases, templates


def source_classifier(lens: Lens, source: Any, templates: str | Sequence[str] | None = None, *,
                      progress: bool = False) -> torch.Tensor:
    """Zero-shot classifier W [d, classes] for a data source (float64), text embeddings cached on disk; `templates`
    as `classifier_prompts` takes them."""
    from ..text.embed import embed_texts

    phrases, templates = classifier_prompts(source, templates)
    return embed_texts(lens, phrases, templates=templates, progress=progress).to(torch.float64).T

"""Measured quality of a toy model: zero-shot accuracy per attribute and worst-group accuracy on the spurious split.

All numbers go through `cliplens.evaluate.zeroshot` with the held-out prompt templates of `cliplens.shapes.prompts`.
Attributes are evaluated on the single-object `test` split, where every attribute has exactly one true value.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..evaluate.zeroshot import accuracy, classifier, predict
from ..shapes import VOCABULARY, render
from ..shapes.prompts import TEMPLATES, class_phrases
from ..shapes.splits import SPURIOUS_GROUPS

ATTRIBUTES = ("shape", "colour", "position", "size", "texture", "background", "background colour")


@torch.no_grad()
def encode_images(model: torch.nn.Module, preprocess: Callable, images: list, batch_size: int = 256) -> torch.Tensor:
    parameter = next(model.parameters())
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(image) for image in images[start:start + batch_size]])
        chunks.append(model.encode_image(batch.to(parameter.device, parameter.dtype)))
    return torch.cat(chunks)


def text_encoder(model: torch.nn.Module, tokenizer: Callable) -> Callable[[list[str]], torch.Tensor]:
    device = next(model.parameters()).device

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    return encode


def bare_words(attribute: str) -> list[str]:
    """Each value of `attribute` as a probe would name it raw: the word itself, background values as "<value>
    background" (the probe concepts of `shapes.scene.concept_names`)."""
    suffix = " background" if attribute.startswith("background") else ""
    return [value + suffix for value in VOCABULARY[attribute]]


def zero_shot_accuracies(
    model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, *, n: int = 1000, seed: int = 1,
    attributes: tuple[str, ...] = ATTRIBUTES, bare: bool = False,
) -> dict[str, float]:
    """Top-1 zero-shot accuracy on `n` single-object `test` scenes, per attribute: with the held-out prompts, or
    (`bare`) with the bare words and no template, as CLIP-Dissect embeds its concepts."""
    scenes = render(n, seed=seed, split="test")
    embeddings = encode_images(model, preprocess, [scene.image for scene in scenes])
    encode_text = text_encoder(model, tokenizer)
    results = {}
    for attribute in attributes:
        if bare:
            weights = classifier(encode_text, bare_words(attribute), ("{}",))
        else:
            weights = classifier(encode_text, class_phrases(attribute), TEMPLATES)
        source = [scene.background if attribute.startswith("background") else scene.objects[0] for scene in scenes]
        labels = torch.tensor([VOCABULARY[attribute].index(item.attribute(attribute)) for item in source])
        results[attribute] = accuracy(embeddings, weights, labels)
    return results


def spurious_accuracies(
    model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, *, n: int = 1000, seed: int = 1,
    split: str = "spurious-test",
) -> dict[str, float]:
    """Zero-shot round-vs-angular accuracy per group, their minimum ("worst group"), their mean ("group mean") and
    the average over images. The test split reverses the training correlation, so its images are 95 % from the two
    groups the cue misleads: the image average sits close to those groups, and the group mean is the fair yardstick
    for the worst group."""
    scenes = render(n, seed=seed, split=split)
    embeddings = encode_images(model, preprocess, [scene.image for scene in scenes])
    weights = classifier(text_encoder(model, tokenizer), class_phrases("roundness"), TEMPLATES)
    correct = predict(embeddings, weights).cpu() == torch.tensor([scene.extras["label"] for scene in scenes])
    groups = torch.tensor([scene.extras["group"] for scene in scenes])
    results = {"average": correct.double().mean().item()}
    for index, name in enumerate(SPURIOUS_GROUPS):
        members = groups == index
        if members.any():
            results[name] = correct[members].double().mean().item()
    present = [results[name] for name in SPURIOUS_GROUPS if name in results]
    results["group mean"] = sum(present) / len(present)
    results["worst group"] = min(present)
    return results

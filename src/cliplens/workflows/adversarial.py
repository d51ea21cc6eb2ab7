"""Semantic adversarial images in the shapes world, the call behind `cliplens adversarial`
(docs/methods/adversarial.md#closed-loop).

Second-order statistics of one MLP layer are collected on the fit data; for each (source, target) shape pair the words
are chosen (`select_words`), and three sets of prompts that all mention the source shape (the chosen words, as many
random words from the same filtered pool, no words) are drawn by the shapes generator and classified zero-shot among
the world's shapes. Success = classified as the target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..apps.adversarial import (Outcome, WordChoice, adversarial_figure, compose_prompts, random_words,
                                run_condition, select_words)
from ..errors import CliplensError
from ..evaluate.zeroshot import source_classifier
from ..explain.omp import require_fewer_atoms
from ..explain.unit_words import atom_count
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..shapes import ShapesDataset
from ..shapes.generator import ShapesGenerator
from ..shapes.vocabulary import SHAPES
from ..stats.second_order import collect_second_order
from ..text.candidates import candidate_texts, check_candidates

if TYPE_CHECKING:
    from ..lens import Lens

TABLE, FIGURE = "adversarial.csv", "adversarial.png"
POOL = "shapes"  # the default pool whatever the fit data: the shapes generator draws only the world's words
EXAMPLES = 8
ATOMS = 16  # OMP atoms per neuron by default (capped at half the pool and below the width, as `atom_count` does)
MAX_IMAGES = 1_000_000  # per condition: a larger request is a typo  # example images kept per condition for the figure


@dataclass
class AdversarialResult:
    outcomes: list[Outcome]  # per pair: selected, random, none
    choices: list[WordChoice]  # per pair
    metadata: dict[str, Any]


def check_pairs(sources: Sequence[str], targets: Sequence[str]) -> list[tuple[str, str]]:
    """(source, target) pairs of distinct shapes of the world, refused before any pass."""
    if not sources or len(sources) != len(targets):
        raise CliplensError(f"give one --target per --source ({len(sources)} sources, {len(targets)} targets)")
    for name in (*sources, *targets):
        if name not in SHAPES:
            raise CliplensError(f"unknown shape {name!r}; the shapes generator draws {', '.join(SHAPES)}")
    if any(s == t for s, t in zip(sources, targets)):
        raise CliplensError("a --source equals its --target: there is nothing to push it toward")
    return list(zip(sources, targets))


def check_counts(images: int, prompts: int) -> None:
    """At least one image per prompt, and no more images or prompts than a run could finish."""
    for name, value in (("--images", images), ("--prompts", prompts)):
        if not 1 <= value <= MAX_IMAGES:
            raise CliplensError(f"{name} {value} is out of range: give 1..{MAX_IMAGES}")
    if prompts > images:
        raise CliplensError(f"--prompts {prompts} exceeds --images {images}: every prompt needs at least one image")


def image_scores(lens: Lens, weights: torch.Tensor, batch_size: int):
    """images → zero-shot scores [B, classes] (unit image embeddings against the classifier's unit columns)."""

    def scores(images: list) -> torch.Tensor:
        parts = [torch.nn.functional.normalize(lens.encode_image(images[start : start + batch_size]).to(weights),
                                               dim=-1) @ weights for start in range(0, len(images), batch_size)]
        return torch.cat(parts)

    return scores


def adversarial_study(
    lens: Lens, sources: Sequence[str], targets: Sequence[str], *, data_path: Any = "shapes:train:2000",
    mlp_layer: int = 2, neurons: int = 10, words: int = 4, atoms: int | None = None, threshold: float = 0.6,
    pool: str | os.PathLike | None = None, pool_size: int | None = None, pool_templates: str = "photo",
    images: int = 200, prompts: int = 20, words_per_prompt: int = 3, top_k: int = 100, seed: int = 0,
    batch_size: int = 64, progress: bool = False,
) -> AdversarialResult:
    """Success rates of the selected, random and no words for each pair, `images` images per condition (rounded up
    to a multiple of `prompts`)."""
    pairs = check_pairs(sources, targets)
    check_counts(images, prompts)
    check_candidates(data_path, POOL, pool=pool, pool_templates=pool_templates)
    require_fewer_atoms(atoms, lens.spec.output_dim)
    _, texts, embeddings = candidate_texts(lens, data_path, POOL, pool=pool, pool_size=pool_size,
                                           pool_templates=pool_templates)
    atoms = atom_count(atoms, ATOMS, len(texts), lens.spec.output_dim)
    per_prompt = -(-images // prompts)
    stats = collect_second_order(lens, data_path, layer=mlp_layer, top_k=top_k, batch_size=batch_size,
                                 progress=progress)
    directions, typical = stats.principal_directions, stats.top_projections.mean(1)
    weights = source_classifier(lens, ShapesDataset(1, split="test", label="shape"))
    generator, scores = ShapesGenerator(), image_scores(lens, weights, batch_size)
    outcomes, choices = [], []
    for number, (source, target) in enumerate(pairs):
        s, t = SHAPES.index(source), SHAPES.index(target)
        choice = select_words(directions, typical, texts, embeddings, weights[:, s], weights[:, t], source=source,
                              target=target, neurons=neurons, words=words, atoms=atoms, threshold=threshold)
        rng = np.random.default_rng([seed, number])
        conditions = {"selected": choice.words, "random": random_words(choice, rng), "none": []}
        for condition, chosen in conditions.items():
            texts_of = compose_prompts(source, chosen, prompts, words_per_prompt, rng)
            predictions, margins, drawn = run_condition(generator, scores, texts_of, per_prompt, seed, s, t)
            outcomes.append(Outcome(source, target, condition, list(chosen), texts_of, predictions, margins, t,
                                    drawn[:EXAMPLES]))
        choices.append(choice)
    metadata = {"model": lens.describe(), "data_path": str(data_path), "mlp_layer": mlp_layer, "neurons": neurons,
                "words": words, "atoms": atoms, "threshold": threshold, "pool": str(pool or POOL),
                "pool_templates": pool_templates, "images_per_condition": prompts * per_prompt, "prompts": prompts,
                "words_per_prompt": words_per_prompt, "top_k": top_k, "seed": seed, "generator": "shapes renderer",
                "success": "zero-shot prediction among the world's shapes equals the target",
                "margin": "cos(image, w_target) - cos(image, w_source), w the classifier's unit columns",
                "neurons_kept": {f"{s}->{t}": c.neurons for (s, t), c in zip(pairs, choices)}}
    return AdversarialResult(outcomes, choices, metadata)


def write_adversarial(result: AdversarialResult, output_dir: str | os.PathLike) -> Path:
    """`adversarial.csv` (one row per pair and condition), `adversarial.png` and `metadata.json`."""
    return write_folder(output_dir, {
        TABLE: lambda file: write_table(file, "adversarial", [o.row() for o in result.outcomes]),
        FIGURE: lambda file: adversarial_figure(result.outcomes, SHAPES).save(file, format="PNG"),
    }, result.metadata)

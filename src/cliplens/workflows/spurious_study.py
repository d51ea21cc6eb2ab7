"""Spurious-cue removal end to end (docs/methods/spurious.md): the call behind `cliplens spurious`.

Statistics of the pieces on a fit set (means for the ablation, covariances for the ranking), a concept's texts
embedded, units ranked by their variance in the concept's span, then one pass over a validation set and one over a
test set score every edit per group; k is chosen on validation only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data import waterbirds
from ..data.loader import as_source
from ..errors import CliplensError
from ..evaluate.piece_edits import KINDS, GroupBoard, piece_family, score_edits
from ..evaluate.spurious import (
    DEFAULT_KS, RANDOM_DRAWS, SpuriousResult, candidate_count, check_ks, choose_k, rank_units, selection_edits,
    summary_rows,
)
from ..shapes import ShapesDataset
from ..shapes.prompts import TEMPLATES, class_phrases
from ..shapes.splits import SPURIOUS_GROUPS, SPURIOUS_MATCH_RATE
from ..stats.obtain import obtain_pair_stats, obtain_piece_stats
from ..text.embed import embed_texts
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens


def group_source(data: Any) -> tuple[Any, list[str], Any]:
    """The data labelled by group (2·y + place), its class phrases and their templates; refuses anything without
    groups."""
    source = as_source(data)
    if isinstance(source, ShapesDataset) and source.split in SPURIOUS_MATCH_RATE:
        if source.label != "group":
            source = ShapesDataset(source.n, source.seed, source.split, "group", image_size=source.image_size)
        return source, class_phrases("roundness"), TEMPLATES
    if isinstance(source, waterbirds.WaterbirdsDataset):
        return source, list(waterbirds.CLASSES), "openai"
    raise CliplensError(f"{data!r} has no groups; use shapes:spurious-train|spurious-test[:<n>[:<seed>]] or "
                        "waterbirds:<folder>[:train|val|test]")


def check_concept(concept: Sequence[str], templates: str) -> list[str]:
    """The concept's texts, stripped; refuses an empty concept or malformed templates."""
    texts = [text.strip() for text in concept if text.strip()]
    if not texts:
        raise CliplensError("give the concept as one or more texts, e.g. --concept 'water,lake,ocean,forest'")
    resolve_templates(templates)
    return texts


def group_names(source: Any) -> list[str]:
    return list(waterbirds.GROUPS if isinstance(source, waterbirds.WaterbirdsDataset) else SPURIOUS_GROUPS)


def default_kind(lens: Lens) -> str:
    """TextSpan's unit for a ViT (heads), the neuron×head pair for a ResNet."""
    return "pairs" if lens.kind == "resnet" else "heads"


def spurious_study(
    lens: Lens, data_path: Any, *, val_path: Any, fit_path: Any, concept: Sequence[str],
    concept_templates: str = "none", kind: str | None = None, ks: Sequence[int] = DEFAULT_KS,
    draws: int = RANDOM_DRAWS, draw_seed: int = 0, stats_path: str | os.PathLike | None = None, mass: float = 0.99,
    max_components: int = 80, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> SpuriousResult:
    """Rank units of `kind` by their variance along `concept`'s texts, ablate the top k (each k of `ks`) and k random
    units (`draws` draws, seeded by `draw_seed`) on `val_path` and `data_path` (the test set), and choose k on the
    validation rows. Means and covariances come from `stats_path` or are collected on `fit_path`."""
    kind = kind or default_kind(lens)
    if kind not in KINDS:
        raise CliplensError(f"unknown kind of piece {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "pairs" and lens.kind != "resnet":
        raise CliplensError(f"pairs exist for ResNet CLIP models only; {lens.name} is a {lens.kind}: use heads or pcs")
    concept = check_concept(concept, concept_templates)
    test, phrases, templates = group_source(data_path)
    val, _, _ = group_source(val_path)
    if kind == "pairs":
        stats = obtain_pair_stats(lens, stats_path, fit_path, batch_size=batch_size, num_workers=num_workers,
                                  progress=progress)
    else:
        stats = obtain_piece_stats(lens, stats_path, fit_path, convention=None, normalize=None,
                                   batch_size=batch_size, num_workers=num_workers, progress=progress)
    family = piece_family(kind, lens, stats, mass=mass, max_components=max_components)
    ks = check_ks(ks, candidate_count(family))
    order, ranking = rank_units(family, embed_texts(lens, concept, templates=concept_templates))
    edits = selection_edits(family, order, ks, draws=draws, seed=draw_seed)
    weights = embed_texts(lens, phrases, templates=templates).to(torch.float64).T
    groups = group_names(test)
    classes = [g // 2 for g in range(len(groups))]
    sweep, images = [], {}
    for split, source in (("val", val), ("test", test)):
        board = GroupBoard(edits, classes, groups)
        report = score_edits(lens, source, family, weights, board, batch_size=batch_size, num_workers=num_workers,
                             progress=progress)
        sweep += board.rows(split=split)
        images[split] = report.loaded
    k = choose_k([row for row in sweep if row["split"] == "val"])
    summary = summary_rows([row for row in sweep if row["split"] == "test"], k, groups)
    metadata = {
        "model": lens.describe(), "kind": kind, "concept": concept, "concept_templates": concept_templates,
        "ks": ks, "chosen_k": k, "draws": draws, "draw_seed": draw_seed, "units": candidate_count(family),
        "test": str(data_path), "val": str(val_path), "fit": None if stats_path else str(fit_path),
        "stats": None if stats_path is None else str(stats_path), "images": images, "groups": groups,
        "classes": phrases, "rule": "k maximises the validation worst-group accuracy of the selected units",
    }
    return SpuriousResult(kind, concept, ranking, sweep, k, summary, groups, metadata)

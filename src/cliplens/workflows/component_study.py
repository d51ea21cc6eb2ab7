"""Principal components of heads end to end (docs/methods/components.md): the call behind `cliplens components`.

Head statistics (read, or collected on the fit data), every component of the chosen heads named by its two text
poles, the heads and components with the most variance along each text query, and, on labelled data, the zero-shot
accuracy with single components kept alone in their head, removed, or amplified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import CliplensError
from ..evaluate.components import check_amplify, component_edits, plot_edits, query_rows, with_deltas
from ..evaluate.groups import select
from ..evaluate.reference import evaluation_source
from ..evaluate.piece_edits import ComponentFamily, GroupBoard, head_labels, piece_family, score_edits
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..explain.components import ComponentTexts
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..settings import Settings
from ..stats.obtain import obtain_piece_stats
from ..text.candidates import HEAD_POOL, check_candidates, candidate_texts
from ..text.embed import embed_texts

if TYPE_CHECKING:
    from ..lens import Lens

POLES, QUERIES, EDITS, FIGURE = "poles.csv", "queries.csv", "edits.csv", "edits.png"


@dataclass
class ComponentStudy:
    poles: list[dict[str, Any]]
    queries: list[dict[str, Any]]
    edits: list[dict[str, Any]] | None
    metadata: dict[str, Any]


def component_study(
    lens: Lens, data_path: Any, *, heads: Sequence[str] | None = None, queries: Sequence[str] = (),
    edit_top: int = 3, amplify: float = 2.0, top: int = 10, stats_path: str | os.PathLike | None = None,
    fit_path: Any = None, pool: str | os.PathLike | None = None, pool_size: int | None = None,
    pool_templates: str = "none", texts_per_pole: int = 5, mass: float = 0.99, max_components: int = 80,
    label: str | None = None, templates: str | None = None, batch_size: int = 32, num_workers: int = 0,
    progress: bool = False,
) -> ComponentStudy:
    """Poles of every component of the heads matching `heads` (patterns; default: the last layer's heads of a ViT,
    every pool head of a ResNet), the `top` heads and components for each query, and keep / remove / amplify edits
    of the `edit_top` largest components of each chosen head scored on `data_path` (relabelled by `label` for shapes
    data; skipped when it has no class names). Statistics from `stats_path`, or collected on `fit_path` (default:
    `data_path`)."""
    if edit_top < 0 or top < 1:
        raise CliplensError(f"--edit-top must be ≥ 0 and --top ≥ 1, got {edit_top} and {top}")
    check_amplify(amplify)
    check_candidates(data_path, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    chosen = select(head_labels(lens.decomposer.labels(Settings("head"))),
                    heads or (["attn[-1:]"] if lens.kind == "vit" else ["*"]))
    source = evaluation_source(data_path, label)
    labelled = edit_top > 0 and bool(getattr(source, "classnames", None))
    if labelled:
        classifier_prompts(source, templates)
    stats = obtain_piece_stats(lens, stats_path, fit_path or data_path, convention=None, normalize=None,
                               batch_size=batch_size, num_workers=num_workers, progress=progress)
    family: ComponentFamily = piece_family("pcs", lens, stats, mass=mass, max_components=max_components)
    _, texts, embeddings = candidate_texts(lens, data_path, HEAD_POOL, pool=pool, pool_size=pool_size,
                                           pool_templates=pool_templates)
    explainer, spans = ComponentTexts(texts_per_pole, max_components, mass), lens.decomposer.head_spans(stats.settings)
    poles = []
    for head in chosen:
        h = family.heads.labels.index(head)
        explainer.fit(stats.count, family.heads.mean[h], family.heads.covariance[h], embeddings, texts,
                      span=spans.get(head))
        poles += explainer.rows(head)
    query_table = []
    if queries:
        centre = embeddings.to(torch.float64).mean(0)  # the pool's average text, as the poles' coordinates are
        for query, embedding in zip(queries, embed_texts(lens, list(queries)).to(torch.float64)):
            query_table += query_rows(family, query, embedding - centre, top)
    edits = None
    if labelled:  # only the chosen heads' components are units of the pass: its logits are [B, U, classes]
        edited = ComponentFamily(stats, heads=chosen, mass=mass, max_components=max_components, spans=spans)
        units = [u for h in range(len(chosen)) for u in (edited.owner == h).nonzero().flatten()[:edit_top].tolist()]
        board = GroupBoard(component_edits(edited, units, amplify), range(len(source.classnames)),
                           source.classnames)
        score_edits(lens, source, edited, source_classifier(lens, source, templates), board, batch_size=batch_size,
                    num_workers=num_workers, progress=progress)
        edits = with_deltas(board.rows())
    metadata = {"model": lens.describe(), "heads": list(chosen), "components": family.component_count,
                "queries": list(queries), "edit_top": edit_top, "amplify": amplify, "mass": mass,
                "max_components": max_components,
                "data": str(data_path), "fit": None if stats_path else str(fit_path or data_path),
                "stats": None if stats_path is None else str(stats_path), "fit_images": stats.count,
                "pool_texts": len(texts), "sign_rule": "none needed: every output is invariant to component signs"}
    return ComponentStudy(poles, query_table, edits, metadata)


def write_components(study: ComponentStudy, output_dir: str | os.PathLike) -> os.PathLike:
    """poles.csv, queries.csv (with queries), edits.csv and edits.png (on labelled data), metadata.json."""
    writers = {POLES: lambda file: write_table(file, "components", study.poles)}
    if study.queries:
        writers[QUERIES] = lambda file: write_table(file, "queries", study.queries)
    if study.edits is not None:
        writers[EDITS] = lambda file: write_table(file, "group_edits", study.edits)
        title = (f"{study.metadata['model']['model']}: single components on {study.edits[0]['images']} images "
                 f"(amplify ×{study.metadata['amplify']:g})")
        writers[FIGURE] = lambda file: plot_edits(file, study.edits, title)
    return write_folder(output_dir, writers, study.metadata)

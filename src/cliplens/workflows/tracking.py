"""Concept tracking under shift, the call behind `cliplens track` (docs/methods/tracking.md).

The pieces are named, or (ViT) the `select` heads whose pieces vary most along the concept's text on fit data. One
pass over the data gives per group the tracked set's score (mean, spread), the whole embedding's, each head's, and
the attribute's rate; the correlation of the per-group mean score with the rate is reported for the tracked set, the
whole embedding and random head sets of the same size (baselines).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..apps.tracking import GroupMoments, check_pieces, pearson, select_heads, track_scores
from ..data.loader import as_source
from ..errors import CliplensError, require_positive_int
from ..evaluate.reference import default_reference
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..settings import Settings
from ..shapes import ShapesDataset
from ..shapes.vocabulary import OBJECT_ATTRIBUTES, SCENE_ATTRIBUTES
from ..stats.obtain import obtain_piece_stats
from ..text.embed import embed_texts
from ..text.templates import resolve_templates

if TYPE_CHECKING:
    from ..lens import Lens

TABLE, SUMMARY, PLOT = "groups.csv", "correlation.csv", "tracking.png"


@dataclass
class TrackingResult:
    pieces: list[str]
    group_rows: list[dict[str, Any]]
    summary_rows: list[dict[str, Any]]
    metadata: dict[str, Any]


def metadata_reader(source: Any) -> Callable[[int], dict[str, Any]]:
    """index → the image's metadata: a source's own `metadata(i)`, or a shapes scene's attributes and extras."""
    if hasattr(source, "metadata"):
        return source.metadata
    if isinstance(source, ShapesDataset):
        def shapes_metadata(index: int) -> dict[str, Any]:
            scene = source.scene(index)
            values = {name: scene.background.attribute(name) for name in SCENE_ATTRIBUTES}
            values.update({name: scene.objects[0].attribute(name) for name in OBJECT_ATTRIBUTES})
            return {**values, **scene.extras}
        return shapes_metadata
    raise CliplensError("grouping needs image metadata: shapes:<split> data, or a reader that has it (stanford-cars:)")


def parse_attribute(text: str) -> tuple[str, str]:
    """`colour=yellow` → ("colour", "yellow"): the attribute whose rate per group is plotted."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise CliplensError(f"cannot read attribute {text!r}; write NAME=VALUE, e.g. colour=yellow")
    return name.strip(), value.strip()


def track_concept(
    lens: Lens, data: Any, *, concept: str, pieces: Sequence[str] = (), select: int = 2, group: str = "year",
    attribute: str | None = None, fit_path: Any = None, stats_path: Any = None, templates: str = "photo",
    random_sets: int = 10, seed: int = 0, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> TrackingResult:
    """Track `concept` through `pieces` (or the `select` heads chosen for it) over the groups of `data`."""
    require_positive_int("select", select)
    resolve_templates(templates)
    source = as_source(data)
    read = metadata_reader(source)
    first = read(0)
    if group not in first:
        raise CliplensError(f"the data has no {group!r} to group by; choose from {', '.join(map(str, first))}")
    wanted = parse_attribute(attribute) if attribute is not None else None
    if wanted is not None and wanted[0] not in first:
        raise CliplensError(f"the data has no attribute {wanted[0]!r}; choose from {', '.join(map(str, first))}")
    if pieces:
        tracked = check_pieces(lens, pieces)
    elif lens.kind != "vit":
        raise CliplensError("name the ResNet pairs to track (--piece H<head>N<neuron>); selection is for ViT heads")
    direction = embed_texts(lens, [concept], templates=templates)[0].double()
    heads = lens.decomposer.labels(Settings("head"))
    heads = [label for label in heads if "H" in label and label.startswith("L")]
    fit_where = None
    if not pieces:
        fit_data, fit_where = ((fit_path, str(fit_path)) if fit_path is not None or stats_path is not None
                               else default_reference(source))
        convention = None if stats_path is not None else "reference"  # an artifact is taken as it was collected
        stats = obtain_piece_stats(lens, stats_path, fit_data, convention=convention, normalize=None,
                                   batch_size=batch_size, num_workers=num_workers, progress=progress)
        tracked = select_heads(stats.labels, stats.covariance, direction, select)
        fit_where = str(stats_path) if stats_path is not None else fit_where
    columns = heads if lens.kind == "vit" else tracked
    scores, rates = track_scores(
        lens, source, columns, tracked, direction, lambda i: read(i)[group],
        None if wanted is None else (lambda i: str(read(i)[wanted[0]]) == wanted[1]),
        batch_size=batch_size, num_workers=num_workers, progress=progress)
    group_rows = _group_rows(scores, rates)
    summary = _summary(scores, rates, columns, tracked, random_sets, seed) if rates is not None else []
    metadata = {"model": lens.describe(), "data": str(data), "concept": concept, "templates": templates,
                "pieces": tracked, "selected": not pieces, "fit_data": fit_where, "group": group,
                "attribute": attribute, "random_sets": random_sets, "seed": seed, "convention": "reference",
                "score": "<sum of the pieces, t> / |y|"}
    return TrackingResult(tracked, group_rows, summary, metadata)


def _group_rows(scores: GroupMoments, rates: GroupMoments | None) -> list[dict[str, Any]]:
    rows = []
    for group in scores.groups():
        mean, std = scores.mean(group), scores.std(group)
        rows.append({"group": group, "images": scores.counts[group], "score_mean": float(mean[0]),
                     "score_std": float(std[0]), "embedding_mean": float(mean[1]), "embedding_std": float(std[1]),
                     "attribute_rate": "" if rates is None else float(rates.mean(group)[0])})
    return rows


def _summary(scores: GroupMoments, rates: GroupMoments, columns: Sequence[str], tracked: Sequence[str],
             random_sets: int, seed: int) -> list[dict[str, Any]]:
    """Correlation over groups of the mean score with the attribute rate: tracked set, embedding, random sets."""
    groups = scores.groups()
    rate = [float(rates.mean(g)[0]) for g in groups]
    means = [scores.mean(g) for g in groups]
    images = sum(scores.counts.values())

    def row(name: str, pieces: str, values: list[float]) -> dict[str, Any]:
        return {"scores": name, "pieces": pieces, "correlation_with_rate": pearson(values, rate),
                "groups": len(groups), "images": images}

    rows = [row("tracked", " ".join(tracked), [float(m[0]) for m in means]),
            row("embedding", "all", [float(m[1]) for m in means])]
    draw = random.Random(seed)
    others = [label for label in columns if label not in tracked]
    if len(others) >= len(tracked):
        for number in range(random_sets):
            chosen = sorted(draw.sample(range(len(columns)), len(tracked)))
            rows.append(row(f"random {number}", " ".join(columns[i] for i in chosen),
                            [float(sum(m[2 + i] for i in chosen)) for m in means]))
    return rows


def write_tracking(result: TrackingResult, output_dir: str | os.PathLike) -> Path:
    """`groups.csv`, `correlation.csv` (with an attribute), `tracking.png` and `metadata.json`."""
    writers = {TABLE: lambda file: write_table(file, "groups", result.group_rows),
               PLOT: lambda file: plot_tracking(file, result)}
    if result.summary_rows:
        writers[SUMMARY] = lambda file: write_table(file, "correlation", result.summary_rows)
    return write_folder(output_dir, writers, result.metadata)


def plot_tracking(path: Path, result: TrackingResult) -> None:
    """Mean score ± std per group (left axis) and the attribute's rate (right axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.group_rows
    labels = [str(row["group"]) for row in rows]
    positions = list(range(len(rows)))
    figure, axes = plt.subplots(figsize=(7.0, 4.2))
    try:
        axes.errorbar(positions, [r["score_mean"] for r in rows], yerr=[r["score_std"] for r in rows], marker="o",
                      capsize=3, label=f"score of {' + '.join(result.pieces)}")
        axes.set_xticks(positions, labels, rotation=45 if len(labels) > 12 else 0)
        axes.set_xlabel(result.metadata["group"])
        axes.set_ylabel(f"<pieces, '{result.metadata['concept']}'> / |y|  (mean ± std)")
        if result.metadata["attribute"] is not None:
            rate_axes = axes.twinx()
            rate_axes.plot(positions, [100 * r["attribute_rate"] for r in rows], color="black", linestyle="--",
                           marker="s", label=f"rate of {result.metadata['attribute']}")
            rate_axes.set_ylabel(f"{result.metadata['attribute']} (% of images)")
            rate_axes.legend(loc="lower right", fontsize=8)
            tracked = next(r for r in result.summary_rows if r["scores"] == "tracked")
            axes.set_title(f"r = {tracked['correlation_with_rate']:.2f} over {tracked['groups']} groups, "
                           f"{tracked['images']} images")
        axes.legend(loc="upper left", fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=120, format="png")
    finally:
        plt.close(figure)

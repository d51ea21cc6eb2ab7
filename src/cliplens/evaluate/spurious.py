"""Spurious-cue removal by text-selected pieces (docs/methods/spurious.md).

Units (heads, neuron×head pairs or principal components of heads) are ranked by their variance inside the span of
a concept's texts (a list of background words, say); the top k are mean-ablated, for every k of a sweep, next to k
random units of the same kind (several draws) and, for components, the whole heads that hold them. Images carry a
group g = 2·y + place (y the class, place the spurious attribute), so every row reports the accuracy of each group,
the worst group, the mean over groups and the image-weighted average. k is chosen on a validation set (the largest
worst-group accuracy; ties go to the smaller k) and reported on a test set.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CliplensError
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..report.figures import png_figure
from ..explain.components import concept_basis
from .piece_edits import ComponentFamily, Edit, PieceFamily

DEFAULT_KS = (1, 2, 4, 8, 16, 32)
RANDOM_DRAWS = 10
FULL, SELECTED, RANDOM, HOLDERS = "full model", "selected", "random", "heads holding them"


def candidate_count(family: PieceFamily) -> int:
    """How many units the selection ranks (components only, never the heads appended after them)."""
    return family.component_count if isinstance(family, ComponentFamily) else len(family.labels)


def rank_units(family: PieceFamily, text_embeddings: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Candidate units by concept variance, descending (ties: lower index), and one ranking row per unit."""
    basis = concept_basis(text_embeddings)
    count = candidate_count(family)
    inside, total = family.variances(basis)[:count], family.variances()[:count]
    order = inside.argsort(descending=True, stable=True)
    fraction = torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    rows = [{"rank": rank, "piece": family.labels[u], "concept_variance": float(inside[u]),
             "variance": float(total[u]), "concept_fraction": float(fraction[u])}
            for rank, u in enumerate(order.tolist())]
    return order, rows


def check_ks(ks: Sequence[int], available: int) -> list[int]:
    """The distinct k in increasing order, without those above the number of units (a ResNet has few heads)."""
    given = sorted(set(int(k) for k in ks))
    if not given or given[0] < 1:
        raise CliplensError(f"k must be positive integers, got {list(ks)}")
    kept = [k for k in given if k <= available]
    if not kept:
        raise CliplensError(f"every k ({given}) exceeds the {available} units of this kind; pass smaller --k values")
    return kept


def ablating(units: torch.Tensor, size: int) -> torch.Tensor:
    coefficients = torch.zeros(size, dtype=torch.float64)
    coefficients[units] = -1.0
    return coefficients


def selection_edits(family: PieceFamily, order: torch.Tensor, ks: Sequence[int], *, draws: int = RANDOM_DRAWS,
                    seed: int = 0) -> list[Edit]:
    """The full model; then per k the top k ablated, `draws` random k-sets of the same kind ablated, and for
    components the heads holding the top k ablated whole."""
    if draws < 1:
        raise CliplensError(f"draws must be at least 1, got {draws}")
    count, size = candidate_count(family), len(family.labels)
    generator = torch.Generator().manual_seed(seed)
    edits = [Edit(FULL, torch.zeros(size, dtype=torch.float64), (("k", 0), ("draw", "")))]
    for k in check_ks(ks, count):
        chosen = order[:k]
        edits.append(Edit(SELECTED, ablating(chosen, size), (("k", k), ("draw", ""))))
        edits += [Edit(RANDOM, ablating(torch.randperm(count, generator=generator)[:k], size), (("k", k), ("draw", d)))
                  for d in range(draws)]
        if isinstance(family, ComponentFamily):
            edits.append(Edit(HOLDERS, ablating(family.holders(chosen), size), (("k", k), ("draw", ""))))
    return edits


def choose_k(rows: Sequence[dict[str, Any]]) -> int:
    """The k whose selected units give the best worst-group accuracy (ties: the smaller k)."""
    selected = [row for row in rows if row["edit"] == SELECTED]
    if not selected:
        raise CliplensError("no selected-unit rows to choose k from")
    return min(selected, key=lambda row: (-row["worst_group"], row["k"]))["k"]


def summary_rows(rows: Sequence[dict[str, Any]], k: int, groups: Sequence[str]) -> list[dict[str, Any]]:
    """The table at k: full model, selected units, random units (mean, spread and range over draws), holders."""
    measures = list(groups) + ["worst_group", "group_mean", "average"]
    out = []
    for name in (FULL, SELECTED, RANDOM, HOLDERS):
        members = [row for row in rows if row["edit"] == name and row["k"] in ((0,) if name == FULL else (k,))]
        if not members:
            continue
        summary: dict[str, Any] = {"edit": name, "k": members[0]["k"], "draws": len(members),
                                   "images": members[0]["images"]}
        for measure in measures:
            values = [row[measure] for row in members if row[measure] != ""]
            summary[measure] = statistics.fmean(values) if values else ""
            summary[f"{measure}_std"] = statistics.pstdev(values) if len(values) > 1 else ""
        out.append(summary)
    return out


@dataclass
class SpuriousResult:
    """What a spurious-cue study found: the ranking, every edit on validation and test, k, and the test table."""

    kind: str
    concept: list[str]
    ranking: list[dict[str, Any]]
    sweep: list[dict[str, Any]]
    k: int
    summary: list[dict[str, Any]]
    groups: list[str]
    metadata: dict[str, Any]


def plot(path: str | os.PathLike, result: SpuriousResult) -> Path:
    """Left: accuracy per group on the test set at the chosen k (random: mean ± spread over draws). Right: the
    validation worst-group accuracy against k, selected vs random (PNG)."""
    with png_figure(path, "the spurious-cue plot", ncols=2, figsize=(11, 4.2),
                    gridspec_kw={"width_ratios": [3, 2]}) as (_, (bars, curve)):
        measures = result.groups + ["worst_group", "average"]
        width = 0.8 / len(result.summary)
        for i, row in enumerate(result.summary):
            values = [100 * row[m] if row[m] != "" else 0.0 for m in measures]
            spread = [100 * row[f"{m}_std"] if row[f"{m}_std"] != "" else 0.0 for m in measures]
            label = row["edit"] if row["edit"] == FULL else f"{row['edit']} (k={row['k']})"
            bars.bar([x + i * width for x in range(len(measures))], values, width, yerr=spread, capsize=2, label=label)
        bars.set_xticks([x + 0.4 - width / 2 for x in range(len(measures))],
                        [m.replace("_", " ") for m in measures], rotation=20, fontsize=8)
        bars.set_ylabel("test accuracy (%)")
        bars.set_ylim(0, 105)
        model = result.metadata["model"]["model"]
        bars.set_title(f"{model}: {result.kind} along {', '.join(result.concept)}", fontsize=9)
        bars.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=len(result.summary))
        val = [row for row in result.sweep if row["split"] == "val"]
        ks = sorted({row["k"] for row in val if row["edit"] == SELECTED})
        for name in (SELECTED, RANDOM, HOLDERS):
            means = [[row["worst_group"] for row in val if row["edit"] == name and row["k"] == k] for k in ks]
            if all(means):
                curve.plot(ks, [100 * statistics.fmean(m) for m in means], marker="o", label=name)
        full = next(row["worst_group"] for row in val if row["edit"] == FULL)
        curve.axhline(100 * full, color="grey", linestyle="--", label=FULL)
        curve.axvline(result.k, color="black", linewidth=0.8, linestyle=":")
        curve.set_xscale("log", base=2)
        curve.set_xticks(ks, [str(k) for k in ks])
        curve.set_xlabel("k (units ablated)")
        curve.set_ylabel("validation worst-group accuracy (%)")
        curve.set_title(f"k chosen on validation: {result.k}", fontsize=9)
        curve.legend(fontsize=7)
    return Path(path)


RANKING, SWEEP, SUMMARY, FIGURE = "ranking.csv", "sweep.csv", "summary.csv", "spurious.png"


def write_spurious(result: SpuriousResult, output_dir: str | os.PathLike) -> Path:
    """ranking.csv, sweep.csv (every edit on val and test), summary.csv (test at k), spurious.png, metadata.json."""
    return write_folder(output_dir, {
        RANKING: lambda file: write_table(file, "concept_ranking", result.ranking),
        SWEEP: lambda file: write_table(file, "group_edits", result.sweep),
        SUMMARY: lambda file: write_table(file, "group_summary", result.summary),
        FIGURE: lambda file: plot(file, result),
    }, result.metadata)

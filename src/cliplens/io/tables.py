"""CSV tables: one header (given, or the first row's keys), written atomically so a crash leaves no half table.

Every table a command writes is one of the kinds in SCHEMAS, with the columns docs/outputs.md explains; the same kind
has the same columns whichever command writes it, and a cell that does not apply to a row is left blank. The one
column that stands for several is GROUPS: the per-group accuracies of the group tables, one column per group (class,
or class × spurious attribute) of the data, named after it, in the data's order.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CliplensError
from .atomic import replacing

GROUPS = "<group>"  # stands for one column per group of the data (see the module docstring)

# kind -> its columns, in order (docs/outputs.md, one section per kind)
SCHEMAS: dict[str, tuple[str, ...]] = {
    # texts naming a unit: one row per text; the unit is `label`, with its layer / head / neuron numbers
    "descriptions": ("label", "layer", "head", "neuron", "method", "direction", "pole", "rank", "description",
                     "similarity", "coefficient", "variance_explained"),
    # the top images of one unit, best first
    "ranking": ("label", "rank", "index", "item", "score", "ranked_by"),
    # zero-shot accuracy with units mean-ablated (or rebuilt), one row per variant, the full model first
    "ablation": ("variant", "level", "ablated", "kept", "total", "accuracy", "correct", "images", "in_sample"),
    # zero-shot accuracy with every analysed head rebuilt from m texts, per method and m, after the reference rows
    "reconstruction": ("method", "texts", "accuracy", "correct", "images"),
    # one row per ResNet neuron x head pair, by score
    "pairs": ("rank", "label", "head", "neuron", "score", "top_mean_abs_deviation", "coef_mean", "coef_std",
              "direction_norm", "sign", "kept_in_ablation"),
    # one row per neuron of a ViT MLP layer (second-order lens), by neuron
    "neurons": ("label", "layer", "neuron", "mean_norm", "rms_deviation", "threshold", "variance_explained_pc1",
                "topk_variance_explained_pc1", "top_images"),
    # one row per segmentation lens
    "segmentation": ("lens", "pixel_accuracy", "miou", "map", "class_miou", "images"),
    # which image each row of an array is
    "images": ("index", "item"),
    # CLIP-Dissect: one row per neuron of a layer of the target network, with its best concept (the reference's columns)
    "dissection": ("layer", "unit", "description", "similarity"),
    # the principal components of heads, each named by its two poles, one row per component
    "components": ("piece", "component", "variance", "variance_percent", "dominant_texts", "opposite_texts",
                   "reconstruction_text"),
    # heads and components ranked by their variance along a text's direction, per query and level
    "queries": ("query", "level", "rank", "piece", "query_variance", "variance", "query_fraction"),
    # units ranked by their variance inside a concept's span
    "concept_ranking": ("rank", "piece", "concept_variance", "variance", "concept_fraction"),
    # zero-shot accuracy per group with pieces edited, one row per edit; the full model first
    "group_edits": ("edit", "piece", "component", "k", "draw", "split", GROUPS, "worst_group", "group_mean",
                    "average", "images", "delta"),
    # the group edits at the chosen k: mean and spread over the rows of each edit
    "group_summary": ("edit", "k", "draws", "images", GROUPS, "worst_group", "worst_group_std", "group_mean",
                      "group_mean_std", "average", "average_std"),
    # one image's score for a text, split over the pieces, by share
    "discovery": ("rank", "piece", "kind", "contribution", "share", "words", "peak_row", "peak_col",
                  "at_pooled_token"),
    # precision@k of nearest neighbours sharing an attribute, per space
    "precision": ("space", "heads", "chosen_for", "attribute", "top", "precision", "baseline_embedding", "chance",
                  "images"),
    # each head's TextSpan share of each attribute's texts
    "shares": ("head", "attribute", "share"),
    # a concept's score per group of images (years, colours, ...)
    "groups": ("group", "images", "score_mean", "score_std", "embedding_mean", "embedding_std", "attribute_rate"),
    # correlation of a concept's score with an attribute's rate over the groups
    "correlation": ("scores", "pieces", "correlation_with_rate", "groups", "images"),
    # semantic adversarial images: per class pair and condition (selected / random / no words), the success rate
    "adversarial": ("source", "target", "condition", "words", "prompts", "images", "successes", "success_rate",
                    "stderr", "mean_margin", "margin_stderr"),
}


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
               ) -> Path:
    """Write `rows` under the header `columns` (default: the first row's keys; then at least one row is needed)."""
    rows = list(rows)
    path = Path(path)
    if columns is None:
        if not rows:
            raise CliplensError(f"nothing to write to {path}")
        columns = list(rows[0])
    with replacing(path) as staging, open(staging, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_table(path: str | os.PathLike, kind: str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write `rows` as a table of `kind` (SCHEMAS): a column a row lacks is blank; a key the kind lacks is refused, so
    a writer cannot drift from the documented schema (in a kind with GROUPS, the keys beyond its named columns are the
    groups, and their `<group>_std` spreads where the kind has spreads)."""
    rows = list(rows)
    columns = list(SCHEMAS[kind])
    if GROUPS in columns:
        named = set(columns)
        groups = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in named]
        at = columns.index(GROUPS)
        columns[at:at + 1] = groups
    for row in rows:
        extra = set(row) - set(columns)
        if extra:
            raise CliplensError(f"a {kind} row has columns {', '.join(sorted(extra))} that the {kind} table does not "
                                f"have ({', '.join(c for c in SCHEMAS[kind])})")
    return write_rows(path, rows, columns)

"""CSV tables: one header (given, or the first row's keys), written atomically so a crash leaves no half table.

Every table a command writes is one of the kinds in SCHEMAS, with the columns docs/outputs.md explains; the same kind
has the same columns whichever command writes it, and a cell that does not apply to a row is left blank.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CliplensError
from .atomic import replacing

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
    a writer cannot drift from the documented schema."""
    columns = SCHEMAS[kind]
    rows = list(rows)
    for row in rows:
        extra = set(row) - set(columns)
        if extra:
            raise CliplensError(f"a {kind} row has columns {', '.join(sorted(extra))} that the {kind} table does not "
                                f"have ({', '.join(columns)})")
    return write_rows(path, rows, columns)

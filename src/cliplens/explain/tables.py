"""Description tables: what each piece's explainer says, one CSV row per (layer, unit, rank, text).

The columns extend CLIP-Dissect's `layer,unit,description,similarity` with `rank` (0-based) and `method`, so tables
from different explainers and tools can be concatenated and compared. For a head `L3H7` the layer is 3 and the unit 7.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from ..errors import CliplensError
from ..io.tables import write_rows
from ..labels import match_label

COLUMNS = ("layer", "unit", "description", "similarity", "rank", "method")


class Describes(Protocol):
    def descriptions(self) -> list[dict[str, Any]]: ...


def label_position(label: str) -> tuple[int | str, int | str]:
    """(layer, unit) of a label: L3H7 → (3, 7), L3N5 → (3, 5), L3.mlp → (3, "mlp"), anything else → ("", label)."""
    piece = match_label(label)
    if piece is None or piece.layer is None or piece.token is not None:
        return "", label
    if piece.kind in ("attn", "mlp"):
        return piece.layer, piece.kind
    return piece.layer, piece.head if piece.kind == "head" else piece.neuron


def description_rows(explainers: Mapping[str, Describes]) -> list[dict[str, Any]]:
    """Rows for fitted explainers keyed by piece label (e.g. the dict `fit_pieces` returns), in the mapping's order."""
    rows = []
    for label, explainer in explainers.items():
        layer, unit = label_position(label)
        rows.extend({"layer": layer, "unit": unit, **row} for row in explainer.descriptions())
    return rows


def write_descriptions(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as a CSV with COLUMNS; atomic, so a crash never leaves half a table."""
    rows = list(rows)
    for row in rows:
        if set(row) != set(COLUMNS):
            raise CliplensError(f"a description row needs exactly the columns {', '.join(COLUMNS)}, got {sorted(row)}")
    return write_rows(path, rows, COLUMNS)

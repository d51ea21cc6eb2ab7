"""Description tables: what each piece's explainer says, one CSV row per (layer, unit, rank, text).

The columns extend CLIP-Dissect's `layer,unit,description,similarity` with `rank` (0-based) and `method`, so tables
from different explainers and tools can be concatenated and compared. For a head `L3H7` the layer is 3 and the unit 7.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from ..errors import CliplensError
from ..io.tables import write_rows

COLUMNS = ("layer", "unit", "description", "similarity", "rank", "method")

_NUMBERED_UNIT = re.compile(r"L(\d+)[HN](\d+)")  # a head L{l}H{h} or an MLP neuron L{l}N{n}
_NAMED_UNIT = re.compile(r"L(\d+)\.(\w+)")  # a whole sub-layer, L{l}.attn or L{l}.mlp


class Describes(Protocol):
    def descriptions(self) -> list[dict[str, Any]]: ...


def label_position(label: str) -> tuple[int | str, int | str]:
    """(layer, unit) of a label: L3H7 → (3, 7), L3N5 → (3, 5), L3.mlp → (3, "mlp"), anything else → ("", label)."""
    numbered = _NUMBERED_UNIT.fullmatch(label)
    if numbered:
        return int(numbered[1]), int(numbered[2])
    named = _NAMED_UNIT.fullmatch(label)
    if named:
        return int(named[1]), named[2]
    return "", label


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

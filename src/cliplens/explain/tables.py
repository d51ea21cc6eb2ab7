"""Description tables: what each unit's explainer says, one CSV row per text (docs/outputs.md#descriptions).

A row names its unit by label and by its layer, head and neuron numbers (blank where the unit has none), and carries
the number its method gives the text in the column that means that number: `similarity` (svd: a cosine),
`coefficient` (omp: a signed sparse-code weight) or `variance_explained` (textspan).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from ..io.tables import SCHEMAS, write_table
from ..labels import match_label

COLUMNS = SCHEMAS["descriptions"]


class Describes(Protocol):
    def descriptions(self) -> list[dict[str, Any]]: ...


def unit_columns(label: str) -> dict[str, Any]:
    """label, layer, head and neuron of a unit: L3H7 → layer 3, head 7; H2N17 → head 2, neuron 17; N17 → neuron 17;
    a number the unit does not have is blank."""
    piece = match_label(label)
    numbers = {name: None if piece is None or piece.token is not None else getattr(piece, name)
               for name in ("layer", "head", "neuron")}
    return {"label": label, **{name: "" if value is None else value for name, value in numbers.items()}}


def description_row(label: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """A whole row of COLUMNS for unit `label`: its numbers, `values`, and blanks where the method gives nothing, so
    that a row in Python is the row in the CSV."""
    return {column: "" for column in COLUMNS} | unit_columns(label) | dict(values)


def description_rows(explainers: Mapping[str, Describes]) -> list[dict[str, Any]]:
    """Rows for fitted explainers keyed by piece label (e.g. the dict `fit_pieces` returns), in the mapping's order."""
    return [description_row(label, row) for label, explainer in explainers.items()
            for row in explainer.descriptions()]


def write_descriptions(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as a descriptions table (COLUMNS; a column a row lacks is blank); atomic, so a crash never leaves
    half a table."""
    return write_table(path, "descriptions", rows)

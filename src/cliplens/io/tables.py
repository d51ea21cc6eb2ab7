"""CSV tables: one header (given, or the first row's keys), written atomically so a crash leaves no half table."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CliplensError
from .atomic import replacing


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

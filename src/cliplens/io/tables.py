"""CSV tables: one header (given, or the first row's keys), written atomically so a crash leaves no half table."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CliplensError


def write_rows(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
               ) -> Path:
    """Write `rows` under the header `columns` (default: the first row's keys; then at least one row is needed)."""
    rows = list(rows)
    path = Path(path)
    if columns is None:
        if not rows:
            raise CliplensError(f"nothing to write to {path}")
        columns = list(rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return path

"""metadata.json of a command's output folder: what was run, on which model and data, with which settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .atomic import write_text


def write_metadata(output_dir: Path, record: Mapping[str, Any]) -> Path:
    return write_text(output_dir / "metadata.json", json.dumps(record, indent=2, default=str) + "\n")

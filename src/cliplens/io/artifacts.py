"""Self-describing artifacts: a folder holding `tensors.safetensors` and `metadata.json`.

Every artifact records what produced it (model fingerprint, data fingerprint, settings, package version). Loading
checks the fields the caller cares about and refuses a mismatch, so statistics or text embeddings computed for one
model can never silently be used with another. Writes are atomic: a crash never leaves half an artifact behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from ..errors import CliplensError
from ..version import __version__
from .compat import require_match

TENSORS = "tensors.safetensors"
METADATA = "metadata.json"


def save_artifact(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write tensors and metadata to the folder `path`, replacing any artifact already there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**metadata, "package_version": __version__, "created": datetime.now(timezone.utc).isoformat()}
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, staging / TENSORS)
        (staging / METADATA).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not (path / METADATA).is_file():
        raise CliplensError(f"{path} is not a cliplens artifact (no {METADATA}); pass the folder a cliplens command wrote")
    try:
        return json.loads((path / METADATA).read_text())
    except json.JSONDecodeError as exc:
        raise CliplensError(f"{path / METADATA} is corrupt ({exc.msg} at line {exc.lineno}); recompute the artifact") from exc


def load_artifact(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact; every key in `expect` must equal the stored metadata value, or loading is refused."""
    path = Path(path)
    metadata = read_metadata(path)
    require_match(metadata, expect or {}, str(path))
    try:
        tensors = load_file(path / TENSORS)
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CliplensError(f"{path / TENSORS} cannot be read ({exc}); recompute the artifact") from exc
    return tensors, metadata

"""The scores of an analysis's evaluation pass, found again by what was scored (docs/methods/analysis.md#scores).

A command given an analysis in place of its evaluation data builds its variants and its zero-shot classifier as it
always does, and looks their correct counts up instead of streaming images. The keys are digests of content, never of
names: a task is its classifier weights and the means its variants use; a variant is what it ablates, what it
projects (with the bases' exact bytes) and whether it replaces CLS cells. A variant built differently (another
preset, another pool, other statistics) therefore finds nothing and is refused in one line: a stored number is only
ever returned for the very computation that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import CliplensError

SCORES = "scores.json"


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:32]


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()


def task_key(weights: torch.Tensor, labels: Sequence[str], means: torch.Tensor, cls_means: torch.Tensor | None) -> str:
    """A zero-shot classifier scored against one set of pieces and their means."""
    cls = b"" if cls_means is None else _bytes(cls_means)
    return _digest(_bytes(weights), json.dumps(list(labels)).encode(), _bytes(means), cls)


def variant_key(ablated: Sequence[str], projected: Mapping[str, torch.Tensor], cls: bool) -> str:
    """What a variant does to the pieces, whatever it is called."""
    bases = [label.encode() + _bytes(torch.as_tensor(projected[label])) for label in sorted(projected)]
    return _digest(json.dumps(sorted(ablated)).encode(), b"cls" if cls else b"", *bases)


def stored_task(folder: str | os.PathLike, key: str, variant_keys: Sequence[str]) -> dict[str, Any]:
    """{count, full_correct, classes, correct: [per variant]} of a task the analysis in `folder` scored."""
    path = Path(folder) / SCORES
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliplensError(f"{path} cannot be read as stored scores ({exc}); run `cliplens analyze` again") from exc
    task = tasks.get(key) if isinstance(tasks, dict) else None
    if not isinstance(task, dict):
        raise CliplensError(f"{folder} scored no zero-shot task with this classifier and these means (another "
                            "--label, --templates or statistics?); ask `cliplens analyze` for this evaluation")
    missing = [key for key in variant_keys if key not in task["variants"]]
    if missing:
        raise CliplensError(f"{folder} did not score {len(missing)} of these {len(variant_keys)} variants (other "
                            "presets, patterns or reconstruction settings?); ask `cliplens analyze` for them")
    return {**task, "correct": [task["variants"][key] for key in variant_keys]}


def scores_file(tasks: Mapping[str, Mapping[str, Any]]) -> str:
    """The JSON text of `scores.json`: {"tasks": {task key: {count, full_correct, classes, variants: {key: n}}}}."""
    return json.dumps({"tasks": tasks}, indent=1, sort_keys=True) + "\n"

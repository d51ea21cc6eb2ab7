"""The scores of an analysis's evaluation pass, found again by what was scored (docs/methods/analysis.md#scores).

A command given an analysis in place of its evaluation data builds its variants and its zero-shot classifier as it
always does, and looks their correct counts up instead of streaming images. The keys are digests of content, never of
names: a task is its classifier weights and the means its variants use; a variant is what it ablates, what it
projects (with the bases' exact bytes) and whether it replaces CLS cells. A variant built differently (another
preset, another pool, other statistics) therefore finds nothing and is refused in one line: a stored number is only
ever returned for the very computation that produced it. ResNet pair ablations are keyed the same way: a task is its
classifier with the pair statistics' means and factor weights, a variant its level and the tensors it is built from
(a mask, or directions and gains).
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


def second_order_key(weights: torch.Tensor, settings: Mapping[str, Any], *fitted: torch.Tensor) -> str:
    """A zero-shot classifier scored against one layer's second-order statistics (their settings and the tensors its
    variants are built from: centre, thresholds, principal directions)."""
    return _digest(_bytes(weights), json.dumps(dict(settings), sort_keys=True).encode(), *map(_bytes, fitted))


def pair_task_key(weights: torch.Tensor, means: torch.Tensor, factors: Mapping[str, torch.Tensor]) -> str:
    """A zero-shot classifier scored against pair ablations built from these means and factor weights."""
    return _digest(b"pairs", _bytes(weights), _bytes(means), *(name.encode() + _bytes(factors[name])
                                                               for name in sorted(factors)))


def pair_variant_key(level: str, fixed: Sequence[torch.Tensor]) -> str:
    """What a pair variant does: its level and the exact tensors (with their shapes) it rebuilds the embedding with."""
    shapes = json.dumps([level, [list(tensor.shape) for tensor in fixed]]).encode()
    return _digest(shapes, *map(_bytes, fixed))


def _section(folder: str | os.PathLike, section: str) -> dict[str, Any]:
    path = Path(folder) / SCORES
    try:
        found = json.loads(path.read_text(encoding="utf-8"))[section]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliplensError(f"{path} cannot be read as stored scores ({exc}); run `cliplens analyze` again") from exc
    if not isinstance(found, dict):
        raise CliplensError(f"{path} holds no {section} scores; run `cliplens analyze` again")
    return found


def stored_second_order(folder: str | os.PathLike, key: str, layer: int) -> dict[str, Any]:
    """{count, correct: {variant: n}, significant} of the second-order ablation the analysis in `folder` scored."""
    entry = _section(folder, "second_order").get(key)
    if not isinstance(entry, dict):
        raise CliplensError(f"{folder} scored no second-order ablation of layer {layer} with this classifier and "
                            f"these statistics; ask `cliplens analyze` for second-order --mlp-layer {layer} with "
                            "evaluation data (and the same --label and --templates)")
    return entry


def stored_task(folder: str | os.PathLike, key: str, variant_keys: Sequence[str]) -> dict[str, Any]:
    """{count, full_correct, classes, correct: [per variant]} of a task the analysis in `folder` scored."""
    task = _section(folder, "tasks").get(key)
    if not isinstance(task, dict):
        raise CliplensError(f"{folder} scored no zero-shot task with this classifier and these means (another "
                            "--label, --templates or statistics?); ask `cliplens analyze` for this evaluation")
    missing = [key for key in variant_keys if key not in task["variants"]]
    if missing:
        raise CliplensError(f"{folder} did not score {len(missing)} of these {len(variant_keys)} variants (other "
                            "presets, patterns or reconstruction settings?); ask `cliplens analyze` for them")
    return {**task, "correct": [task["variants"][key] for key in variant_keys]}


def stored_pairs(folder: str | os.PathLike, key: str, variant_keys: Sequence[str]) -> dict[str, Any]:
    """{count, correct: [per variant]} of the pair ablations the analysis in `folder` scored with this classifier."""
    task = _section(folder, "pairs").get(key)
    if not isinstance(task, dict):
        raise CliplensError(f"{folder} scored no pair ablation with this classifier and these pair statistics "
                            "(another --label, --templates or --fit-path?); ask `cliplens analyze --ask pair-ablate` "
                            "for it")
    missing = [key for key in variant_keys if key not in task["variants"]]
    if missing:
        raise CliplensError(f"{folder} did not score {len(missing)} of these {len(variant_keys)} pair variants "
                            "(another --keep, --pool, --omp-atoms or --dict-norm?); ask `cliplens analyze --ask "
                            "pair-ablate` with the same settings")
    return {"count": task["count"], "correct": [task["variants"][key] for key in variant_keys]}


def scores_file(tasks: Mapping[str, Mapping[str, Any]], second_order: Mapping[str, Mapping[str, Any]],
                pairs: Mapping[str, Mapping[str, Any]]) -> str:
    """The JSON text of `scores.json`: {"tasks": {task key: {count, full_correct, classes, variants: {key: n}}},
    "second_order": {key: {count, correct: {variant: n}, significant}},
    "pairs": {key: {count, variants: {key: n}}}}."""
    return json.dumps({"tasks": tasks, "second_order": second_order, "pairs": pairs}, indent=1, sort_keys=True) + "\n"

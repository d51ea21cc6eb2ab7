"""Caches that cannot lie: every tensor CLIP-Dissect reuses is stored under a key of everything that made it.

A key holds the model fingerprint (weights and preprocessing), the probe set's fingerprint (paths and sizes, or the
shapes split spec), the layer, the reduction, the concepts and template, and the package version. The folder name is
a digest of the key and loading pins every field of it (`io.artifacts`), so any changed input is a miss and a copied
or renamed entry is refused, never reused. Sources without a real fingerprint are never cached
(docs/methods/dissect.md#caches).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from ..io.artifacts import load_artifact, save_artifact
from ..version import __version__

Tensors = dict[str, torch.Tensor]


def default_cache_dir() -> Path:
    """`$CLIPLENS_CACHE/dissect`, or `~/.cache/cliplens/dissect` when the variable is unset."""
    return Path(os.environ.get("CLIPLENS_CACHE", "~/.cache/cliplens")).expanduser() / "dissect"


class Cache:
    """`fetch(kind, key, compute)`: the stored tensors for this exact key, else `compute()` (then stored).

    `folder=None` turns caching off. `hits` and `misses` list the kinds looked up, in order."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = None if folder is None else Path(folder).expanduser()
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, kind: str, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(self.identity(kind, key), sort_keys=True).encode()).hexdigest()
        return self.folder / kind / digest[:32]

    @staticmethod
    def identity(kind: str, key: dict[str, Any]) -> dict[str, Any]:
        return {"kind": f"dissect-{kind}", "cliplens": __version__, **key}

    def fetch(self, kind: str, key: dict[str, Any], compute: Callable[[], Tensors]) -> Tensors:
        unverified = any(isinstance(value, str) and value.startswith("unverified-") for value in key.values())
        if self.folder is None or unverified:
            self.misses.append(kind)
            return compute()
        path = self.path(kind, key)
        if path.exists():
            tensors, _ = load_artifact(path, expect=self.identity(kind, key))
            self.hits.append(kind)
            return tensors
        self.misses.append(kind)
        tensors = compute()
        save_artifact(path, tensors, self.identity(kind, key))
        return tensors

"""What makes two statistics artifacts describe the same thing, so they may be merged or used together."""

from __future__ import annotations

import hashlib
from typing import Any

from ..io.compat import MODEL_KEY, require_match
from ..settings import KEYS

IDENTITY_KEYS = (MODEL_KEY, *KEYS)


def check_compatible(a: dict[str, Any], b: dict[str, Any]) -> None:
    require_match(b, {key: a.get(key) for key in IDENTITY_KEYS}, "the statistics to merge",
                  remedy="merge only statistics made with the same model and settings")


def merged_metadata(a: dict[str, Any], b: dict[str, Any], count: int) -> dict[str, Any]:
    """Metadata of the union of two shards: the data fingerprint covers both, in order."""
    joined = hashlib.sha256(f"{a.get('data_fingerprint')}+{b.get('data_fingerprint')}".encode()).hexdigest()[:16]
    parts = [a.get("data_fingerprint"), b.get("data_fingerprint")]
    return {**a, "data_fingerprint": joined, "data_parts": parts, "count": count,
            "skipped": a.get("skipped", 0) + b.get("skipped", 0), "data_size": a.get("data_size", 0) + b.get("data_size", 0)}

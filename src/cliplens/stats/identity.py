"""What makes two statistics artifacts describe the same thing, so they may be merged or used together."""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import CliplensError
from ..settings import KEYS

IDENTITY_KEYS = ("fingerprint", *KEYS)


def check_compatible(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in IDENTITY_KEYS:
        if a.get(key) != b.get(key):
            raise CliplensError(f"cannot merge statistics with different {key} ({a.get(key)!r} vs {b.get(key)!r})")


def merged_metadata(a: dict[str, Any], b: dict[str, Any], count: int) -> dict[str, Any]:
    """Metadata of the union of two shards: the data fingerprint covers both, in order."""
    joined = hashlib.sha256(f"{a.get('data_fingerprint')}+{b.get('data_fingerprint')}".encode()).hexdigest()[:16]
    parts = [a.get("data_fingerprint"), b.get("data_fingerprint")]
    return {**a, "data_fingerprint": joined, "data_parts": parts, "count": count,
            "skipped": a.get("skipped", 0) + b.get("skipped", 0), "data_size": a.get("data_size", 0) + b.get("data_size", 0)}

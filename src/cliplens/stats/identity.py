"""What makes two statistics artifacts describe the same thing, so they may be merged or used together."""

from __future__ import annotations

import hashlib
from typing import Any

from ..errors import CliplensError
from ..io.compat import MODEL_KEY, require_match
from ..settings import KEYS

IDENTITY_KEYS = (MODEL_KEY, *KEYS, "precision")


def check_compatible(a: dict[str, Any], b: dict[str, Any]) -> None:
    require_match(b, {key: a.get(key) for key in IDENTITY_KEYS}, "the statistics to merge",
                  remedy="merge only statistics made with the same model and settings")
    shared = [part for part in data_parts(a) if part in data_parts(b) and verified(part)]
    if shared:
        raise CliplensError(f"both statistics cover the data with fingerprint {shared[0]} (same file names and "
                            "sizes); merging would count those images twice: merge statistics of disjoint data")


def data_parts(metadata: dict[str, Any]) -> list[str]:
    """Fingerprints of every shard of data a statistics artifact covers: its own, or its parts' when merged."""
    return list(metadata.get("data_parts") or [metadata.get("data_fingerprint")])


def verified(fingerprint: Any) -> bool:
    """Whether equal fingerprints mean equal data: not for sources hashed only by type and length."""
    return isinstance(fingerprint, str) and not fingerprint.startswith("unverified-")


def merged_metadata(a: dict[str, Any], b: dict[str, Any], count: int) -> dict[str, Any]:
    """Metadata of the union of two shards: the data fingerprint covers both, in order; the parts list every shard."""
    joined = hashlib.sha256(f"{a.get('data_fingerprint')}+{b.get('data_fingerprint')}".encode()).hexdigest()[:16]
    return {**a, "data_fingerprint": joined, "data_parts": data_parts(a) + data_parts(b), "count": count,
            "skipped": a.get("skipped", 0) + b.get("skipped", 0), "data_size": a.get("data_size", 0) + b.get("data_size", 0)}

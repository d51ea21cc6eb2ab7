"""What makes two statistics artifacts describe the same thing, so they may be merged or used together.

Every pass records which data it read: the data's fingerprint and, in `data_ranges`, which positions of which source
(a shard or a rank covers a slice, anything else the whole source). Merging refuses statistics of the same model and
settings whose data overlap, and the merged record lists every part; when the parts join into one contiguous slice,
the merged data fingerprint is that slice's, so the shards of a source merged in order carry the source's own
fingerprint, as one pass over it would.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..data.loader import LoadReport, fingerprint
from ..data.shards import coverage, slice_fingerprint
from ..errors import CliplensError
from ..io.compat import MODEL_KEY, require_match
from ..settings import KEYS

IDENTITY_KEYS = (MODEL_KEY, *KEYS, "precision")


def data_record(part: Any, report: LoadReport) -> dict[str, Any]:
    """The metadata entries that say which data a pass over `part` (a source, a shard or a rank's slice) read."""
    record = {"data_fingerprint": fingerprint(part), "data_size": report.total, "skipped": len(report.skipped),
              "data_ranges": [coverage(part)]}
    shard = getattr(part, "shard", None)
    if shard is not None:
        record["shard"] = str(shard)
    return record


def check_compatible(a: dict[str, Any], b: dict[str, Any]) -> None:
    require_match(b, {key: a.get(key) for key in IDENTITY_KEYS}, "the statistics to merge",
                  remedy="merge only statistics made with the same model and settings")
    shared = [part for part in data_parts(a) if part in data_parts(b) and verified(part)]
    if shared:
        raise CliplensError(f"both statistics cover the data with fingerprint {shared[0]} (same file names and "
                            "sizes); merging would count those images twice: merge statistics of disjoint data")
    for mine in data_ranges(a):
        for theirs in data_ranges(b):
            start, stop = max(mine["start"], theirs["start"]), min(mine["stop"], theirs["stop"])
            if mine["source"] == theirs["source"] and verified(mine["source"]) and start < stop:
                raise CliplensError(f"both statistics cover positions {start} to {stop - 1} of the data with "
                                    f"fingerprint {mine['source']}; merging would count those images twice: merge "
                                    "statistics of disjoint shards")


def data_parts(metadata: dict[str, Any]) -> list[str]:
    """Fingerprints of every shard of data a statistics artifact covers: its own, or its parts' when merged."""
    return list(metadata.get("data_parts") or [metadata.get("data_fingerprint")])


def data_ranges(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The well-formed {source, start, stop, size} ranges an artifact records (none for older artifacts)."""
    ranges = metadata.get("data_ranges")
    keys = {"source": str, "start": int, "stop": int, "size": int}
    if not isinstance(ranges, list):
        return []
    return [r for r in ranges if isinstance(r, dict) and all(isinstance(r.get(k), t) for k, t in keys.items())]


def verified(fingerprint: Any) -> bool:
    """Whether equal fingerprints mean equal data: not for sources hashed only by type and length."""
    return isinstance(fingerprint, str) and not fingerprint.startswith("unverified-")


def merged_metadata(a: dict[str, Any], b: dict[str, Any], count: int) -> dict[str, Any]:
    """Metadata of the union of two shards: the data fingerprint covers both, in order; the parts list every shard.

    When both record their ranges and these join into one contiguous slice of one source (shards i and i+1), the
    fingerprint is that slice's: the source's own once every shard is in.
    """
    ranges = _joined(data_ranges(a) + data_ranges(b))
    if len(ranges) == 1 and data_ranges(a) and data_ranges(b):
        (whole,) = ranges
        covered = slice_fingerprint(whole["source"], whole["start"], whole["stop"], whole["size"])
    else:
        covered = hashlib.sha256(f"{a.get('data_fingerprint')}+{b.get('data_fingerprint')}".encode()).hexdigest()[:16]
    merged = {**a, "data_fingerprint": covered, "data_parts": data_parts(a) + data_parts(b), "count": count,
              "skipped": a.get("skipped", 0) + b.get("skipped", 0),
              "data_size": a.get("data_size", 0) + b.get("data_size", 0), "data_ranges": ranges}
    merged.pop("shard", None)  # a merge is no longer one shard; data_ranges says what it covers
    return merged


def _joined(ranges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranges in merge order, each joined to the previous one when it continues it."""
    joined: list[dict[str, Any]] = []
    for r in ranges:
        last = joined[-1] if joined else None
        if last and (last["source"], last["size"], last["stop"]) == (r["source"], r["size"], r["start"]):
            joined[-1] = {**last, "stop": r["stop"]}
        else:
            joined.append(dict(r))
    return joined


def coverage_summary(metadata: dict[str, Any]) -> str:
    """Which data statistics cover, in words: the whole source, or which positions of which sources."""
    ranges = data_ranges(metadata)
    if not ranges:
        return f"the data with fingerprint {metadata.get('data_fingerprint')}"
    return "; ".join(f"all {r['size']} images of {r['source']}" if (r["start"], r["stop"]) == (0, r["size"]) else
                     f"images {r['start']} to {r['stop'] - 1} of the {r['size']} of {r['source']}" for r in ranges)

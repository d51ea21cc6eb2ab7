"""Contiguous, deterministic slices of a source: what `collect --shard i/n` and each torchrun rank process.

Shard i of n holds positions [⌊i·N/n⌋, ⌊(i+1)·N/n⌋) of the N items: every position lies in exactly one shard and
the shards follow each other in order, so statistics merged in shard order are those of one pass over the source.
A slice reports positions relative to itself (as any source does); merging shifts them back, shard by shard.

A slice has its own fingerprint, derived from the source's and its bounds, so two copies of one shard are the same
data to the merge check, and a slice that is the whole source keeps the source's fingerprint. `coverage` says which
positions of which source a pass read, which is how merges detect overlapping shards of different splits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CliplensError
from .loader import fingerprint

UNVERIFIED = "unverified-"  # prefix of fingerprints that hash only a source's type and length (see `fingerprint`)


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` equal contiguous parts."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise CliplensError(f"shard {self.index}/{self.count} does not exist; write i/n with 0 ≤ i < n, e.g. 0/4")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`"i/n"` (as `collect --shard` takes it) → Shard(i, n)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if match is None:
            raise CliplensError(f"bad shard {text!r}; write i/n with 0 ≤ i < n, e.g. --shard 0/4 for the first quarter")
        return cls(int(match[1]), int(match[2]))

    def bounds(self, size: int) -> tuple[int, int]:
        return self.index * size // self.count, (self.index + 1) * size // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def slice_fingerprint(source_fingerprint: str, start: int, stop: int, size: int) -> str:
    """The fingerprint of positions [start, stop) of a source of `size` items; the whole source keeps its own."""
    if (start, stop) == (0, size):
        return source_fingerprint
    digest = hashlib.sha256(f"{source_fingerprint}[{start}:{stop}]".encode()).hexdigest()[:16]
    return (UNVERIFIED if source_fingerprint.startswith(UNVERIFIED) else "") + digest


class SourceSlice:
    """Positions [start, stop) of `source`, read through it; a slice of a slice is a slice of the original."""

    def __init__(self, source: Any, start: int, stop: int, shard: Shard | None = None):
        if isinstance(source, SourceSlice):
            source, start, stop = source.source, source.start + start, source.start + stop
        self.source, self.start, self.stop, self.shard = source, start, stop, shard
        self.read = self._read if hasattr(source, "read") else None  # the loader asks sources that can say why

    def __len__(self) -> int:
        return self.stop - self.start

    def _position(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(f"position {i} out of range for a slice of {len(self)}")
        return self.start + i

    def __getitem__(self, i: int) -> Any:
        return self.source[self._position(i)]

    def _read(self, i: int) -> Any:
        return self.source.read(self._position(i))

    def describe(self, i: int) -> str:
        describe = getattr(self.source, "describe", None)
        return describe(self._position(i)) if describe else f"item {self._position(i)}"

    @property
    def fingerprint(self) -> str:
        return slice_fingerprint(fingerprint(self.source), self.start, self.stop, len(self.source))


def shard_of(source: Any, shard: Shard) -> SourceSlice:
    """Shard `shard` of `source`; an empty shard (more shards than items) is refused."""
    start, stop = shard.bounds(len(source))
    if start == stop:
        raise CliplensError(f"shard {shard} of {len(source)} items is empty; split the data into at most "
                            f"{len(source)} shards")
    return SourceSlice(source, start, stop, shard)


def coverage(source: Any) -> dict[str, Any]:
    """Which positions of which source a pass over `source` reads: {source, start, stop, size}."""
    if isinstance(source, SourceSlice):
        return {"source": fingerprint(source.source), "start": source.start, "stop": source.stop,
                "size": len(source.source)}
    return {"source": fingerprint(source), "start": 0, "stop": len(source), "size": len(source)}

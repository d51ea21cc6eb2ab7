"""Merging statistics artifacts that separate runs wrote: the shards of a job array, or runs over different data.

All inputs must be statistics of one kind, made with the same model and settings, over disjoint data (`identity`
refuses the rest). Shards of one source are put in source order first, so the merged image positions index the
source and the result is the same, bit for bit, whatever order they are given in. Piece and pair statistics merge on
their own; second-order statistics need their model, whose weights rebuild their directions, and merge their
rankings only when every part was ranked from the same centre (see `collect_second_order`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import CliplensError
from ..io.artifacts import read_metadata
from ..io.compat import MODEL_KEY
from .collect import PieceStats, load_stats
from .identity import data_ranges
from .pairs import PairStats
from .second_order import KIND as SECOND_ORDER, SecondOrderStats, load_second_order

Stats = PieceStats | PairStats | SecondOrderStats


def merge_artifacts(paths: Sequence[str | Path], model: Callable[[], Any] | None = None) -> Stats:
    """The statistics of all the artifacts' data together. `model` loads the Lens, and is called only for
    second-order statistics."""
    if len(paths) < 2:
        raise CliplensError("merging needs at least two statistics artifacts")
    records = [read_metadata(path) for path in paths]
    kinds = {record.get("kind") for record in records}
    if len(kinds) > 1:
        raise CliplensError(f"these artifacts hold different kinds of statistics ({', '.join(sorted(map(str, kinds)))}); "
                            "merge statistics of one kind")
    (kind,) = kinds
    if kind in ("piece-stats", "pair-stats"):
        parts = [load_stats(path) for path in paths]
    elif kind == SECOND_ORDER:
        lens = _model_of(paths[0], records[0], model)
        parts = [load_second_order(path, lens) for path in paths]
    else:
        raise CliplensError(f"{paths[0]} holds {kind!r}, not statistics; pass folders that `cliplens collect` or "
                            "`cliplens second-order` wrote")
    merged = None
    for part in in_source_order(parts):
        merged = part if merged is None else merged.merge(part)
    return merged


def in_source_order(parts: Sequence[Stats]) -> list[Stats]:
    """Parts that each cover positions of one and the same source, sorted by position; other parts as given."""
    ranges = [data_ranges(part.metadata) for part in parts]
    if all(ranges) and len({r["source"] for found in ranges for r in found}) == 1:
        return [part for _, part in sorted(zip(ranges, parts), key=lambda pair: pair[0][0]["start"])]
    return list(parts)


def output_name(stats: Stats) -> str:
    """The folder name the command that makes such statistics gives them: `stats`, or `second_order_L<l>`."""
    return f"second_order_L{stats.layer}" if isinstance(stats, SecondOrderStats) else "stats"


def _model_of(path: str | Path, record: dict[str, Any], model: Callable[[], Any] | None) -> Any:
    """The Lens second-order statistics were made with; a one-line error naming that model otherwise."""
    lens = model() if model is not None else None
    if lens is None or lens.fingerprint != record.get(MODEL_KEY):
        raise CliplensError(f"{path} holds second-order statistics of {record.get('model')!r} "
                            f"(pretrained {record.get('pretrained')!r}); merging them needs that model: pass it with "
                            "--model and --pretrained")
    return lens

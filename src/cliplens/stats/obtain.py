"""Statistics a command works from: read from an artifact (checked against the lens) or collected over data, and the
record of where they came from that its metadata.json keeps.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import CliplensError
from ..io.artifacts import is_analysis
from ..io.compat import DATA_KEY
from .collect import PAIRS, PIECES, PieceStats, load_stats
from .pairs import PairStats

if TYPE_CHECKING:
    from ..lens import Lens


def obtain_piece_stats(
    lens: Lens, stats_path: str | os.PathLike | None, data: Any, *, convention: str | None, normalize: bool | None,
    granularity: str | None = "head", batch_size: int = 32, num_workers: int = 0, spatial: bool = False,
    progress: bool = False,
) -> PieceStats:
    """Statistics read from `stats_path` (checked against the lens and any setting given) or collected over `data`.

    A setting left at None accepts what the artifact holds; collection then uses head granularity, the separate
    convention and unnormalised pieces. `spatial` asks for per-token means too (the CLS ablation's).
    """
    if stats_path is None and is_analysis(data):
        stats_path = data
    if stats_path is not None:
        given = dict(granularity=granularity, convention=convention, normalize=normalize)
        expect = {key: value for key, value in given.items() if value is not None}
        stats = load_stats(stats_path, lens, part=PIECES if is_analysis(stats_path) else None, **expect)
        if not isinstance(stats, PieceStats):
            raise CliplensError(f"{stats_path} holds ResNet pair statistics; collect with --granularity head")
        if spatial and stats.token_mean is None:
            raise CliplensError(f"{stats_path} has no per-token means, which this needs; collect the statistics with "
                                "`cliplens collect --spatial`")
        return stats
    return lens.collect(data, granularity=granularity or "head", spatial=spatial, convention=convention or "separate",
                        normalize=bool(normalize), batch_size=batch_size, num_workers=num_workers, progress=progress)


def read_pair_stats(stats_path: str | os.PathLike, lens: Lens) -> PairStats:
    """Pair statistics from `cliplens collect --granularity pair`, refused if made for another model."""
    stats = load_stats(stats_path, lens, part=PAIRS if is_analysis(stats_path) else None)
    if not isinstance(stats, PairStats):
        raise CliplensError(f"{stats_path} holds piece statistics; collect with --granularity pair")
    return stats


def obtain_pair_stats(
    lens: Lens, stats_path: str | os.PathLike | None, fit_path: Any, *, top_k: int = 50, batch_size: int = 32,
    num_workers: int = 0, save_to: str | os.PathLike | None = None, progress: bool = False,
) -> PairStats:
    """The pair statistics: read from `stats_path`, or collected over `fit_path` and saved to `save_to` at once (a
    failure in a later step then does not lose the pass)."""
    if stats_path is None and is_analysis(fit_path):
        stats_path = fit_path
    if stats_path is not None:
        return read_pair_stats(stats_path, lens)
    stats = lens.collect(fit_path, granularity="pair", top_k=top_k, batch_size=batch_size, num_workers=num_workers,
                         progress=progress)
    if save_to is not None:
        stats.save(save_to)
    return stats


def statistics_record(stats: PieceStats, source: str | None) -> dict[str, Any]:
    """What metadata.json says about the statistics a command used."""
    data = {key: stats.metadata.get(key) for key in (DATA_KEY, "data_size", "skipped")}
    return {"source": source, "count": stats.count, **stats.settings.metadata(), **data}

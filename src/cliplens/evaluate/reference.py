"""The labelled evaluation data and the reference set whose statistics supply the means (and fits) of an ablation or a
reconstruction (docs/methods/mean-ablation.md, docs/methods/reconstruction.md).

The reference is, in order of preference: a statistics artifact, a separate fit set collected here, by default (shapes
data only) an independent draw of the same shapes split (seed + 1), or, with `mean_source="eval"`, the evaluation
data itself (the references' in-sample protocol).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..data.analyzed import AnalyzedData
from ..data.loader import as_source, fingerprint
from ..errors import CliplensError
from ..stats.collect import PieceStats
from ..stats.obtain import obtain_piece_stats
from .zeroshot import source_prompts

if TYPE_CHECKING:
    from ..lens import Lens


def evaluation_source(data_path: Any, label: str | None) -> Any:
    """The labelled evaluation data; `label` re-labels a shapes split by another attribute."""
    source = as_source(data_path)
    if label is None:
        return source
    from ..shapes import ShapesDataset

    data = source.evaluated if isinstance(source, AnalyzedData) else source
    if not isinstance(data, ShapesDataset):
        raise CliplensError("--label applies to shapes:<split> data; an image folder is labelled by its class folders")
    relabelled = ShapesDataset(data.n, seed=data.seed, split=data.split, label=label, image_size=data.image_size)
    return source.over(relabelled) if isinstance(source, AnalyzedData) else relabelled


def default_reference(source: Any) -> tuple[Any, str]:
    """A reference set independent of the evaluation data: the same shapes split drawn with the next seed."""
    from ..shapes import ShapesDataset

    if not isinstance(source, ShapesDataset):
        raise CliplensError("say where the means come from: --stats (from `cliplens collect`), --fit-path (reference "
                            "images), or --mean-source eval (in-sample means on the evaluation data)")
    reference = ShapesDataset(source.n, seed=source.seed + 1, split=source.split, label=source.label,
                              image_size=source.image_size)
    return reference, f"shapes:{source.split}:{source.n}:{source.seed + 1}"


def reference_statistics(
    lens: Lens, source: Any, data_path: Any, *, stats_path: str | os.PathLike | None = None, fit_path: Any = None,
    mean_source: str = "reference", convention: str | None = None, normalize: bool | None = None,
    granularity: str | None = "head", spatial: bool = False, batch_size: int = 32, num_workers: int = 0,
    progress: bool = False,
) -> tuple[PieceStats, str]:
    """The statistics that supply means (and fits) for evaluating `source` (read from `data_path`), and a description
    of where they came from."""
    if mean_source == "eval":
        if stats_path or fit_path:
            raise CliplensError("--mean-source eval takes the means from --data-path; drop --stats and --fit-path")
        data, where = source, f"{data_path} (in-sample)"
    elif stats_path and fit_path:
        raise CliplensError("pass either --stats or --fit-path, not both")
    elif stats_path or fit_path:
        data, where = fit_path, stats_path or fit_path
    elif isinstance(source, AnalyzedData):  # the statistics its fit pass collected
        data, where, stats_path = None, source.path, source.path
    else:
        data, where = default_reference(source)
    stats = obtain_piece_stats(lens, stats_path, data, convention=convention, normalize=normalize,
                               granularity=granularity, batch_size=batch_size, num_workers=num_workers,
                               spatial=spatial, progress=progress)
    return stats, where


def evaluation_record(source: Any, images: int, templates: str | None) -> dict[str, Any]:
    """What metadata.json says about the evaluation data and its zero-shot classes."""
    phrases, default = source_prompts(source)
    return {"fingerprint": fingerprint(source), "images": images, "classes": phrases,
            "templates": templates if templates not in (None, "auto") else
            default if isinstance(default, str) else list(default),
            "label": getattr(source, "label", None)}

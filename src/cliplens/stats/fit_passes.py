"""The fit passes of an analysis (docs/methods/analysis.md#passes): every statistic asked for, from at most two passes
over the fit data, each batch decomposed by one forward pass.

Pass 1 feeds every reducer from the same forward: piece statistics (heads, with per-token means on ViTs), ResNet pair
statistics, and the moments of each chosen MLP layer's second-order effects. Pass 2 runs only when a second-order
layer or head images are asked for: the second-order ranking (centred norms, top images, thresholds) needs the mean of
pass 1, and the head images the principal directions of pass 1's piece statistics (a reader the caller builds from
them, apps/principal_images.py). Each statistic is
the one its own command collects (`collect`, `collect --granularity pair`, `second-order`) with the same settings,
so a command reading it gives the numbers it would have computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import torch

from ..data.loader import Batch, LoadReport, as_source
from ..decompose.finite import require_finite
from ..decompose.second_order import SecondOrderLens
from ..errors import CliplensError
from ..settings import Settings
from .accumulate import DenseReducer, HeadReducer, PairReducer
from .checkpoint import Passes, Resumable
from .collect import PieceStats, described
from .pairs import PairStats
from .second_order import SecondOrderStats, fit_metadata

if TYPE_CHECKING:
    from ..lens import Lens

PAIR_TOP_K, NEURON_TOP_K = 50, 100  # what `collect --granularity pair` and `second-order` keep by default


class Later(Resumable, Protocol):
    """A reader of pass 2 built from pass 1's piece statistics (head images), checkpointed."""

    def update(self, lens: Lens, images: torch.Tensor, indices: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class FitRequest:
    """Which statistics to collect: piece statistics (per-token on ViTs), ResNet pairs, second-order layers, and
    whether a reader of pass 2 is built from the piece statistics (head images)."""

    pieces: bool = True
    pairs: bool = False
    mlp_layers: Sequence[int] = ()
    head_images: bool = False

    def piece_settings(self, lens: Lens) -> Settings:
        """Head pieces in the separate convention, unnormalised; per token on ViTs (the CLS ablation's means)."""
        return Settings("head", spatial=lens.kind == "vit")

    def passes(self) -> int:
        return 2 if self.mlp_layers or self.head_images else 1 if self.pieces or self.pairs else 0


@dataclass
class FitStatistics:
    pieces: PieceStats | None = None
    pairs: PairStats | None = None
    second_order: dict[int, SecondOrderStats] = field(default_factory=dict)
    passes: int = 0
    report: LoadReport | None = None
    ranked: LoadReport | None = None  # pass 2's
    later: Later | None = None  # the reader `later` built, as pass 2 left it


def one_pass(lens: Lens, data: Any, read: Callable[[Batch], None], *, description: str, batch_size: int,
             num_workers: int, progress: bool, labelled: bool = False) -> LoadReport:
    """Stream `data` once and hand each batch to `read`, inside which every decomposition of the batch shares one
    forward (decompose/shared.py); not checkpointed."""
    return Passes().run(lens, data, "pass", {}, read, description=description, batch_size=batch_size,
                        num_workers=num_workers, progress=progress, labelled=labelled)


def fit_statistics(lens: Lens, data: Any, request: FitRequest, *, batch_size: int = 32, num_workers: int = 0,
                   progress: bool = False, later: Callable[[PieceStats], Later] | None = None,
                   passes: Passes | None = None) -> FitStatistics:
    """Every statistic of `request` over `data`, in `request.passes()` passes; with `request.head_images`, `later`
    builds from pass 1's piece statistics a reader that pass 2 feeds too. `passes` checkpoints them (stats/checkpoint.py
    `Passes`: "fit-1" and "fit-2")."""
    if request.head_images != (later is not None and request.pieces):
        raise CliplensError("head images are read in pass 2 by a reader built from the piece statistics: ask for "
                            "pieces and pass `later` together with head_images")
    if not request.passes():
        return FitStatistics()
    passes = passes or Passes()
    source = as_source(data)
    settings = request.piece_settings(lens)
    pieces = None
    if request.pieces:
        pieces = (HeadReducer if lens.kind == "vit" else DenseReducer)(lens.decomposer, settings)
    pairs = PairReducer(lens.decomposer, Settings("pair"), top_k=PAIR_TOP_K) if request.pairs else None
    neurons = {layer: SecondOrderLens(lens.decomposer, layer) for layer in request.mlp_layers}
    orders = {layer: SecondOrderStats(second.basis, scale=1.0, normalize=False, top_k=NEURON_TOP_K)
              for layer, second in neurons.items()}
    ranked_readers = {f"L{layer}": stats for layer, stats in orders.items()}

    def first(batch: Batch) -> None:
        for reducer in (pieces, pairs):
            if reducer is not None:
                reducer.update(batch.images, batch.indices)
        for layer, second in neurons.items():
            effects = second(batch.images)
            require_finite(batch.images, effects.coefficients, effects.kappa)
            orders[layer].update(effects)

    options = dict(batch_size=batch_size, num_workers=num_workers, progress=progress)
    readers = {name: reader for name, reader in (("pieces", pieces), ("pairs", pairs)) if reader is not None}
    report = passes.run(lens, source, "fit-1", {**readers, **ranked_readers}, first,
                        description=f"analyse {lens.name} (fit, pass 1)", **options)
    result = FitStatistics(passes=1, report=report)
    if pieces is not None:
        labels, moments, token_mean = pieces.finish()
        result.pieces = described(PieceStats(labels, moments, {}, token_mean), lens, settings, source, report)
    images = later(result.pieces) if request.head_images else None

    def ranking(batch: Batch) -> None:
        for layer, second in neurons.items():
            orders[layer].rank(second(batch.images), batch.indices)
        if images is not None:
            images.update(lens, batch.images, batch.indices)

    if request.passes() == 2:
        for stats in orders.values():
            stats.start_ranking()
        readers = {**ranked_readers, **({"head-images": images} if images is not None else {})}
        ranked = passes.run(lens, source, "fit-2", readers, ranking, description=f"analyse {lens.name} (fit, pass 2)",
                            **options)
        for stats in orders.values():
            stats.metadata, stats.report = fit_metadata(lens, stats, source, ranked), ranked
        result.second_order, result.passes, result.ranked, result.later = orders, 2, ranked, images
    if pairs is not None:
        result.pairs = described(pairs.stats, lens, Settings("pair"), source, report)
    return result

"""`cliplens ablate`: zero-shot accuracy with chosen pieces replaced by their mean
(docs/methods/mean-ablation.md#definition).

Each --components value is one variant (comma-separated patterns, ablated together); --preset adds the reference's
variants: `mlps` (every MLP plus embed), `cls` (TextSpan's table: the CLS→CLS attention cells, the MLPs, and both;
its means need per-token statistics, collected here when needed) or `layer-curve` (attention of layers 0..k, for
every k). One streaming pass over --data-path scores them all. The means come from a separate reference set: --stats,
or --fit-path collected here, or by default (shapes data only) an independent draw of the same shapes split
(seed + 1); --mean-source eval uses the evaluation data itself, the references' in-sample protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..decompose.vit import GRANULARITIES as VIT_GRANULARITIES
from ..evaluate.ablation import write_scores
from ..evaluate.groups import PATTERN_HELP
from ..io.metadata import write_metadata
from ..workflows.ablation_study import PRESETS, ablation_study, check_request
from .options import (
    Options, data_options, echo_accuracies, evaluation_options, load_lens, model_options, output_option,
    statistics_options,
)


@click.command("ablate")
@model_options
@data_options
@statistics_options
@evaluation_options
@click.option("--components", multiple=True,
              help=f"Pieces to mean-ablate together, comma-separated; repeat for more variants. "
                   f"Patterns: {PATTERN_HELP}.")
@click.option("--preset", "presets", type=click.Choice(list(PRESETS)), multiple=True,
              help="Reference variants: mlps; cls (CLS cells, MLPs, both: TextSpan's table); or layer-curve "
                   "(attention of layers 0..k mean-ablated, every k).")
@click.option("--granularity", type=click.Choice(VIT_GRANULARITIES), default=None,
              help="Pieces when collecting statistics here [default: head; with --stats, the artifact's].")
@output_option("cliplens-out/ablate")
def command(model: Options, output_dir: Path, **options: Any) -> None:
    """Zero-shot accuracy with chosen pieces mean-ablated, scored in one pass over the data."""
    check_request(options["components"], options["presets"])
    lens = load_lens(model)
    study = ablation_study(lens, progress=True, **options)
    scores = study.scores
    path = write_scores(output_dir / "ablation.csv", scores, study.variants)
    write_metadata(output_dir, {"command": "ablate", **study.metadata})
    click.echo(f"{lens.name}: zero-shot accuracy on {scores.count} images, means from {study.where} ({path}):")
    echo_accuracies([("full model", scores.full_accuracy)] + [(name, scores.accuracy(name)) for name in scores.names]
                    + [("chance", scores.chance)])

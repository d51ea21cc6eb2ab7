"""`cliplens pairs`: ResNet neuron×head pairs end to end (docs/methods/resnet-pairs.md).

Pair statistics (collected on --fit-path, or read with --stats), a summary of every pair, the words of each kept
pair's and neuron's principal direction (OMP over a text pool), and the zero-shot accuracy on --data-path with all but
the top --keep % of pairs (or neurons) mean-ablated and with every pair rebuilt from its principal direction and from
its words. A neuron's direction needs the covariance of its H coefficients, which the pair statistics do not hold, so
it is accumulated during the evaluation pass: neuron words describe --data-path. Writes pair_stats (when collected
here), pairs.csv, pair_words.csv, neuron_words.csv, ablation.csv and metadata.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..evaluate.pair_ablation import check_keep
from ..explain.tables import write_descriptions
from ..io.compat import DATA_KEY
from ..io.metadata import write_metadata
from ..io.tables import write_table
from ..workflows.pair_study import PAIR_ATOMS, pair_study
from .options import (
    Options, data_options, echo_pair_table, load_lens, model_options, omp_options, output_option, pair_fit_options,
    texts_per_unit_option,
)


@click.command("pairs")
@model_options
@data_options
@pair_fit_options
@omp_options(PAIR_ATOMS)
@texts_per_unit_option
@click.option("--keep", type=float, default=10.0, show_default=True,
              help="Percentage of pairs (and of neurons) kept by score; the rest are mean-ablated.")
@output_option("cliplens-out/pairs")
def command(model: Options, output_dir: Path, keep: float, **options: Any) -> None:
    """Statistics, words and ablation accuracy of ResNet neuron×head pairs."""
    keep = check_keep(keep)
    lens = load_lens(model)
    study = pair_study(lens, keep=keep, save_stats=output_dir / "pair_stats", progress=True, **options)
    write_table(output_dir / "pairs.csv", "pairs", study.summary)
    for name, rows in (("pair_words", study.pair_words), ("neuron_words", study.neuron_words)):
        if rows is not None:
            write_descriptions(output_dir / f"{name}.csv", rows)
    stats = study.stats
    write_metadata(output_dir, {"command": "pairs", "model": lens.describe(), "keep_percent": keep,
                                "statistics": {"count": stats.count, "top_k": stats.top_k,
                                               DATA_KEY: stats.metadata.get(DATA_KEY)}})
    click.echo(f"{stats.heads * stats.neurons} pairs from {stats.count} images; kept {int(study.pair_mask.sum())} "
               f"pairs and {int(study.neuron_mask.sum())} neurons (top {keep:g}%); results in {output_dir}")
    if study.ablation is None:
        click.echo("  the evaluation data has no class names, so no accuracy was measured")
        return
    write_table(output_dir / "ablation.csv", "ablation", study.ablation)
    echo_pair_table(study.ablation)

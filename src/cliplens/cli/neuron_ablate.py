"""`cliplens neuron-ablate`: the accuracy table of ResNet pair and neuron mean-ablation
(docs/methods/resnet-pairs.md#ablation).

One streaming pass scores every variant at once: the full model, the top x % of pairs or of neurons kept (the rest
replaced by their means) for each --keep, every pair rebuilt from its principal direction (exact: a check), and every
pair rebuilt from its OMP words. Writes ablation.csv, metadata.json (the model and the variants' settings), and
pair_stats when the statistics are collected here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..evaluate.pair_ablation import DEFAULT_KEEPS, check_keep
from ..io.metadata import write_metadata
from ..io.tables import write_table
from ..workflows.pair_study import LEVELS, PAIR_ATOMS, pair_ablation_study
from .options import (
    Options, data_options, echo_pair_table, load_lens, model_options, omp_options, output_option, pair_fit_options,
)


@click.command("neuron-ablate")
@model_options
@data_options
@pair_fit_options
@omp_options(PAIR_ATOMS)
@click.option("--keep", "keeps", type=float, multiple=True, default=DEFAULT_KEEPS, show_default=True,
              help="Percentages of units kept by score (repeat the option for several).")
@click.option("--level", type=click.Choice(LEVELS), default="both", show_default=True,
              help="Mask whole neurons (all their heads), single pairs, or report both.")
@output_option("cliplens-out/neuron-ablate")
def command(model: Options, output_dir: Path, keeps: tuple[float, ...], **options: Any) -> None:
    """Zero-shot accuracy of a ResNet CLIP with most neuron×head pairs mean-ablated or rebuilt from text."""
    keeps = [check_keep(keep) for keep in keeps]
    lens = load_lens(model)
    rows = pair_ablation_study(lens, keeps=keeps, save_stats=output_dir / "pair_stats", progress=True, **options)
    path = write_table(output_dir / "ablation.csv", "ablation", rows)
    write_metadata(output_dir, {"command": "neuron-ablate", "model": lens.describe(), "data": str(options["data_path"]),
                                "keeps": keeps, "level": options["level"]})
    click.echo(f"accuracy of {lens.name} with pairs mean-ablated or reconstructed ({path}):")
    echo_pair_table(rows)

"""`cliplens second-order`: per-neuron second-order statistics of one ViT MLP layer, and optionally its ablations.

Writes OUTPUT_DIR/second_order_L{l} (the statistics artifact: mean effects, principal directions, thresholds, top
images), OUTPUT_DIR/neurons_L{l}.csv (one summary row per neuron), OUTPUT_DIR/neuron_words_L{l}.csv (each neuron's
principal direction written as --omp-atoms signed texts, docs/methods/omp.md), OUTPUT_DIR/top_images_L{l}/L{l}N{n}.png
and .csv (the top images of the --grids neurons with the largest effects) and, with --eval-data-path, the five zero-shot
accuracies of docs/methods/second-order.md#statistics to OUTPUT_DIR/ablation_L{l}.csv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.loader import recorded_data
from ..explain.tables import write_descriptions
from ..io.metadata import write_metadata
from ..io.tables import write_table
from ..workflows.second_order_study import (NEURON_ATOMS, require_whole_data, second_order_study, study_record,
                                            write_top_images)
from ..settings import CONVENTIONS
from .options import (Options, before_body, data_options, load_lens, long_run_options, model_options, omp_options,
                      output_option, templates_option, texts_per_unit_option)


@click.command("second-order")
@model_options
@data_options
@output_option("cliplens-out/second-order")
@click.option("--mlp-layer", type=int, required=True, help="MLP layer whose neurons to explain (0-based).")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="separate", show_default=True,
              help="LayerNorm/bias bookkeeping; 'reference' (with --scale 100 --normalize) matches the paper's code.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every effect (the reference uses 100).")
@click.option("--normalize", is_flag=True, help="Effects of the unit embedding (the reference's convention).")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images kept per neuron for its threshold and principal direction (the reference uses 100).")
@click.option("--eval-data-path", default=None,
              help="Labelled data for the ablation accuracies (class folders or shapes:<split>[:<n>]); "
                   "omit to skip the ablations.")
@templates_option
@omp_options(NEURON_ATOMS)
@texts_per_unit_option
@click.option("--grids", type=click.IntRange(min=0), default=8, show_default=True,
              help="Write the top images of this many neurons (largest mean top-k effect) as PNG grids and CSV.")
@before_body(lambda options: require_whole_data(options["shard"]))
@long_run_options("Refused: the second pass needs the first-pass mean of all the data, which no slice has; split a "
                  "run with torchrun instead (docs/commands/second-order.md).")
def command(model: Options, output_dir: Path, grids: int, long_run: Options, **options: Any) -> None:
    """Second-order statistics of every neuron of --mlp-layer over --data-path (two streaming passes).

    Under torchrun (torchrun --nproc-per-node K -m cliplens second-order ...) every process reads its slice of the
    data in both passes and rank 0 writes everything."""
    lens = load_lens(model)
    layer = options["mlp_layer"]
    artifact = output_dir / f"second_order_L{layer}"
    study = second_order_study(lens, save_stats=artifact, progress=True, **long_run, **options)
    if study is None:  # a torchrun rank other than 0: rank 0 writes
        return
    table = write_table(output_dir / f"neurons_L{layer}.csv", "neurons", study.neurons)
    report = study.stats.report  # None when read from an analysis
    read = report.summary() if report is not None else f"read from {options['data_path']}"
    click.echo(f"{lens.name} layer {layer}: {read}\nwrote {artifact} and {table}")
    if study.words is not None:
        click.echo(f"wrote {write_descriptions(output_dir / f'neuron_words_L{layer}.csv', study.words)}")
    if grids:
        folder = write_top_images(study.stats, recorded_data(options["data_path"]), output_dir / f"top_images_L{layer}",
                                  grids)
        click.echo(f"wrote the top images of {min(grids, study.stats.basis.num_neurons)} neurons to {folder}")
    ablation = study.ablation
    write_metadata(output_dir, {**study_record(study, lens), "statistics": str(artifact)})
    if ablation is None:
        return
    path = write_table(output_dir / f"ablation_L{layer}.csv", "ablation", ablation.rows())
    for row in ablation.rows():
        click.echo(f"  {row['variant']:<24} {100 * row['accuracy']:6.2f}%")
    sample = "in-sample" if ablation.metadata["in_sample"] else "out-of-sample"
    click.echo(f"  {ablation.count} images ({sample}); significant neuron-image pairs: "
               f"{100 * ablation.significant_fraction:.2f}%\nwrote {path}")

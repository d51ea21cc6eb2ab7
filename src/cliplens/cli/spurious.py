"""`cliplens spurious`: remove a spurious cue by mean-ablating the pieces that carry a concept's text directions
(docs/methods/spurious.md).

Writes OUTPUT_DIR/ranking.csv (every unit by its variance inside the concept's span), sweep.csv (every edit on the
validation and the test set: accuracy per group, worst group, mean over groups, image-weighted average), summary.csv
(the test set at the k chosen on validation: full model, selected units, k random units as mean and spread over the
draws, and for --kind pcs the whole heads holding the selected components), spurious.png and metadata.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..evaluate.piece_edits import KINDS
from ..evaluate.spurious import DEFAULT_KS, FIGURE, RANDOM_DRAWS, SUMMARY, write_spurious
from ..workflows.spurious_study import check_concept, group_source, spurious_study
from .options import (Options, batch_options, before_body, load_lens, model_options, needs, output_option,
                      stats_option)

GROUP_DATA = "shapes:spurious-test[:<n>[:<seed>]] or waterbirds:<folder>[:<split>]"


def _check_before_loading(options: Options) -> None:
    """Data without groups and a malformed concept are refused before the model is loaded."""
    for key in ("data_path", "val_path"):
        group_source(options[key])
    check_concept(options["concept"].split(","), options["concept_templates"])


@click.command("spurious")
@model_options
@click.option("--data-path", default="shapes:spurious-test:400:12", show_default=True,
              help=f"Test images with groups: {GROUP_DATA} (not shapes:test:512, the other commands' default, "
                   "whose scenes have no spurious attribute).")
@click.option("--val-path", default="shapes:spurious-test:400:11", show_default=True,
              help="Validation images with groups, where k is chosen (waterbirds:<folder>:val for Waterbirds).")
@click.option("--fit-path", default="shapes:spurious-train:400:10", show_default=True,
              help="Images whose piece means and covariances are used (waterbirds:<folder>:train); a training split of "
                   "its own, not None (the other commands' default: --data-path or a reseeded split), so that no "
                   "test or validation image is fitted.")
@stats_option("Read the statistics (head, or ResNet pair for --kind pairs) instead of collecting them.")
@click.option("--concept", required=True,
              help="Comma-separated texts of the spurious concept, e.g. 'water,lake,ocean,forest,bamboo'.")
@click.option("--concept-templates", default="none", show_default=True,
              help="Templates for the concept texts: none, openai, simple, photo or shapes.")
@click.option("--kind", type=click.Choice(KINDS), default=None,
              help="Units to rank: heads, pairs (ResNet), or pcs (principal components of every head) "
                   "[default: pairs for a ResNet, heads for a ViT].")
@click.option("--k", "ks", type=click.IntRange(min=1), multiple=True, default=DEFAULT_KS, show_default=True,
              help="Numbers of units to ablate (repeat the option).")
@click.option("--draws", type=click.IntRange(min=1), default=RANDOM_DRAWS, show_default=True,
              help="Random k-sets of the same kind per k (the baseline).")
@click.option("--draw-seed", type=int, default=0, show_default=True, help="Seed of the random draws.")
@batch_options
@output_option("cliplens-out/spurious")
@needs("explain", "matplotlib")
@before_body(_check_before_loading)
def command(model: Options, output_dir: Path, concept: str, **options: Any) -> None:
    """Worst-group accuracy with the pieces along a concept's texts mean-ablated, against k random pieces.

    Every row gives the accuracy of each group (class × spurious attribute), the worst of them, their mean and the
    image-weighted average; k is chosen on --val-path and reported on --data-path. Writes ranking.csv (units by
    variance inside the concept's span), sweep.csv (every edit and k on both sets), summary.csv (the test set at k:
    full model, selected units, random units as mean and spread over the draws, and for pcs the heads holding them),
    spurious.png and metadata.json.
    """
    lens = load_lens(model)
    result = spurious_study(lens, options.pop("data_path"), concept=concept.split(","), progress=True, **options)
    written = write_spurious(result, output_dir)
    click.echo(f"{lens.name}, {result.kind} along {', '.join(result.concept)}: k = {result.k} (chosen on validation)")
    click.echo(f"  {'test set':<22} {'worst group':>16} {'average':>16}")
    for row in result.summary:
        cells = [f"{100 * row[m]:6.1f}%" + (f" ± {100 * row[m + '_std']:4.1f}" if row[m + "_std"] != "" else " " * 7)
                 for m in ("worst_group", "average")]
        click.echo(f"  {row['edit']:<22} {cells[0]:>16} {cells[1]:>16}")
    click.echo(f"wrote {SUMMARY}, {FIGURE} and the full sweep to {written}")

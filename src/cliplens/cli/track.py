"""`cliplens track`: a concept's score in chosen pieces per group of the data, against the attribute's rate
(docs/methods/tracking.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.cars import STANFORD_CARS_PREFIX
from ..workflows.tracking import PLOT, SUMMARY, TABLE, track_concept, write_tracking
from .options import (Options, batch_options, load_lens, model_options, needs, needs_for_data, output_option,
                      stats_option)


@click.command("track")
@model_options
@click.option("--data-path", default="shapes:shift:1000", show_default=True,
              help="shapes:<split>[:<n>[:<seed>]] or stanford-cars:<root>[:<split>[:<colours.csv>]]; shapes:shift "
                   "(not shapes:test:512, the other commands' default) because only its scenes have a year.")
@batch_options
@click.option("--concept", required=True, help="The concept text the pieces' score is taken along, e.g. yellow.")
@click.option("--piece", "pieces", multiple=True,
              help="A piece to track: L<layer>H<head> (ViT) or H<head>N<neuron> (ResNet pair); repeat. Default "
                   "(ViT): the --select heads that vary most along the concept on the fit data.")
@click.option("--select", type=click.IntRange(min=1), default=2, show_default=True, help="Heads to select.")
@click.option("--fit-path", default=None,
              help="Data the heads are selected on [default: the same shapes split drawn with seed + 1].")
@stats_option("Head statistics (`cliplens collect`) to select on instead of --fit-path.")
@click.option("--group", default="year", show_default=True,
              help="Metadata to group by: year, colour, shape, ... (shapes); year, colour, convertible (cars).")
@click.option("--attribute", default=None, help="NAME=VALUE whose rate per group is plotted and correlated, e.g. "
                                                "colour=yellow.")
@click.option("--templates", default="photo", show_default=True,
              help="Templates the concept is embedded with (not auto, the classifying commands' default: the "
                   "concept is one word, not a set of class names).")
@click.option("--random-sets", type=click.IntRange(min=0), default=10, show_default=True,
              help="Random head sets of the same size, the baseline correlations (ViT).")
@output_option("cliplens-out/track")
@needs("explain", "matplotlib")
@needs_for_data(STANFORD_CARS_PREFIX, "cars", "scipy")  # the devkit's MATLAB v5 files
def command(model: Options, **options: Any) -> None:
    """Score every image by <sum of the pieces, concept> / |y|, streamed per group.

    groups.csv: per group the images, the score's mean and std, the whole embedding's (the cosine of y with the
    concept) and the attribute's rate. correlation.csv: over groups, Pearson r of mean score and rate for the tracked
    pieces, the whole embedding and random head sets. tracking.png: score +- std per group, rate on the right axis.
    """
    lens = load_lens(model)
    result = track_concept(
        lens, options["data_path"], concept=options["concept"], pieces=options["pieces"], select=options["select"],
        group=options["group"], attribute=options["attribute"], fit_path=options["fit_path"],
        stats_path=options["stats_path"], templates=options["templates"], random_sets=options["random_sets"],
        batch_size=options["batch_size"], num_workers=options["num_workers"], progress=True,
    )
    output_dir: Path = write_tracking(result, options["output_dir"])
    click.echo(f"tracking '{options['concept']}' in {' + '.join(result.pieces)}")
    for row in result.group_rows:
        rate = "" if row["attribute_rate"] == "" else f"  rate {100 * row['attribute_rate']:5.1f}%"
        click.echo(f"  {row['group']!s:<12} n={row['images']:<6} score {row['score_mean']:+.4f} "
                   f"+- {row['score_std']:.4f}{rate}")
    for row in result.summary_rows[:2]:
        click.echo(f"  r({row['scores']}, rate) = {row['correlation_with_rate']:.3f}")
    if len(result.summary_rows) > 2:
        randoms = [row["correlation_with_rate"] for row in result.summary_rows[2:]]
        click.echo(f"  r(random sets, rate): mean {sum(randoms) / len(randoms):.3f}, max {max(randoms):.3f}")
    click.echo(f"wrote {TABLE}, {PLOT}{', ' + SUMMARY if result.summary_rows else ''} to {output_dir}")

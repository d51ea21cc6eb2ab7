"""`cliplens components`: the principal components of heads, named, queried and edited, with no dependence on their
signs (docs/methods/components.md).

Writes OUTPUT_DIR/poles.csv (one row per component of each chosen head: variance, % of the head's kept variance,
the texts of its dominant and opposite poles, its reconstruction text), queries.csv (per --query, the heads and the
components with the most variance along the query, and the fraction of their variance that is), edits.csv and
edits.png (labelled data: accuracy with each component kept alone in its head, removed, or amplified, per class and
on average, with the change from the full model), and metadata.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..evaluate.groups import PATTERN_HELP, split_patterns
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES
from ..workflows.component_study import component_study, write_components
from .options import (Options, data_options, fit_path_option, load_lens, model_options, needs, output_option,
                      pool_options, stats_option, templates_option)


@click.command("components")
@model_options
@data_options
@stats_option("Head statistics from `cliplens collect`; collected here if omitted.")
@fit_path_option
@click.option("--heads", default=None,
              help=f"Heads to name and edit [default: the last layer (ViT), every pool head (ResNet)]: {PATTERN_HELP}.")
@click.option("--query", "queries", multiple=True,
              help="Text whose direction ranks every head and component by variance along it (repeat).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Heads and components listed per query.")
@click.option("--edit-top", type=click.IntRange(min=0), default=3, show_default=True,
              help="Largest components of each chosen head to keep / remove / amplify (0: no edits).")
@click.option("--amplify", type=float, default=2.0, show_default=True,
              help="Factor on a component's deviation in the amplify edit.")
@click.option("--texts-per-pole", type=click.IntRange(min=1), default=5, show_default=True,
              help="Texts written for each pole (and each side) of a component.")
@click.option("--label", default=None,
              help="shapes data: the attribute the edits classify (shape, colour, ...) [default: shape].")
@templates_option
@pool_options(HEAD_POOL, HEAD_POOL_TEMPLATES)
@output_option("cliplens-out/components")
@needs("explain", "matplotlib")
def command(model: Options, output_dir: Path, heads: str | None, **options: Any) -> None:
    """Name every principal component of chosen heads by its two text poles, rank heads and components for text
    queries, and measure keeping, removing or amplifying single components.

    Writes poles.csv (per component: variance, its dominant and opposite poles' texts, its reconstruction text),
    queries.csv (per query, the heads and components with the most variance along it), edits.csv (labelled data:
    accuracy per class and on average for each edit, and its change from the full model), edits.png and
    metadata.json. No result depends on the signs the eigen-solver gives the components.
    """
    lens = load_lens(model)
    study = component_study(lens, heads=split_patterns(heads) if heads else None, progress=True, **options)
    written = write_components(study, output_dir)
    click.echo(f"{lens.name}: {len(study.poles)} components of {', '.join(study.metadata['heads'])}")
    for row in study.poles[:5]:
        click.echo(f"  {row['piece']}.pc{row['component']} ({row['variance_percent']:.1f}%): {row['dominant_texts']}"
                   f"  <->  {row['opposite_texts']}")
    for row in study.queries:
        if row["rank"] == 0:
            click.echo(f"  {row['query']!r}: top {row['level']} {row['piece']} ({100 * row['query_fraction']:.1f}% "
                       "of its variance)")
    if study.edits:
        worst = min(study.edits[1:], key=lambda row: row["delta"])
        click.echo(f"  accuracy {100 * study.edits[0]['average']:.1f}%; largest drop: {worst['edit']} "
                   f"{worst['piece']}.pc{worst['component']} ({100 * worst['delta']:+.1f} points)")
    click.echo(f"wrote {written}")

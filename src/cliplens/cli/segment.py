"""`cliplens segment`: zero-shot segmentation metrics per lens, with the baselines (docs/methods/segmentation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.segmentation import LENSES
from ..workflows.segmentation import GRID, METRICS, segmentation_study, write_segmentation
from .options import Options, load_lens, model_options, output_option


@click.command("segment")
@model_options
@click.option("--data-path", default="shapes:segmentation:256", show_default=True,
              help="Images with masks: shapes:segmentation:<n>[:<seed>] or masks:<dir> (images/, masks/, "
                   "classes.txt).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--lens", "lenses", multiple=True, type=click.Choice(LENSES), required=True,
              help="heads (ViT), pairs (ResNet), or the baselines attention, rollout (ViT), centre; repeat for several.")
@click.option("--last-layers", type=click.IntRange(min=1), default=4, show_default=True,
              help="heads: read the heads of this many last layers.")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Foreground cut on the [0, 1] map [default: each map's mean].")
@click.option("--examples", type=click.IntRange(min=0), default=6, show_default=True,
              help="Images drawn in the overlay grid (0: no grid).")
@output_option("cliplens-out/segment")
def command(model: Options, **options: Any) -> None:
    """Segment images with masks from each lens's heatmaps; metrics.csv has one row per lens."""
    lens = load_lens(model)
    result = segmentation_study(
        lens, options["data_path"], options["lenses"], last_layers=options["last_layers"],
        threshold=options["threshold"], examples=options["examples"], batch_size=options["batch_size"],
        num_workers=options["num_workers"], progress=True,
    )
    output_dir: Path = write_segmentation(result, options["output_dir"])
    click.echo(f"{lens.name}: {result.report.summary()}")
    click.echo(f"  {'lens':<10} {'pixel acc':>9} {'mIoU':>7} {'mAP':>7} {'class mIoU':>10}")
    for row in result.rows:
        click.echo(f"  {row['lens']:<10} {100 * row['pixel_accuracy']:8.2f}% {100 * row['miou']:6.2f}% "
                   f"{100 * row['map']:6.2f}% {100 * row['class_miou']:9.2f}%")
    written = [METRICS] + ([GRID] if result.examples else [])
    click.echo(f"wrote {', '.join(written)} to {output_dir}")

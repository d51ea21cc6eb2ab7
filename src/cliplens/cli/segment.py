"""`cliplens segment`: zero-shot segmentation metrics per lens, with the baselines (docs/methods/segmentation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.segmentation import LENSES
from ..data.segmentation import IMAGENET_SEG_PREFIX
from ..evaluate.groups import PATTERN_HELP
from ..workflows.segmentation import GRID, MASKS, METRICS, segmentation_study, write_segmentation
from .options import Options, batch_options, load_lens, model_options, needs_for_data, output_option


@click.command("segment")
@model_options
@click.option("--data-path", default="shapes:segmentation:256", show_default=True,
              help="Images with masks (so not shapes:test:512, the other commands' default, whose scenes have none): "
                   "shapes:segmentation:<n>[:<seed>], masks:<dir> (images/, masks/, classes.txt), "
                   "imagenet-seg:<gtsegs_ijcv.mat> or pascal-context:<VOC2010 dir>.")
@batch_options
@click.option("--lens", "lenses", multiple=True, type=click.Choice(LENSES), required=True,
              help="heads, second-order (ViT), pairs (ResNet), or the baselines attention, rollout (ViT), gradcam, "
                   "maskclip (ResNet), centre; repeat for several.")
@click.option("--last-layers", type=click.IntRange(min=1), default=4, show_default=True,
              help="heads: read every head of this many last layers.")
@click.option("--heads", default=None, help=f"heads: read these heads instead (comma-separated: {PATTERN_HELP}).")
@click.option("--mlp-layer", "mlp_layers", type=int, multiple=True,
              help="second-order: an MLP layer whose neurons to read; repeat [default: the three before the last].")
@click.option("--top-neurons", type=click.IntRange(min=1), default=None,
              help="second-order: per image and class, only the neurons adding most to it [default: all].")
@click.option("--top-pairs", type=click.IntRange(min=1), default=None,
              help="pairs: per image and class, only the neuron x head pairs adding most to it [default: all].")
@click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Foreground cut on the [0, 1] map [default: each map's mean].")
@click.option("--examples", type=click.IntRange(min=0), default=6, show_default=True,
              help="Images drawn in the overlay grid (0: no grid).")
@click.option("--save-masks", is_flag=True, help="Also write masks.zip: each image's label map per lens as a PNG.")
@output_option("cliplens-out/segment")
@needs_for_data(IMAGENET_SEG_PREFIX, "segment", "h5py")  # MATLAB v7.3 is HDF5
def command(model: Options, **options: Any) -> None:
    """Segment images with masks from each lens's heatmaps; metrics.csv has one row per lens."""
    lens = load_lens(model)
    result = segmentation_study(
        lens, options["data_path"], options["lenses"], last_layers=options["last_layers"], heads=options["heads"],
        mlp_layers=options["mlp_layers"] or None, top_neurons=options["top_neurons"], top_pairs=options["top_pairs"],
        threshold=options["threshold"], examples=options["examples"], save_masks=options["save_masks"],
        batch_size=options["batch_size"], num_workers=options["num_workers"], progress=True,
    )
    output_dir: Path = write_segmentation(result, options["output_dir"])
    click.echo(f"{lens.name}: {result.report.summary()}")
    click.echo(f"  {'lens':<12} {'pixel acc':>9} {'mIoU':>7} {'mAP':>7} {'class mIoU':>10}")
    for row in result.rows:
        cells = [_percent(row[key], width) for key, width in (("pixel_accuracy", 9), ("miou", 7), ("map", 7),
                                                             ("class_miou", 10))]
        click.echo(f"  {row['lens']:<12} {' '.join(cells)}")
    written = [METRICS] + ([GRID] if result.examples else []) + ([MASKS] if result.masks else [])
    click.echo(f"wrote {', '.join(written)} to {output_dir}")


def _percent(value: Any, width: int) -> str:
    """A metric as a percentage, or a dash where the data defines none."""
    return f"{100 * value:{width - 1}.2f}%" if value != "" else f"{'-':>{width}}"

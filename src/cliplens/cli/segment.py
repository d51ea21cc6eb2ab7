"""`cliplens segment`: zero-shot segmentation metrics per lens, with the baselines (docs/methods/segmentation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.segmentation import IMAGENET_SEG_PREFIX
from ..workflows.segmentation import GRID, MASKS, METRICS, segmentation_study, write_segmentation
from .options import (
    Options, batch_options, load_lens, model_options, needs_for_data, output_option, segment_options,
)


@click.command("segment")
@model_options
@click.option("--data-path", default="shapes:segmentation:256", show_default=True,
              help="Images with masks (so not shapes:test:512, the other commands' default, whose scenes have none): "
                   "shapes:segmentation:<n>[:<seed>], masks:<dir> (images/, masks/, classes.txt), "
                   "imagenet-seg:<gtsegs_ijcv.mat> or pascal-context:<VOC2010 dir>; or a folder `cliplens analyze "
                   "--ask segment` wrote, whose stored counts give the same metrics with no image read.")
@batch_options
@segment_options(required=True)
@click.option("--mlp-layer", "mlp_layers", type=int, multiple=True,
              help="second-order: an MLP layer whose neurons to read; repeat [default: the three before the last].")
@click.option("--save-masks", is_flag=True, help="Also write masks.zip: each image's label map per lens as a PNG "
                                                "(not from an analysis, which keeps no masks).")
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

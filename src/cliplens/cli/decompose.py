"""`cliplens decompose`: pieces of a small image set as .npy files, with metadata."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..io.atomic import write_folder
from ..io.tables import write_table
from ..workflows.small_set import decompose_set
from ..settings import CONVENTIONS, GRANULARITIES
from .options import CONVENTION_HELP, Options, data_options, load_lens, model_options, output_option


@click.command("decompose")
@model_options
@data_options
@output_option("cliplens-out/decompose")
@click.option("--granularity", type=click.Choice(GRANULARITIES), default="head", show_default=True,
              help="Pieces: head, layer, neuron (ResNet) or pair (ResNet neuron x head coefficients).")
@click.option("--spatial", is_flag=True, help="Split head pieces over source tokens.")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="separate", show_default=True,
              help=CONVENTION_HELP)
@click.option("--normalize", is_flag=True, help="Pieces sum to the unit embedding (the references' convention).")
@click.option("--max-images", type=click.IntRange(min=1), default=64, show_default=True,
              help="Refuse more images: every piece of every image is kept (`cliplens collect` is for datasets).")
def command(model: Options, output_dir: Path, **options: object) -> None:
    """Decompose up to --max-images images and write components.npy, embedding.npy, images.csv and metadata.json."""
    lens = load_lens(model)
    decomposed = decompose_set(lens, progress=True, **options)
    name = f"{decomposed.name}.npy"
    write_folder(output_dir, {name: lambda file: np.save(file, decomposed.values.cpu().numpy()),
                              "embedding.npy": lambda file: np.save(file, decomposed.embedding.cpu().numpy()),
                              "images.csv": lambda file: write_table(file, "images", decomposed.images)},
                 decomposed.metadata)
    shape = tuple(decomposed.values.shape)
    click.echo(f"{decomposed.report.summary()}\nwrote {output_dir / name} {shape}, embedding.npy and images.csv "
               "(which image each row is)")

"""`cliplens decompose`: pieces of a small image set as .npy files, with metadata."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..io.metadata import write_metadata
from ..workflows.small_set import decompose_set
from .options import Options, data_options, load_lens, model_options, output_option


@click.command("decompose")
@model_options
@data_options
@output_option("cliplens-out/decompose")
@click.option("--granularity", type=click.Choice(["layer", "head", "neuron", "pair"]), default="head",
              show_default=True)
@click.option("--spatial", is_flag=True, help="Split head pieces over source tokens.")
@click.option("--convention", type=click.Choice(["separate", "reference"]), default="separate", show_default=True)
@click.option("--normalize", is_flag=True, help="Pieces sum to the unit embedding (the references' convention).")
@click.option("--max-images", type=click.IntRange(min=1), default=64, show_default=True)
def command(model: Options, output_dir: Path, **options: object) -> None:
    """Decompose up to --max-images images and write components.npy, embedding.npy and metadata.json."""
    lens = load_lens(model)
    decomposed = decompose_set(lens, progress=True, **options)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{decomposed.name}.npy"
    np.save(path, decomposed.values.cpu().numpy())
    np.save(output_dir / "embedding.npy", decomposed.embedding.cpu().numpy())
    write_metadata(output_dir, decomposed.metadata)
    click.echo(f"{decomposed.report.summary()}\nwrote {path} {tuple(decomposed.values.shape)} and embedding.npy")

"""`cliplens decompose`: pieces of a small image set as .npy files, with metadata."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import torch

from ..data.loader import LoadReport, as_source, batches, fingerprint
from ..errors import CliplensError
from .options import Options, data_options, load_lens, model_options, output_option

MAX_BYTES = 2 * 1024**3


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
def command(output_dir: Path, granularity: str, spatial: bool, convention: str, normalize: bool, max_images: int,
            data_path: str, batch_size: int, num_workers: int, model: Options) -> None:
    """Decompose up to --max-images images and write components.npy, embedding.npy and metadata.json."""
    lens = load_lens(model)
    source = as_source(data_path)
    if len(source) > max_images:
        raise CliplensError(f"{len(source)} images is more than --max-images {max_images}; decompose is for small "
                            "sets: use `cliplens collect` for statistics over a dataset")
    report, parts, embeddings, labels = LoadReport(), [], [], None
    for batch in batches(source, lens.preprocess, batch_size=batch_size, num_workers=num_workers, report=report,
                         progress=True, description="decompose"):
        result = lens.decompose(batch.images, granularity=granularity, spatial=spatial, convention=convention,
                                normalize=normalize)
        parts.append(result.coefficients if granularity == "pair" else result.components)
        embeddings.append(result.embedding)
        labels = result.labels
    if not parts:
        raise CliplensError(f"no readable images ({report.summary()})")
    values = torch.cat(parts).float()
    if values.numel() * 4 > MAX_BYTES:
        raise CliplensError(f"the pieces need {values.numel() * 4 / 1e9:.1f} GB; use fewer images or `cliplens collect`")
    output_dir.mkdir(parents=True, exist_ok=True)
    name = "coefficients.npy" if granularity == "pair" else "components.npy"
    np.save(output_dir / name, values.cpu().numpy())
    np.save(output_dir / "embedding.npy", torch.cat(embeddings).float().cpu().numpy())
    metadata = {**lens.describe(), "granularity": granularity, "spatial": spatial, "convention": convention,
                "normalize": normalize, "labels": labels, "shape": list(values.shape), "data_path": str(data_path),
                "data_fingerprint": fingerprint(source), "skipped": report.skipped}
    (output_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    click.echo(f"{report.summary()}\nwrote {output_dir / name} {tuple(values.shape)} and embedding.npy")

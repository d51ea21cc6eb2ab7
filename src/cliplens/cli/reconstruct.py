"""`cliplens reconstruct`: accuracy vs texts per head when the last layers' heads are rebuilt from text
(docs/methods/reconstruction.md#protocol).

Every head of the last --num-last-layers layers is replaced by its reconstruction from m texts (TextSpan, SVD poles,
OMP codes of its principal directions, or TextSpan on random vectors), earlier heads by their mean, embed and MLPs
kept. Everything fitted (means, spans, text choices) comes from the reference set, chosen as in `cliplens ablate`;
the accuracy is measured on --data-path in one pass for every method and m. Writes reconstruction.csv
(method, texts, accuracy, correct, images; first the full model, the mean-ablation baseline and chance),
reconstruction.png and metadata.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..evaluate.reconstruction import METHODS, plot, write_csv
from ..io.metadata import write_metadata
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES
from ..workflows.reconstruction_study import reconstruction_study
from .options import (
    Options, data_options, echo_accuracies, evaluation_options, load_lens, model_options, needs, output_option,
    parse_counts, parse_list, pool_options, statistics_options,
)


@click.command("reconstruct")
@model_options
@data_options
@statistics_options
@evaluation_options
@pool_options(HEAD_POOL, HEAD_POOL_TEMPLATES)
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Comma-separated reconstruction methods.")
@click.option("--texts", default=None,
              help="Texts per head to sweep, comma-separated [default: 1, 2, 4, ... up to what the model and pool "
                   "allow: the smallest of --w-ov-rank, the embedding dimension and the pool size].")
@click.option("--num-last-layers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Rebuild the heads of this many last layers; earlier heads are mean-ablated.")
@click.option("--w-ov-rank", type=click.IntRange(min=1), default=80, show_default=True,
              help="TextSpan's span rank r.")
@click.option("--random-seed", type=int, default=0, show_default=True, help="Seed of the random-vector baseline.")
@output_option("cliplens-out/reconstruct")
@needs("explain", "matplotlib")
def command(model: Options, output_dir: Path, methods: str, texts: str | None, **options: Any) -> None:
    """Zero-shot accuracy with the last layers' heads rebuilt from m texts each, for several methods and m."""
    methods_list, counts = parse_list(methods, "methods"), parse_counts(texts)
    lens = load_lens(model)
    study = reconstruction_study(lens, methods=methods_list, counts=counts, progress=True, **options)
    path = write_csv(output_dir / "reconstruction.csv", study.result)
    plot(output_dir / "reconstruction.png", study.result,
         title=f"{lens.name}: heads of the last {options['num_last_layers']} layers from text")
    write_metadata(output_dir, {"command": "reconstruct", **study.metadata})
    click.echo(f"{lens.name}: accuracy on {study.images} images, fitted on {study.where} ({path}):")
    echo_accuracies([(f"{row['method']} {row['texts']}".strip(), row["accuracy"]) for row in study.result.rows])

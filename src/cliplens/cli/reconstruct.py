"""`cliplens reconstruct`: accuracy vs texts per head when the last layers' heads are rebuilt from text (METHODS §2.2).

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

from ..errors import CliplensError
from ..evaluate.reconstruction import METHODS, plot, reconstruction_accuracy, write_csv
from ..evaluate.zeroshot import source_classifier
from .ablate import echo_rows, evaluation_options, evaluation_source, evaluation_record, reference_statistics
from .explain import statistics_options, statistics_record, write_metadata
from .options import data_options, load_lens, model_options, output_option
from .texts import HEAD_POOL, candidate_texts, pool_options


def parse_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CliplensError(f"--{what} is empty; pass a comma-separated list")
    return items


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, the default sweep."""
    return [2**i for i in range(limit.bit_length())]


@click.command("reconstruct")
@model_options
@data_options
@statistics_options
@evaluation_options
@pool_options(HEAD_POOL, "none")
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
def command(**options: Any) -> None:
    """Zero-shot accuracy with the last layers' heads rebuilt from m texts each, for several methods and m."""
    methods = parse_list(options.pop("methods"), "methods")
    texts_option = options.pop("texts")
    lens = load_lens(options)
    source = evaluation_source(options["data_path"], options["label"])
    stats, where = reference_statistics(lens, options, source, "head")
    pool, texts, embeddings = candidate_texts(lens, options, options["data_path"], HEAD_POOL)
    if texts_option is None:
        counts = powers_of_two(min(options["w_ov_rank"], embeddings.shape[1], len(texts)))
    else:
        try:
            counts = [int(item) for item in parse_list(texts_option, "texts")]
        except ValueError:
            raise CliplensError(f"--texts must be comma-separated integers, got {texts_option!r}") from None
    weights = source_classifier(lens, source, options["templates"])
    result = reconstruction_accuracy(
        lens, source, weights, stats, embeddings, texts, methods=methods, counts=counts,
        num_last_layers=options["num_last_layers"], rank=options["w_ov_rank"], seed=options["random_seed"],
        batch_size=options["batch_size"], num_workers=options["num_workers"], progress=True,
    )
    output_dir: Path = options["output_dir"]
    path = write_csv(output_dir / "reconstruction.csv", result)
    plot(output_dir / "reconstruction.png", result,
         title=f"{lens.name}: heads of the last {options['num_last_layers']} layers from text")
    images = result.rows[0]["images"]
    write_metadata(output_dir, {
        "command": "reconstruct",
        "model": lens.describe(),
        "fit": {**statistics_record(stats, where), "mean_source": options["mean_source"]},
        "evaluation": evaluation_record(source, images, options["templates"]),
        "pool": {"name": pool, "size": len(texts), "templates": options["pool_templates"]},
        **result.metadata,
    })
    click.echo(f"{lens.name}: accuracy on {images} images, fitted on {where} ({path}):")
    echo_rows([(f"{row['method']} {row['texts']}".strip(), row["accuracy"]) for row in result.rows])

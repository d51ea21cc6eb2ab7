"""`cliplens discover`: one image's largest pieces for a text, their words and where each acts
(docs/methods/discovery.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..text.candidates import HEAD_POOL
from ..workflows.discovery import FIGURE, TABLE, discover_image, write_discovery
from .options import Options, load_lens, model_options, output_option, pool_options


@click.command("discover")
@model_options
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--data-path", default="shapes:test:512", show_default=True,
              help="With --index instead of IMAGE: the data the image is taken from.")
@click.option("--index", type=click.IntRange(min=0), default=None, help="Explain image INDEX of --data-path.")
@click.option("--text", default=None,
              help="The text whose score is split over the pieces [default: the pool text the image scores highest].")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Pieces listed.")
@click.option("--words", type=click.IntRange(min=1), default=3, show_default=True, help="Pool texts per piece.")
@click.option("--granularity", type=click.Choice(["head", "pair", "neuron"]), default=None,
              help="Pieces: head (ViT) [default], pair [default] or neuron (ResNet).")
@pool_options(HEAD_POOL, "none")
@output_option("cliplens-out/discover")
def command(model: Options, **options: Any) -> None:
    """Split IMAGE's score for a text exactly over its pieces and list the largest.

    discovery.csv: per listed piece (largest |contribution| first) its contribution <p_i, t> to the score <y, t>
    (t the unit text embedding), its share of the score, its words (the pool texts it writes most toward in this
    image), the patch where it acts most and its part at the pooled token; the last row, "rest", is the score minus
    the listed contributions, so the column sums to the score. discovery.png: each piece's patch map over the image.
    """
    lens = load_lens(model)
    result = discover_image(
        lens, options["image"], data_path=options["data_path"], index=options["index"], text=options["text"],
        pool=options["pool"], pool_size=options["pool_size"], pool_templates=options["pool_templates"],
        top=options["top"], words=options["words"], granularity=options["granularity"],
    )
    output_dir: Path = write_discovery(result, options["output_dir"])
    found = result.discovery
    click.echo(f"{result.metadata['image']}: score for '{found.text}' = {found.score:.4g}")
    for row in found.rows:
        click.echo(f"  {row['piece']:<10} {row['contribution']:+9.4f} ({100 * row['share']:5.1f}%)  {row['words']}")
    click.echo(f"wrote {TABLE}, {FIGURE} to {output_dir}")

"""`cliplens retrieve`: the top images of a component as a CSV and a PNG grid (docs/methods/retrieval.md#scores), where
in each of them it acts (docs/methods/retrieval.md#maps), and metadata.json saying which model, data and query made
them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.retrieval import retrieve, write_ranking, write_token_maps
from ..io.metadata import write_metadata
from ..stats.obtain import read_pair_stats
from ..settings import CONVENTIONS
from .options import Options, data_options, load_lens, model_options, output_option, stats_option


@click.command("retrieve")
@model_options
@data_options
@click.option("--component", "components", multiple=True, required=True,
              help="H<head>N<neuron> (ResNet pair), N<neuron> (ResNet neuron) or L<layer>H<head> (ViT head, needs a "
                   "query); repeat for several.")
@click.option("--top", type=click.IntRange(min=1), default=16, show_default=True, help="Images per component.")
@click.option("--signed", is_flag=True, help="Rank pairs by (s - mean s), not by its magnitude.")
@click.option("--query-text", default=None, help="Text a ViT head's pieces are scored against.")
@click.option("--query-image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Image whose own head piece a ViT head's pieces are scored against.")
@click.option("--cosine", is_flag=True, help="Score ViT heads by cosine instead of dot product.")
@stats_option("Pair statistics: their means centre the pair scores (and, on the same data, replace the pass).")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="reference", show_default=True,
              help="Bias convention: whether neuron norms include their bias shares.")
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True, help="Thumbnails per grid row.")
@output_option("cliplens-out/retrieve")
def command(model: Options, **options: Any) -> None:
    """Top images per ResNet pair or neuron, or per ViT head for a query text or image, and where in each it acts."""
    lens = load_lens(model)
    stats = read_pair_stats(options["stats_path"], lens) if options["stats_path"] is not None else None
    data = options["data_path"]
    rankings = retrieve(
        lens, data, options["components"], top=options["top"], signed=options["signed"], cosine=options["cosine"],
        query_text=options["query_text"], query_image=options["query_image"], stats=stats,
        convention=options["convention"], batch_size=options["batch_size"], num_workers=options["num_workers"],
        progress=True, maps=True,
    )
    output_dir: Path = options["output_dir"]
    for label, ranking in rankings.items():
        table, grid = write_ranking(output_dir, ranking, data, columns=options["columns"])
        _, overlays = write_token_maps(output_dir, ranking, data, columns=options["columns"])
        best = ", ".join(f"#{int(p)} ({v:.3g})" for p, v in zip(ranking.positions[:3], ranking.values[:3].tolist()))
        click.echo(f"{label}: top {len(ranking.positions)} by {ranking.score}: {best} ... -> {table.name}, {grid.name}"
                   f", {overlays.name}")
    write_metadata(output_dir, {"command": "retrieve", "model": lens.describe(), "data": str(data),
                                "components": {label: ranking.score for label, ranking in rankings.items()},
                                "query_text": options["query_text"], "top": options["top"]})

"""`cliplens retrieve`: the top images of a component as a CSV and a PNG grid (docs/methods/retrieval.md#scores), where
in each of them it acts (docs/methods/retrieval.md#maps), and metadata.json saying which model, data and query made
them. A ViT head's principal component (L3H1.pc0) gives both its ends (docs/methods/retrieval.md#principal), read
from an analysis given as --data-path when it keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.retrieval import ranked_source, retrieve, write_ranking, write_token_maps
from ..io.metadata import write_metadata
from ..labels import match_component
from ..stats.obtain import obtain_piece_stats, read_pair_stats
from ..settings import CONVENTIONS
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES
from .options import Options, data_options, load_lens, model_options, output_option, pool_options, stats_option


def principal(options: Options) -> bool:
    """Whether a principal component is ranked: it reads head statistics and a text pool."""
    return any(match_component(label.strip()) for label in options["components"])


@click.command("retrieve")
@model_options
@data_options
@click.option("--component", "components", multiple=True, required=True,
              help="H<head>N<neuron> (ResNet pair), N<neuron> (ResNet neuron), L<layer>H<head> (ViT head, needs a "
                   "query) or L<layer>H<head>.pc<j> (both ends of its principal component j, needs --stats); repeat "
                   "for several.")
@click.option("--top", type=click.IntRange(min=1), default=16, show_default=True, help="Images per component.")
@click.option("--signed", is_flag=True, help="Rank pairs by (s - mean s), not by its magnitude.")
@click.option("--query-text", default=None, help="Text a ViT head's pieces are scored against.")
@click.option("--query-image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Image whose own head piece a ViT head's pieces are scored against.")
@click.option("--cosine", is_flag=True, help="Score ViT heads by cosine instead of dot product.")
@stats_option("Pair statistics: their means centre the pair scores (and, on the same data, replace the pass); head "
              "statistics (`collect`, `analyze`): the means and directions of principal components.")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="reference", show_default=True,
              help="Bias convention: whether neuron norms include their bias shares.")
@click.option("--columns", type=click.IntRange(min=1), default=8, show_default=True, help="Thumbnails per grid row.")
@pool_options(HEAD_POOL, HEAD_POOL_TEMPLATES, uses_pool=principal)
@output_option("cliplens-out/retrieve")
def command(model: Options, **options: Any) -> None:
    """Top images per ResNet pair or neuron, per ViT head for a query text or image, or at both ends of a ViT head's
    principal component, and where in each it acts."""
    lens = load_lens(model)
    path = options["stats_path"]
    stats = None if path is None else (
        obtain_piece_stats(lens, path, None, convention=None, normalize=None) if principal(options)
        else read_pair_stats(path, lens))
    rankings = retrieve(
        lens, options["data_path"], options["components"], top=options["top"], signed=options["signed"],
        cosine=options["cosine"], query_text=options["query_text"], query_image=options["query_image"], stats=stats,
        convention=options["convention"], pool=options["pool"], pool_size=options["pool_size"],
        pool_templates=options["pool_templates"], batch_size=options["batch_size"],
        num_workers=options["num_workers"], progress=True, maps=True,
    )
    data = ranked_source(options["data_path"])
    output_dir: Path = options["output_dir"]
    for label, ranking in rankings.items():
        table, grid = write_ranking(output_dir, ranking, data, columns=options["columns"])
        _, overlays = write_token_maps(output_dir, ranking, data, columns=options["columns"])
        best = ", ".join(f"#{int(p)} ({v:.3g})" for p, v in zip(ranking.positions[:3], ranking.values[:3].tolist()))
        click.echo(f"{label}: top {len(ranking.positions)} by {ranking.score}: {best} ... -> {table.name}, {grid.name}"
                   f", {overlays.name}")
    write_metadata(output_dir, {"command": "retrieve", "model": lens.describe(), "data": str(options["data_path"]),
                                "components": {label: ranking.score for label, ranking in rankings.items()},
                                "query_text": options["query_text"], "top": options["top"]})

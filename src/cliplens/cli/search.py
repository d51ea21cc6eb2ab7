"""`cliplens search`: nearest neighbours inside chosen heads' spaces, and their precision per attribute
(docs/methods/head-search.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.search import ENGINES
from ..settings import CONVENTIONS
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES
from ..workflows.head_search import PLOT, PRECISION, head_search, write_search
from .options import (CONVENTION_HELP, Options, data_options, load_lens, model_options, needs, output_option,
                      pool_options, stats_option)


@click.command("search")
@model_options
@data_options
@click.option("--heads", "head_sets", multiple=True,
              help="A head set to search in: L<layer>H<head>[+L<layer>H<head>...]; repeat for several. The whole "
                   "embedding is always searched too, as the baseline.")
@click.option("--heads-for", multiple=True,
              help="shapes data: choose a head set for this attribute (colour, shape, ...) from TextSpan on "
                   "--fit-path or --stats; ATTRIBUTE:SIZE sets its number of heads.")
@click.option("--set-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Heads per --heads-for set when no :SIZE is given.")
@click.option("--fit-path", default=None,
              help="Data TextSpan chooses heads on [default: the same shapes split drawn with seed + 1].")
@stats_option("Head statistics (`cliplens collect`) TextSpan chooses heads on, instead of --fit-path.")
@click.option("--query-image", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Find this image's nearest neighbours in each space.")
@click.option("--query-text", default=None, help="Find the images nearest this text projected into each space's span.")
@click.option("--attribute", "attributes", multiple=True,
              help="shapes data: measure precision@--neighbours of neighbours sharing this attribute (colour, shape, "
                   "...); repeat for several.")
@click.option("--top", type=click.IntRange(min=1), default=16, show_default=True, help="Images per query.")
@click.option("--neighbours", type=click.IntRange(min=1), default=10, show_default=True,
              help="k of precision@k.")
@click.option("--texts-per-head", type=click.IntRange(min=1), default=10, show_default=True,
              help="TextSpan texts per space (choosing heads, projecting a text query).")
@pool_options(HEAD_POOL, HEAD_POOL_TEMPLATES, uses_pool=lambda options: options["query_text"] is not None)
@click.option("--convention", type=click.Choice(CONVENTIONS), default="reference", show_default=True,
              help=CONVENTION_HELP)
@click.option("--engine", type=click.Choice(ENGINES), default="exact", show_default=True,
              help="exact: chunked matrix products (every image compared; fine up to a few hundred thousand images); "
                   "faiss: an HNSW graph, approximate and sublinear per query, for millions (the `search` extra).")
@output_option("cliplens-out/search")
@needs("explain", "matplotlib")
def command(model: Options, **options: Any) -> None:
    """Index the per-image pieces of head sets and search inside them.

    Spaces: each --heads set, each set chosen by --heads-for, and the whole embedding (baseline). Scores are cosines
    of the centred pieces. Writes <space>.csv/.png (the query's top images), precision.csv/.png (per attribute and
    space: precision, the embedding's, chance) and head_shares.csv (each head's TextSpan share of each attribute).
    """
    lens = load_lens(model)
    result = head_search(
        lens, options["data_path"], head_sets=options["head_sets"], heads_for=options["heads_for"],
        set_size=options["set_size"], fit_path=options["fit_path"],
        stats_path=options["stats_path"], query_image=options["query_image"],
        query_text=options["query_text"], attributes=options["attributes"], top=options["top"],
        neighbours=options["neighbours"], n_texts=options["texts_per_head"], pool=options["pool"],
        pool_size=options["pool_size"], pool_templates=options["pool_templates"], convention=options["convention"],
        engine=options["engine"],
        batch_size=options["batch_size"], num_workers=options["num_workers"], progress=True,
    )
    output_dir: Path = write_search(result, options["data_path"], options["output_dir"])
    for attribute, space in result.chosen.items():
        click.echo(f"heads for {attribute}: {space}")
    for row in result.precision_rows:
        click.echo(f"  {row['attribute']:<10} {row['space']:<40} precision@{row['top']} {100 * row['precision']:5.1f}%"
                   f"  (embedding {100 * row['baseline_embedding']:.1f}%, chance {100 * row['chance']:.1f}%)")
    for name, texts in result.span_texts.items():
        click.echo(f"  span of {name}: {', '.join(texts)}")
    written = [f"{name}.csv/.png" for name in result.rankings] + ([PRECISION, PLOT] if result.precision_rows else [])
    click.echo(f"wrote {', '.join(written) or 'metadata.json'} to {output_dir}")

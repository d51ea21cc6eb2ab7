"""`cliplens merge`: statistics artifacts of disjoint data (shards of a job array, or separate runs) → one artifact."""

from __future__ import annotations

from pathlib import Path

import click

from ..stats.identity import coverage_summary
from ..stats.merge import merge_artifacts, output_name
from .options import load_lens, model_options, output_option


@click.command("merge")
@click.argument("artifacts", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_option("cliplens-out/merge")
@model_options
def command(artifacts: tuple[Path, ...], output_dir: Path, **model: object) -> None:
    """Merge the statistics in ARTIFACTS (folders `collect` or `second-order` wrote, e.g. one per --shard) into
    OUTPUT_DIR/stats (second-order: OUTPUT_DIR/second_order_L<l>). They must share the model and settings and cover
    disjoint data; shards are merged in shard order. The model options matter only for second-order statistics."""
    stats = merge_artifacts(artifacts, model=lambda: load_lens(model))
    path = stats.save(output_dir / output_name(stats))
    click.echo(f"merged {len(artifacts)} artifacts: {stats.count} images, covering {coverage_summary(stats.metadata)}")
    click.echo(f"wrote {path}")

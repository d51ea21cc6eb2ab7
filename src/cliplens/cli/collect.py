"""`cliplens collect`: one streaming pass → a statistics artifact, and a summary of the largest pieces."""

from __future__ import annotations

from pathlib import Path

import click

from ..settings import CONVENTIONS
from ..stats.collect import COLLECTED
from ..stats.summary import format_table, largest_pairs, largest_pieces
from .options import CONVENTION_HELP, Options, data_options, load_lens, long_run_options, model_options, output_option


@click.command("collect")
@model_options
@data_options
@output_option("cliplens-out/collect")
@click.option("--granularity", type=click.Choice(COLLECTED), default="head", show_default=True,
              help="Pieces: head (every attention head), layer (one attention piece per layer) or pair (ResNet "
                   "neuron x head pairs).")
@click.option("--spatial", is_flag=True, help="Also keep per-token means of the head pieces.")
@click.option("--convention", type=click.Choice(CONVENTIONS), default="separate", show_default=True,
              help=CONVENTION_HELP)
@click.option("--normalize", is_flag=True, help="Pieces of the unit embedding (the references' convention).")
@click.option("--top-k", type=click.IntRange(min=1), default=50, show_default=True,
              help="Images kept per ResNet pair for norms and principal directions.")
@click.option("--show", type=click.IntRange(min=0), default=10, show_default=True, help="Rows in the summary.")
@long_run_options("Read only the I-th of N contiguous slices of the data (0-based); `cliplens merge` joins them.")
def command(output_dir: Path, granularity: str, spatial: bool, convention: str, normalize: bool, top_k: int,
            show: int, long_run: Options, data_path: str, batch_size: int, num_workers: int, model: Options) -> None:
    """Collect mean and covariance of every piece over the data in one pass; write them to OUTPUT_DIR/stats.

    Under torchrun (torchrun --nproc-per-node K -m cliplens collect ...) every process reads its slice of the data and
    rank 0 writes the merged statistics."""
    lens = load_lens(model)
    stats = lens.collect(data_path, granularity=granularity, spatial=spatial, convention=convention,
                         normalize=normalize, batch_size=batch_size, num_workers=num_workers, top_k=top_k,
                         progress=True, distributed=None, **long_run)
    if stats is None:  # a torchrun rank other than 0: rank 0 writes
        return
    path = stats.save(output_dir / "stats")
    rows = largest_pairs(stats, show) if granularity == "pair" else largest_pieces(stats, show)
    click.echo(f"{lens.name}: {stats.report.summary()}")
    click.echo(format_table(rows))
    click.echo(f"wrote {path}")

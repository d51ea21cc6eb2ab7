"""`cliplens textspan`: TextSpan texts for every head of the last layers (docs/methods/textspan.md#algorithm), the
reference's entry point.

The same as `cliplens explain --method textspan`, with the reference's flag names: --texts-per-head (m),
--num-last-layers, --w-ov-rank (r) and --pool. Writes textspan.csv (layer, unit, description, similarity = variance
explained, rank, method) and metadata.json.
"""

from __future__ import annotations

from typing import Any

import click

from ..workflows.head_texts import explain_heads
from .options import Options, explain_options, load_lens, write_head_texts


@click.command("textspan")
@explain_options
def command(model: Options, output_dir: Any, **options: Any) -> None:
    """Name every head of the last layers with its TextSpan texts, from one pass of statistics."""
    lens = load_lens(model)
    explained = explain_heads(lens, method="textspan", progress=True, **options)
    write_head_texts(explained, output_dir, "textspan", lens.name)

"""`cliplens explain --method {textspan,svd,omp}`: name every head of the last layers with texts (see
`workflows.head_texts`, the call it makes). Writes <method>.csv and metadata.json.
"""

from __future__ import annotations

from typing import Any

import click

from ..workflows.head_texts import EXPLAIN_METHODS, explain_heads
from .options import Options, explain_options, load_lens, write_head_texts


@click.command("explain")
@click.option("--method", type=click.Choice(EXPLAIN_METHODS), default="textspan", show_default=True,
              help="textspan (greedy text basis), svd (texts at both poles of each principal component) or omp "
                   "(each principal direction as a sparse sum of texts).")
@explain_options
def command(model: Options, method: str, output_dir: Any, **options: Any) -> None:
    """Describe every head of the last layers with texts: TextSpan, SVD poles or sparse OMP codes."""
    lens = load_lens(model)
    explained = explain_heads(lens, method=method, progress=True, **options)
    write_head_texts(explained, output_dir, method if method == "textspan" else f"explain --method {method}",
                     lens.name)

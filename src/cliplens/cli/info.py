"""`cliplens info MODEL`: the architecture and what decomposing it costs."""

from __future__ import annotations

import click

from ..workflows.architecture import describe_architecture
from .options import load_lens


@click.command("info")
@click.argument("model")
@click.option("--pretrained", default=None, help="open_clip tag or checkpoint file (default: random init).")
@click.option("--images", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of images for the memory estimates.")
def command(model: str, pretrained: str | None, images: int) -> None:
    """Show MODEL's architecture, its pieces per granularity, and memory estimates."""
    lens = load_lens({"model": model, "pretrained": pretrained, "device": "cpu", "precision": "fp32", "seed": 0})
    rows = describe_architecture(lens, images)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")

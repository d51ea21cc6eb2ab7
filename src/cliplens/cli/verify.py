"""`cliplens verify MODEL`: Σ pieces against the backend's own forward, at every granularity, in float64."""

from __future__ import annotations

import sys

import click

from ..workflows.verify import TOLERANCE, verify
from .options import device_option, load_lens


@click.command("verify")
@click.argument("model")
@click.option("--pretrained", default=None, help="Weights: an open_clip tag, a checkpoint or weights file (default: "
                                                 "random init).")
@click.option("--random-images", type=click.IntRange(min=0, max=64), default=2, show_default=True,
              help="Images of random pixels.")
@click.option("--shapes-images", type=click.IntRange(min=0, max=64), default=2, show_default=True,
              help="Shapes-world images.")
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random images and a random init.")
def command(model: str, pretrained: str | None, random_images: int, shapes_images: int, device: str,
            seed: int) -> None:
    """Decompose a few images at every granularity MODEL has and compare Σ pieces with the backend's embedding.

    Exits with status 1 when any relative error exceeds the tolerance (1e-10, in float64)."""
    if random_images + shapes_images == 0:
        raise click.UsageError("--random-images and --shapes-images are both 0: verify needs at least one image")
    lens = load_lens({"model": model, "pretrained": pretrained, "device": device, "precision": "fp64", "seed": seed})
    checks = verify(lens, random=random_images, shapes=shapes_images, seed=seed)
    click.echo(f"{lens.name} ({lens.backend}, pretrained={lens.pretrained}), {random_images} random + "
               f"{shapes_images} shapes images, float64, tolerance {TOLERANCE:g}")
    click.echo(f"{'granularity':<12} {'pieces':>8} {'max rel. error':>15} {'s/image':>9} {'x forward':>10}")
    for check in checks:
        click.echo(f"{check.granularity:<12} {check.pieces:>8} {check.error:>15.2e} {check.seconds_per_image:>9.4f} "
                   f"{check.seconds_per_image / check.forward_seconds_per_image:>10.2f}  "
                   f"{'ok' if check.passed else 'FAILED'}")
    if not all(check.passed for check in checks):
        click.echo("error: Σ pieces differs from the backend's embedding beyond the tolerance", err=True)
        sys.exit(1)

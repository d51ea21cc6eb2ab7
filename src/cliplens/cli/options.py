"""Options shared by subcommands, with the reference repositories' flag names (--model, --data-path, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ..lens import DTYPES


def model_options(command: Callable) -> Callable:
    """--model --pretrained --device --precision --seed; the command receives them as keyword arguments."""
    for option in reversed(
        [
            click.option("--model", default="toy:vit", show_default=True,
                         help="open_clip id (ViT-B-32), hf:<repo or folder>, or toy:vit / toy:rn."),
            click.option("--pretrained", default=None,
                         help="open_clip tag (openai) or checkpoint file; omit for the toys or a seeded random init."),
            click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda."),
            click.option("--precision", type=click.Choice(list(DTYPES)), default="fp32", show_default=True),
            click.option("--seed", type=int, default=0, show_default=True, help="Seed of a random initialisation."),
        ]
    ):
        command = option(command)
    return command


def data_options(command: Callable) -> Callable:
    """--data-path --batch-size --num-workers."""
    for option in reversed(
        [
            click.option("--data-path", default="shapes:test:512", show_default=True,
                         help="Image folder, text file of paths, or shapes:<split>[:<n>] for the built-in world."),
            click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True),
            click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True),
        ]
    ):
        command = option(command)
    return command


def output_option(default: str) -> Callable:
    return click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=default,
                        show_default=True, help="Folder for the results (created if missing).")


def load_lens(options: dict[str, Any]):
    """The Lens named by model_options, popping those keys from `options`."""
    from ..factory import load

    return load(options.pop("model"), options.pop("pretrained"), device=options.pop("device"),
                precision=options.pop("precision"), seed=options.pop("seed"))

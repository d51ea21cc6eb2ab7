"""`cliplens train-toy`: retrain a shipped toy model from its seed (CPU, deterministic)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..errors import CliplensError
from ..toys.train import SHIPPED_STEPS, TrainConfig, train_toy
from ..toys.train_cnn import SHIPPED_CNN_STEPS, CNNConfig, train_cnn
from .options import output_folder_option


@click.command("train-toy")
@click.option("--model", "model_name", type=click.Choice(["vit", "rn", "cnn"]), required=True,
              help="Which toy to train (cnn: the shape classifier that `dissect` is checked against).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the initial weights and the data stream.")
@click.option("--steps", type=int, default=None, help="Optimizer steps [default: what the shipped toy used].")
@click.option("--batch-size", type=int, default=TrainConfig.batch_size, show_default=True,
              help="Image-caption pairs per optimizer step (the contrastive loss compares each with the others).")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
              help="Steps of linear learning-rate warm-up before the cosine decay [default: the shipped toy's].")
@click.option("--threads", type=int, default=TrainConfig.threads, show_default=True,
              help="CPU threads (the shipped weights used 1; other counts change the weights by float rounding).")
@output_folder_option("--output-dir", required=True, help="Folder for <model>.safetensors and <model>.json.")
@click.option("--eval-images", type=int, default=1000, show_default=True,
              help="Held-out test images for the final zero-shot measurement (0 to skip).")
@output_folder_option("--checkpoint-dir", default=None,
                      help="Folder for checkpoints (step-<n>), so a long run can stop and go on later.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write a checkpoint every this many steps (0: never).")
@click.option("--resume", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue from a checkpoint of the same recipe (bit for bit the weights of an uncut run).")
@click.option("--init", default=None,
              help="Start from these toy weights instead of a random draw: a folder written by train-toy, or "
                   "'shipped' for the package's own.")
@click.option("--short-texts", type=float, default=0.0, show_default=True,
              help="Share of scenes captioned by one or two bare values ('red', 'circle top left') instead.")
@click.option("--text-only", is_flag=True,
              help="Train the text tower alone against the frozen image tower of --init (every image-side number "
                   "stays as it was).")
def command(model_name: str, seed: int, steps: int | None, batch_size: int, warmup_steps: int | None, threads: int,
            output_dir: Path, eval_images: int, checkpoint_dir: Path | None, checkpoint_every: int,
            resume: str | None, init: str | None, short_texts: float, text_only: bool) -> None:
    """Train a toy model on the shapes world and write its weights and config."""
    invocation = "cliplens " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    schedule = {} if warmup_steps is None else {"warmup_steps": warmup_steps}
    if model_name == "cnn":
        if checkpoint_dir is not None or checkpoint_every or resume is not None or init is not None:
            raise CliplensError("toy:cnn trains in minutes from its seed and has no text tower; drop --checkpoint-dir, "
                                "--checkpoint-every, --resume and --init")
        if short_texts or text_only:
            raise CliplensError("toy:cnn reads no text; drop --short-texts and --text-only")
        config = CNNConfig(seed=seed, steps=SHIPPED_CNN_STEPS if steps is None else steps, batch_size=batch_size,
                           threads=threads, **schedule)
        train_cnn(config, output_dir, command=invocation, evaluate_n=eval_images, log=click.echo)
        return
    steps = SHIPPED_STEPS[model_name] if steps is None else steps
    config = TrainConfig(model=model_name, seed=seed, steps=steps, batch_size=batch_size, threads=threads,
                         checkpoint_every=checkpoint_every, short_texts=short_texts, text_only=text_only, **schedule)
    train_toy(config, output_dir, command=invocation, evaluate_n=eval_images, log=lambda line: click.echo(line),
              checkpoint_dir=checkpoint_dir, resume=resume, init=init)

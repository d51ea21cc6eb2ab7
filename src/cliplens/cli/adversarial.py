"""`cliplens adversarial`: semantic adversarial images from the second-order lens, closed loop in the shapes world
(docs/methods/adversarial.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.loader import MAX_BATCH_SIZE
from ..text.candidates import UNIT_POOL_TEMPLATES
from ..workflows.adversarial import (FIGURE, MAX_IMAGES, POOL, TABLE, adversarial_study, check_counts, check_pairs,
                                     write_adversarial)
from .options import Options, before_body, load_lens, model_options, output_option, pool_options


@click.command("adversarial")
@model_options
@click.option("--source", multiple=True, required=True, help="Shape drawn in every image (repeat for several pairs).")
@click.option("--target", multiple=True, required=True,
              help="Shape the words should make it read as, one per --source.")
@click.option("--data-path", default="shapes:train:2000", show_default=True,
              help="Fit data for the second-order statistics of --mlp-layer (shapes:train:2000 rather than "
                   "shapes:test:512, the other commands' default: the word selection reads statistics of more "
                   "images than an evaluation split holds).")
@click.option("--mlp-layer", type=click.IntRange(min=0), default=2, show_default=True,
              help="MLP layer whose neurons choose the words (0-based).")
@click.option("--neurons", type=click.IntRange(min=1), default=10, show_default=True,
              help="Neurons kept: largest |typical top projection × <principal direction, target − source>|.")
@click.option("--words", type=click.IntRange(min=1), default=4, show_default=True, help="Words kept per pair.")
@click.option("--omp-atoms", type=click.IntRange(min=1), default=None,
              help="OMP text atoms per neuron's principal direction, below the embedding width [default: 16, at most "
                   "half the pool].")
@click.option("--threshold", type=click.FloatRange(-1, 1), default=0.6, show_default=True,
              help="Drop pool words whose text cosine with the target class is at or above this.")
@pool_options(POOL, UNIT_POOL_TEMPLATES)
@click.option("--images", type=click.IntRange(min=1, max=MAX_IMAGES), default=200, show_default=True,
              help="Images per pair and condition (rounded up to a multiple of --prompts).")
@click.option("--prompts", type=click.IntRange(min=1, max=MAX_IMAGES), default=20, show_default=True,
              help="Prompts per condition, at most --images.")
@click.option("--words-per-prompt", type=click.IntRange(min=1), default=3, show_default=True,
              help="Words each prompt draws from its condition's list.")
@click.option("--draw-seed", type=click.IntRange(min=0), default=1, show_default=True,
              help="Seeds the prompts, the random words and the generator (settings were chosen on seed 0).")
@click.option("--batch-size", type=click.IntRange(min=1, max=MAX_BATCH_SIZE), default=64, show_default=True,
              help="Images per batch, in the statistics pass and when scoring generated images.")
@before_body(lambda options: (check_pairs(options["source"], options["target"]),
                              check_counts(options["images"], options["prompts"])))
@output_option("cliplens-out/adversarial")
def command(model: Options, output_dir: Path, **options: Any) -> None:
    """Words that make images of --source read as --target, drawn by the shapes generator and scored zero-shot.

    adversarial.csv: per pair and condition (selected: the chosen words; random: as many words drawn from the same
    filtered pool; none: the bare source) its words, prompts, image count, successes (images classified as the
    target among the world's shapes), success rate with its binomial standard error, and the mean margin
    cos(image, target) − cos(image, source) with its standard error. adversarial.png: example images per condition,
    each captioned with its predicted shape."""
    lens = load_lens(model)
    result = adversarial_study(
        lens, options["source"], options["target"], data_path=options["data_path"], mlp_layer=options["mlp_layer"],
        neurons=options["neurons"], words=options["words"], atoms=options["omp_atoms"], threshold=options["threshold"],
        pool=options["pool"], pool_size=options["pool_size"], pool_templates=options["pool_templates"],
        images=options["images"], prompts=options["prompts"], words_per_prompt=options["words_per_prompt"],
        seed=options["draw_seed"], batch_size=options["batch_size"], progress=True)
    written = write_adversarial(result, output_dir)
    for o in result.outcomes:
        click.echo(f"{o.source:>8} -> {o.target:<8} {o.condition:<8} {o.successes:>4}/{o.images:<4} "
                   f"({100 * o.rate:5.1f} ± {100 * o.stderr:.1f}%)  margin {o.mean_margin:+.4f}  "
                   f"{', '.join(o.words) or '-'}")
    click.echo(f"wrote {TABLE}, {FIGURE} to {written}")

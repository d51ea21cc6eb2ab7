"""`cliplens demo`: the whole pipeline on the shipped toy models and the shapes world, offline.

Each step is the real subcommand with small settings, so the demo shows exactly what a user would run; its outputs
land in one folder per step, and summary.md says what they found, in words, with an index of the files.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from ..io.atomic import write_text
from ..report.summary import SUMMARY, demo_summary
from .options import needs, output_option

FIT, EVAL = "shapes:test:512:0", "shapes:test:512:1"  # two independent draws: fit statistics on one, score on the other


Step = tuple[str, str, list[str]]


def vit_steps(out: Path) -> list[Step]:
    """(title, subcommand, arguments) for toy:vit, in order; later steps reuse earlier artifacts."""
    vit = ["--model", "toy:vit"]
    stats = str(out / "vit-collect" / "stats")
    return [
        ("Statistics of every head of toy:vit (one streaming pass)", "collect",
         vit + ["--data-path", FIT, "--output-dir", str(out / "vit-collect")]),
        ("TextSpan: what each head writes, in the world's words", "textspan",
         vit + ["--data-path", FIT, "--stats", stats, "--pool", "shapes", "--pool-templates", "photo",
                "--texts-per-head", "5", "--num-last-layers", "4", "--output-dir", str(out / "vit-textspan")]),
        ("Reconstruction accuracy on colour: every head rebuilt from m texts (TextSpan, SVD poles, OMP, random)",
         "reconstruct",
         vit + ["--data-path", EVAL, "--fit-path", FIT, "--label", "colour", "--num-last-layers", "4",
                "--texts", "1,2,4,8", "--pool", "shapes", "--pool-templates", "photo",
                "--output-dir", str(out / "vit-reconstruct")]),
        ("Mean-ablation: CLS cells and MLPs (TextSpan's table), and attention layers from the bottom up", "ablate",
         vit + ["--data-path", EVAL, "--fit-path", FIT, "--preset", "cls", "--preset", "layer-curve",
                "--output-dir", str(out / "vit-ablate")]),
        ("Second-order lens: the neurons of MLP layer 1 through the later heads, and their words", "second-order",
         vit + ["--data-path", FIT, "--eval-data-path", EVAL, "--mlp-layer", "1", "--omp-atoms", "8",
                "--output-dir", str(out / "vit-second-order")]),
        ("Retrieval: the images whose L1H2 piece (a colour head, see TextSpan) best matches 'a blue object'",
         "retrieve",
         vit + ["--data-path", EVAL, "--component", "L1H2", "--query-text", "a blue object", "--top", "16",
                "--output-dir", str(out / "vit-retrieve")]),
    ]


def rn_steps(out: Path) -> list[Step]:
    rn = ["--model", "toy:rn"]
    stats = str(out / "rn-pairs" / "pair_stats")
    return [
        ("ResNet neuron x head pairs of toy:rn: scores, words, 90 % of pairs mean-ablated", "pairs",
         rn + ["--data-path", EVAL, "--fit-path", FIT, "--pool", "shapes", "--omp-atoms", "8", "--keep", "10",
               "--output-dir", str(out / "rn-pairs")]),
        ("How few pairs or neurons toy:rn needs: accuracy with the top 1-50 % kept", "neuron-ablate",
         rn + ["--data-path", EVAL, "--stats", stats, "--pool", "shapes", "--omp-atoms", "8", "--keep", "1",
               "--keep", "5", "--keep", "10", "--keep", "50", "--output-dir", str(out / "rn-neuron-ablate")]),
        ("Retrieval: the top images of two strong pairs and of a neuron across its heads", "retrieve",
         rn + ["--data-path", FIT, "--stats", stats, "--component", "H1N262", "--component", "H2N20",
               "--component", "N342", "--top", "16", "--output-dir", str(out / "rn-retrieve")]),
    ]


@click.command("demo")
@output_option("cliplens-out/demo")
@click.pass_context
@needs("explain", "matplotlib")  # the reconstruct step plots; other steps use the shapes pool, not wordfreq's words
def command(ctx: click.Context, output_dir: Path) -> None:
    """Run the pipeline on toy:vit and toy:rn with the shapes world and write every result under OUTPUT_DIR."""
    from . import cli

    started = time.perf_counter()
    todo = vit_steps(output_dir) + rn_steps(output_dir)
    for number, (title, name, arguments) in enumerate(todo, 1):
        click.secho(f"\n[{number}/{len(todo)}] {title}", bold=True)
        click.echo(f"$ cliplens {name} {shlex.join(arguments)}")
        cli.commands[name].main(args=arguments, standalone_mode=False, obj=ctx.obj)
    seconds = time.perf_counter() - started
    summary = write_text(output_dir / SUMMARY, demo_summary(todo, output_dir, seconds))
    click.echo(f"\n{summary.read_text(encoding='utf-8')}")
    click.secho(f"done in {seconds:.0f} s; results in {output_dir}/, this summary in {summary}", bold=True)

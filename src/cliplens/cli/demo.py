"""`cliplens demo`: the whole pipeline on the shipped toy models and the shapes world, offline.

Each step is the real subcommand with small settings, so the demo shows exactly what a user would run; its outputs
land in one folder per step, the last steps join each model's folders into an explorer to open in a browser, and
summary.md says what they found, in words, with an index of the files.
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
SMALL_EVAL = "shapes:test:256:1"
SEGMENT = "shapes:segmentation:48:2"  # the segmentation split, drawn apart from the seed its settings were chosen on
VIT_LENSES = [option for name in ("heads", "second-order", "attention", "rollout", "gradcam", "centre")
              for option in ("--lens", name)]
RN_LENSES = [option for name in ("pairs", "maskclip", "gradcam", "centre") for option in ("--lens", name)]


Step = tuple[str, str, list[str]]


def vit_steps(out: Path) -> list[Step]:
    """(title, subcommand, arguments) for toy:vit, in order; later steps reuse earlier artifacts."""
    vit = ["--model", "toy:vit"]
    stats = str(out / "vit-analyze" / "analysis")
    return [
        ("Analyse toy:vit once: statistics of every head and of MLP layer 1's neurons, and the images at both ends of "
         "each head's principal components (two passes over the fit images), every ablation and reconstruction "
         "scored in one pass over the evaluation images, every segmentation lens in one pass over the images with "
         "masks", "analyze",
         vit + ["--fit-path", FIT, "--data-path", EVAL, "--ask", "statistics", "--ask", "second-order",
                "--mlp-layer", "1", "--ask", "head-images", "--ask", "ablate", "--preset", "cls", "--preset",
                "layer-curve", "--ask", "reconstruct", "--label", "shape", "--label", "colour", "--texts", "1,2,4,8",
                "--num-last-layers", "4", "--pool", "shapes", "--pool-templates", "photo", "--ask", "segment",
                "--segment-path", SEGMENT, *VIT_LENSES, "--examples", "4", "--output-dir", str(out / "vit-analyze")]),
        ("TextSpan: what each head writes, in the world's words (from the analysis)", "textspan",
         vit + ["--data-path", stats, "--pool", "shapes", "--pool-templates", "photo", "--texts-per-head", "5",
                "--num-last-layers", "4", "--output-dir", str(out / "vit-textspan")]),
        ("Reconstruction accuracy on colour: every head rebuilt from m texts (TextSpan, SVD poles, OMP, random), "
         "scored by the analysis", "reconstruct",
         vit + ["--data-path", stats, "--label", "colour", "--num-last-layers", "4", "--texts", "1,2,4,8", "--pool",
                "shapes", "--pool-templates", "photo", "--output-dir", str(out / "vit-reconstruct")]),
        ("Mean-ablation: CLS cells and MLPs (TextSpan's table), and attention layers from the bottom up, scored by "
         "the analysis", "ablate",
         vit + ["--data-path", stats, "--preset", "cls", "--preset", "layer-curve",
                "--output-dir", str(out / "vit-ablate")]),
        ("Second-order lens: the neurons of MLP layer 1 through the later heads, their words, and their ablations "
         "(statistics and scores from the analysis)", "second-order",
         vit + ["--data-path", stats, "--eval-data-path", stats, "--mlp-layer", "1", "--omp-atoms", "8",
                "--output-dir", str(out / "vit-second-order")]),
        ("Zero-shot segmentation: heads and MLP layer 1's second-order maps next to attention, rollout, Grad-CAM and "
         "a centre prior (counted by the analysis)", "segment",
         vit + ["--data-path", stats, *VIT_LENSES, "--mlp-layer", "1", "--examples", "4",
                "--output-dir", str(out / "vit-segment")]),
        ("Retrieval: the images whose L1H2 piece (a colour head, see TextSpan) best matches 'a blue object'",
         "retrieve",
         vit + ["--data-path", EVAL, "--component", "L1H2", "--query-text", "a blue object", "--top", "16",
                "--output-dir", str(out / "vit-retrieve")]),
        ("Principal components of the last layer's heads: their text poles, which answer 'a striped object', and "
         "keeping, removing or amplifying the largest two on shape", "components",
         vit + ["--data-path", SMALL_EVAL, "--stats", stats, "--label", "shape", "--query", "a striped object",
                "--edit-top", "2", "--pool", "shapes", "--pool-templates", "photo",
                "--output-dir", str(out / "vit-components")]),
        ("Head-specific search: neighbours in the colour and shape heads (chosen by TextSpan) vs the whole embedding",
         "search",
         vit + ["--data-path", EVAL, "--stats", stats, "--heads-for", "colour:2", "--heads-for", "shape:6",
                "--attribute", "colour", "--attribute", "shape", "--query-text", "red", "--pool-templates", "photo",
                "--top", "16", "--output-dir", str(out / "vit-search")]),
        ("Concept discovery: one image's score for its best text split over the heads, with words and maps",
         "discover",
         vit + ["--data-path", EVAL, "--index", "3", "--pool", "shapes", "--pool-templates", "photo", "--top", "6",
                "--output-dir", str(out / "vit-discover")]),
        ("Concept tracking: the heads that carry 'yellow' over the ten years of the shift split, against yellow's rate",
         "track",
         vit + ["--data-path", "shapes:shift:500:1", "--stats", stats, "--concept", "yellow", "--attribute",
                "colour=yellow", "--output-dir", str(out / "vit-track")]),
        ("Semantic adversarial images: words the second-order lens ties to 'star', drawn on triangles, against random "
         "and no words", "adversarial",
         vit + ["--data-path", FIT, "--source", "triangle", "--target", "star", "--images", "40", "--prompts", "4",
                "--output-dir", str(out / "vit-adversarial")]),
    ]


def rn_steps(out: Path) -> list[Step]:
    rn = ["--model", "toy:rn"]
    stats = str(out / "rn-analyze" / "analysis")
    return [
        ("Analyse toy:rn once: statistics of its pool heads and of every neuron x head pair (one pass over the fit "
         "images), every pair and neuron ablation of the next two steps (one pass over the evaluation images), every "
         "segmentation lens (one pass over the images with masks)", "analyze",
         rn + ["--fit-path", FIT, "--data-path", EVAL, "--all", "--keep", "1", "--keep", "5", "--keep", "10",
               "--keep", "50", "--pool", "shapes", "--omp-atoms", "8", "--segment-path", SEGMENT, *RN_LENSES,
               "--examples", "4", "--output-dir", str(out / "rn-analyze")]),
        ("ResNet neuron x head pairs of toy:rn: scores, words, 90 % of pairs mean-ablated", "pairs",
         rn + ["--data-path", stats, "--fit-path", stats, "--pool", "shapes", "--omp-atoms", "8", "--keep", "10",
               "--output-dir", str(out / "rn-pairs")]),
        ("How few pairs or neurons toy:rn needs: accuracy with the top 1-50 % kept", "neuron-ablate",
         rn + ["--data-path", stats, "--stats", stats, "--pool", "shapes", "--omp-atoms", "8", "--keep", "1",
               "--keep", "5", "--keep", "10", "--keep", "50", "--output-dir", str(out / "rn-neuron-ablate")]),
        ("Zero-shot segmentation: neuron x head pair maps next to MaskCLIP, Grad-CAM and a centre prior (counted by "
         "the analysis)", "segment",
         rn + ["--data-path", stats, *RN_LENSES, "--examples", "4", "--output-dir", str(out / "rn-segment")]),
        ("Retrieval: the top images of two strong pairs and of a neuron across its heads", "retrieve",
         rn + ["--data-path", FIT, "--stats", stats, "--component", "H1N262", "--component", "H2N20",
               "--component", "N342", "--top", "16", "--output-dir", str(out / "rn-retrieve")]),
        ("Spurious cue: toy:rn's pairs along the words 'stripes, checker' mean-ablated, k chosen on validation, "
         "against random pairs", "spurious",
         rn + ["--data-path", "shapes:spurious-test:400:12", "--val-path", "shapes:spurious-test:400:11",
               "--fit-path", "shapes:spurious-train:400:10", "--concept", "stripes,checker", "--k", "16", "--k", "32",
               "--k", "64", "--k", "128", "--batch-size", "100", "--output-dir", str(out / "rn-spurious")]),
        ("Concept discovery on toy:rn: the neuron x head pairs that write one image's best text, and where", "discover",
         rn + ["--data-path", EVAL, "--index", "3", "--pool", "shapes", "--pool-templates", "photo", "--top", "6",
               "--output-dir", str(out / "rn-discover")]),
    ]


def dissect_steps(out: Path) -> list[Step]:
    return [
        ("CLIP-Dissect: a concept for every neuron of toy:cnn, a shape classifier, judged by toy:vit", "dissect",
         ["--target", "toy:cnn", "--layers", "layer4,fc", "--probe", "shapes:test:256:1", "--concepts", "shapes",
          "--clip", "toy:vit", "--neuron", "fc:0", "--neuron", "fc:3", "--no-cache",
          "--output-dir", str(out / "cnn-dissect")]),
    ]


def report_steps(out: Path, steps: list[Step]) -> list[Step]:
    """One explorer per model, of the folders that model's steps wrote (a report shows one model)."""
    reports = []
    for model in ("toy:vit", "toy:rn"):
        folders = [arguments[arguments.index("--output-dir") + 1] for _, _, arguments in steps
                   if arguments[arguments.index("--model") + 1] == model]
        target = out / f"{model.split(':')[1]}-report"
        reports.append((f"The explorer of {model}'s outputs, to open in a browser", "report",
                        folders + ["--output-dir", str(target)]))
    return reports


@click.command("demo")
@output_option("cliplens-out/demo")
@click.pass_context
@needs("explain", "matplotlib")  # the reconstruct step plots; other steps use the shapes pool, not wordfreq's words
def command(ctx: click.Context, output_dir: Path) -> None:
    """Run the pipeline on the toys (vit, rn; cnn for dissect) with the shapes world; results go under OUTPUT_DIR."""
    from . import cli

    started = time.perf_counter()
    todo = vit_steps(output_dir) + rn_steps(output_dir)
    todo += dissect_steps(output_dir) + report_steps(output_dir, todo)
    for number, (title, name, arguments) in enumerate(todo, 1):
        click.secho(f"\n[{number}/{len(todo)}] {title}", bold=True)
        click.echo(f"$ cliplens {name} {shlex.join(arguments)}")
        cli.commands[name].main(args=arguments, standalone_mode=False, obj=ctx.obj)
    seconds = time.perf_counter() - started
    summary = write_text(output_dir / SUMMARY, demo_summary(todo, output_dir, seconds))
    click.echo(f"\n{summary.read_text(encoding='utf-8')}")
    click.secho(f"done in {seconds:.0f} s; results in {output_dir}/, this summary in {summary}", bold=True)
    for _, _, arguments in todo[-2:]:
        click.echo(f"open {(Path(arguments[-1]) / 'index.html').resolve().as_uri()} in a browser")

"""`cliplens analyze`: one pass (two for second-order rankings) over the fit data and one over the evaluation data
answer every question asked; the folder written stands in for the data in the commands that read it
(docs/commands/analyze.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..apps.principal_images import COMPONENTS, TOP_K
from ..data.segmentation import IMAGENET_SEG_PREFIX
from ..evaluate.pair_ablation import DEFAULT_KEEPS
from ..evaluate.reconstruction import METHODS
from ..workflows.ablation_study import PRESETS
from ..workflows.analysis import QUESTIONS, analyze, check_data, plan_analysis, sample_plan
from ..workflows.pair_study import PAIR_ATOMS
from .options import (
    Options, batch_options, load_lens, long_run_options, model_options, needs_for_data, omp_only_options, output_option,
    parse_counts, parse_list, pool_options, segment_options, templates_option,
)

SPLITS = {"fit": "fit data", "evaluation": "evaluation data", "segmentation": "segmentation split"}


@click.command("analyze")
@model_options
@click.option("--fit-path", required=True,
              help="Data the statistics (means, covariances, rankings) are collected over (no default, as None "
                   "elsewhere: an analysis is of the data named).")
@click.option("--data-path", default=None,
              help="Labelled data the ablations and reconstructions are scored on, needed by ablate, reconstruct and "
                   "pair-ablate, and second-order layers are ablated on when given "
                   "(no default where other commands read shapes:test:512: only the data named is scored).")
@click.option("--segment-path", default=None,
              help="Images with masks that segment's lenses are scored on, in one pass (as `cliplens segment "
                   "--data-path`), needed by segment.")
@batch_options
@click.option("--ask", "questions", type=click.Choice(QUESTIONS), multiple=True,
              help="A question to answer (repeat): statistics (heads, per token on ViTs), pairs (ResNet), "
                   "second-order (with --mlp-layer), head-images (ViT: top and bottom images of each head's "
                   "principal components), ablate (with --preset), reconstruct, pair-ablate (ResNet: what `pairs` "
                   "and `neuron-ablate` score), segment (with --segment-path and --lens).")
@click.option("--all", "every", is_flag=True,
              help="Every question the model supports: second-order with --mlp-layer, head-images, ablate (every "
                   "preset unless --preset) and reconstruct with --data-path on a ViT; pair-ablate with --data-path "
                   "on a ResNet; segment with --segment-path (every lens the model has unless --lens).")
@click.option("--mlp-layer", "mlp_layers", type=int, multiple=True,
              help="MLP layer for second-order and for segment's second-order lens (repeat) [segment's default when "
                   "only the lens is asked for: the three before the last].")
@click.option("--preset", "presets", type=click.Choice(list(PRESETS)), multiple=True,
              help="Ablation variants to score (repeat), as `cliplens ablate --preset`.")
@click.option("--label", "labels", multiple=True,
              help="shapes data: an attribute to classify (repeat; every evaluation is scored for each) "
                   "[default: the data's own label].")
@click.option("--head-components", type=click.IntRange(min=1), default=COMPONENTS, show_default=True,
              help="head-images: the principal components kept per head (the largest first).")
@click.option("--head-top", type=click.IntRange(min=1), default=TOP_K, show_default=True,
              help="head-images: images kept at each end of each component (retrieve --top reads up to this).")
@templates_option
@pool_options(None, None)
@click.option("--methods", default=",".join(METHODS), show_default=True,
              help="Reconstruction methods, comma-separated, as `cliplens reconstruct`.")
@click.option("--texts", default=None, help="Texts per head to sweep, as `cliplens reconstruct --texts`.")
@click.option("--num-last-layers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Reconstruct the heads of this many last layers, as `cliplens reconstruct`.")
@click.option("--keep", "keeps", type=float, multiple=True, default=DEFAULT_KEEPS, show_default=True,
              help="pair-ablate: percentages of pairs and of neurons kept (repeat), as `pairs` and `neuron-ablate`.")
@omp_only_options(PAIR_ATOMS)
@segment_options(required=False)
@click.option("--dry-run", is_flag=True, help="Print the plan (statistics, size on disk, passes, estimated time from "
                                               "a few timed batches) and stop.")
@output_option("cliplens-out/analyze")
@long_run_options(None)
@needs_for_data(IMAGENET_SEG_PREFIX, "segment", "h5py", option="segment_path")
def command(model: Options, output_dir: Path, fit_path: str, data_path: str | None, segment_path: str | None,
            batch_size: int, num_workers: int, methods: str, texts: str | None, dry_run: bool, long_run: dict[str, Any],
            **options: Any) -> None:
    """Collect every statistic and score every evaluation asked for, in the fewest passes over the data."""
    methods_list, counts = parse_list(methods, "methods"), parse_counts(texts)
    lens = load_lens(model)
    plan = plan_analysis(lens, methods=methods_list, texts=counts, scored=data_path is not None,
                         segmented=segment_path is not None, **options)
    if dry_run:
        check_data(plan, fit_path, data_path, segment_path)  # analyze checks it itself before its passes
        sample = sample_plan(lens, fit_path, plan, batch_size=batch_size, num_workers=num_workers)
        click.echo(f"{lens.name}: {', '.join(plan.questions)}; passes over the "
                   + ", over the ".join(f"{SPLITS[split]}: {count}" for split, count in plan.passes().items()))
        for part, size in sample["sizes"].items():
            click.echo(f"  {part}: {size / 2**20:.1f} MiB")
        click.echo(f"  fit passes: about {sample['fit_seconds']:.0f} s for {sample['images']} images "
                   f"({sample['seconds_per_image_and_pass'] * 1e3:.1f} ms per image and pass, timed on a sample)"
                   + ("; the evaluation pass costs about as much per image" if plan.evaluations else ""))
        return
    analysis = analyze(lens, fit_path, data_path, plan, segment_path=segment_path, batch_size=batch_size,
                       num_workers=num_workers, progress=True, **long_run)
    path = analysis.save(output_dir / "analysis")
    record = analysis.record
    click.echo(f"{lens.name}: {record['fit']['images']} fit images in {record['passes']['fit']} pass(es), "
               f"{record['evaluation']['variants'] if record['evaluation'] else 0} variants scored in "
               f"{record['passes']['evaluation']} evaluation pass(es)"
               + (f", {len(plan.segment.lenses)} lenses segmented in one pass over "
                  f"{record['segmentation']['images']} images" if plan.segment else ""))
    click.echo(f"wrote {path}: pass it as --data-path (or --stats, --fit-path) to the commands that read it")

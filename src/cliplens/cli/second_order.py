"""`cliplens second-order`: per-neuron second-order statistics of one ViT MLP layer, and optionally its ablations.

Writes OUTPUT_DIR/second_order_L{l} (the statistics artifact: mean effects, principal directions, thresholds, top
images), OUTPUT_DIR/neurons_L{l}.csv (one summary row per neuron), OUTPUT_DIR/neuron_words_L{l}.csv (each neuron's
principal direction written as --omp-atoms signed texts, METHODS §5), OUTPUT_DIR/top_images_L{l}/L{l}N{n}.png and .csv
(the top images of the --grids neurons with the largest effects) and, with --eval-data-path, the five zero-shot
accuracies of METHODS §4.5 to OUTPUT_DIR/ablation_L{l}.csv.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import torch

from ..apps.retrieval import Ranking, write_ranking
from ..data.loader import as_source
from ..evaluate.second_order_ablation import second_order_ablation
from ..evaluate.zeroshot import source_classifier
from ..explain.omp import SparseTextDecomposition
from ..explain.tables import write_descriptions
from ..io.tables import write_rows
from ..stats.second_order import SecondOrderStats, collect_second_order
from .options import data_options, load_lens, model_options, output_option
from .texts import UNIT_POOL, atom_count, candidate_texts, omp_options, texts_per_unit_option, word_rows

NEURON_ATOMS = 128  # the second-order paper's k


def neuron_rows(stats: SecondOrderStats) -> list[dict[str, Any]]:
    """One row per neuron: the size of its mean effect and spread, its threshold, PC1's share, its top images."""
    mean_norms = stats.mean_effects.norm(dim=-1).tolist()
    spread = stats.mean_square_deviation.clamp_min(0).sqrt().tolist()
    thresholds, explained = stats.thresholds.tolist(), stats.variance_explained.tolist()
    explained_topk, top = stats.topk_variance_explained.tolist(), stats.top_images.tolist()
    return [{"layer": stats.layer, "neuron": n, "mean_norm": mean_norms[n], "rms_deviation": spread[n],
             "threshold": thresholds[n], "variance_explained_pc1": explained[n],
             "topk_variance_explained_pc1": explained_topk[n], "top_images": " ".join(map(str, top[n]))}
            for n in range(stats.basis.num_neurons)]


def neuron_words(stats: SecondOrderStats, lens: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Each neuron's principal direction (top-k images, the paper's) as OMP text atoms; neurons that never moved
    (a zero direction) have nothing to explain and get no rows."""
    _, texts, embeddings = candidate_texts(lens, options, options["data_path"], UNIT_POOL)
    atoms = atom_count(options["omp_atoms"], NEURON_ATOMS, len(texts))
    directions = stats.principal_directions
    alive = (directions.norm(dim=-1) > 0).nonzero()[:, 0].tolist()
    omp = SparseTextDecomposition(atoms, dict_norm=options["dict_norm"], dtype=torch.float64)
    omp.fit(directions[alive], embeddings, texts)
    return word_rows(omp, [(stats.layer, n) for n in alive], list(range(len(alive))), options["texts_per_unit"],
                     f"omp-k{atoms}")


def write_top_images(stats: SecondOrderStats, data: Any, folder: Path, count: int) -> Path:
    """Grids of the top images (by centred second-order norm) of the `count` neurons with the largest mean of them."""
    strongest = stats.norms().mean(-1).argsort(descending=True, stable=True)[:count].tolist()
    for n in strongest:
        ranking = Ranking(f"L{stats.layer}N{n}", "centred second-order norm", stats.top_images[n].cpu(),
                          stats.top_norms[n].cpu())
        write_ranking(folder, ranking, data)
    return folder


@click.command("second-order")
@model_options
@data_options
@output_option("cliplens-out/second-order")
@click.option("--mlp-layer", type=int, required=True, help="MLP layer whose neurons to explain (0-based).")
@click.option("--convention", type=click.Choice(["separate", "reference"]), default="separate", show_default=True,
              help="LayerNorm/bias bookkeeping; 'reference' (with --scale 100 --normalize) matches the paper's code.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every effect (the reference uses 100).")
@click.option("--normalize", is_flag=True, help="Effects of the unit embedding (the reference's convention).")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Images kept per neuron for its threshold and principal direction (the reference uses 100).")
@click.option("--eval-data-path", default=None,
              help="Labelled data for the ablation accuracies (class folders or shapes:<split>[:<n>]); "
                   "omit to skip the ablations.")
@click.option("--templates", default="auto", show_default=True,
              help="Classifier prompts: a template set (none, photo, simple, openai) or a format string; auto uses "
                   "the shapes world's prompts on shapes data and 'photo' elsewhere.")
@omp_options(NEURON_ATOMS)
@texts_per_unit_option
@click.option("--grids", type=click.IntRange(min=0), default=8, show_default=True,
              help="Write the top images of this many neurons (largest mean top-k effect) as PNG grids and CSV.")
def command(output_dir: Path, mlp_layer: int, convention: str, scale: float, normalize: bool, top_k: int,
            eval_data_path: str | None, templates: str, data_path: str, batch_size: int, num_workers: int,
            grids: int, **options: Any) -> None:
    """Second-order statistics of every neuron of --mlp-layer over --data-path (two streaming passes)."""
    lens = load_lens(options)
    stats = collect_second_order(lens, data_path, layer=mlp_layer, convention=convention, scale=scale,
                                 normalize=normalize, top_k=top_k, batch_size=batch_size, num_workers=num_workers,
                                 progress=True)
    artifact = stats.save(output_dir / f"second_order_L{mlp_layer}")
    table = write_rows(output_dir / f"neurons_L{mlp_layer}.csv", neuron_rows(stats))
    click.echo(f"{lens.name} layer {mlp_layer}: {stats.report.summary()}")
    click.echo(f"wrote {artifact} and {table}")
    if options["omp_atoms"] != 0:
        words = write_descriptions(output_dir / f"neuron_words_L{mlp_layer}.csv",
                                   neuron_words(stats, lens, {**options, "data_path": data_path}))
        click.echo(f"wrote {words}")
    if grids:
        folder = write_top_images(stats, data_path, output_dir / f"top_images_L{mlp_layer}", grids)
        click.echo(f"wrote the top images of {min(grids, stats.basis.num_neurons)} neurons to {folder}")
    if eval_data_path is None:
        return
    source = as_source(eval_data_path)
    weights = source_classifier(lens, source, templates)
    result = second_order_ablation(lens, stats, source, weights, batch_size=batch_size, num_workers=num_workers,
                                   progress=True)
    path = write_rows(output_dir / f"ablation_L{mlp_layer}.csv", result.rows())
    for row in result.rows():
        click.echo(f"  {row['variant']:<24} {100 * row['accuracy']:6.2f}%")
    sample = "in-sample" if result.metadata["in_sample"] else "out-of-sample"
    click.echo(f"  {result.count} images ({sample}); significant neuron-image pairs: "
               f"{100 * result.significant_fraction:.2f}%\nwrote {path}")

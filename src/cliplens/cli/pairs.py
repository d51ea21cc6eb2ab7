"""`cliplens pairs`: ResNet neuron×head pairs end to end (METHODS §6).

Pair statistics (collected on --fit-path, or read with --stats), a summary of every pair, the words of each kept
pair's and neuron's principal direction (OMP over a text pool), and the zero-shot accuracy on --data-path with all but
the top --keep % of pairs (or neurons) mean-ablated and with every pair rebuilt from its principal direction and from
its words. A neuron's direction needs the covariance of its H coefficients, which the pair statistics do not hold, so
it is accumulated during the evaluation pass: neuron words describe --data-path. The helpers below are shared with
`cliplens neuron-ablate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click
import torch

from ..data.loader import as_source
from ..errors import CliplensError
from ..evaluate.pair_ablation import (
    AccuracyBoard, PairAblation, check_keep, is_in_sample, neuron_principal_directions, neuron_scores, pair_batches,
    require_resnet, standard_variants, text_reconstruction, top_mask,
)
from ..evaluate.zeroshot import source_classifier
from ..explain.omp import SparseTextDecomposition
from ..explain.tables import write_descriptions
from ..io.tables import write_rows
from ..stats.collect import load_stats
from ..stats.moments import Moments
from ..stats.pairs import PairStats
from .options import data_options, load_lens, model_options, output_option
from .texts import UNIT_POOL, atom_count, candidate_texts, omp_options, texts_per_unit_option, word_rows

PAIR_ATOMS = 64  # the ResNet paper's k


# shared with neuron-ablate -----------------------------------------------------------------------------------------
def pair_fit_options(command: Callable) -> Callable:
    """--stats --fit-path --top-k --templates: where the pair statistics and the classifier come from."""
    for option in reversed([
        click.option("--stats", "stats_path", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Pair statistics from `cliplens collect --granularity pair`; collected here if omitted."),
        click.option("--fit-path", default=None,
                     help="Data to collect the statistics on (default: --data-path, i.e. in-sample means)."),
        click.option("--top-k", type=click.IntRange(min=1), default=50, show_default=True,
                     help="Top images kept per pair when collecting (the reference uses 50)."),
        click.option("--templates", default="auto", show_default=True,
                     help="Classifier prompts: a template set (none, photo, simple, openai) or a format string; "
                          "auto uses the shapes world's prompts on shapes data and 'photo' elsewhere."),
    ]):
        command = option(command)
    return command


def fit_statistics(lens: Any, stats_path: str | None, fit_path: str, *, top_k: int, batch_size: int,
                   num_workers: int, output_dir: Path) -> PairStats:
    """The pair statistics: read (refused if made for another model) or collected and saved to output_dir."""
    if stats_path is not None:
        stats = load_stats(stats_path, lens)
        if not isinstance(stats, PairStats):
            raise CliplensError(f"{stats_path} holds piece statistics; collect with --granularity pair")
        return stats
    stats = lens.collect(fit_path, granularity="pair", top_k=top_k, batch_size=batch_size, num_workers=num_workers,
                         progress=True)
    stats.save(output_dir / "pair_stats")
    return stats


def echo_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        kept = f"{row['kept']}/{row['total']}" if row["kept"] is not None else ""
        click.echo(f"  {row['variant']:<28} {kept:>15}  {100 * row['accuracy']:6.2f}%")
    sample = "in-sample (means fitted on the evaluation data)" if rows[0]["in_sample"] else "out-of-sample"
    click.echo(f"  {rows[0]['images']} images, {sample}")


# this command ------------------------------------------------------------------------------------------------------
def pair_summary(stats: PairStats, scores: torch.Tensor, keep: torch.Tensor) -> list[dict[str, Any]]:
    """One row per pair, by score descending: its score, spread, principal sign and whether the mask keeps it."""
    lengths = stats.direction_norms()
    columns = {
        "score": scores,
        "top_mean_abs_deviation": torch.where(lengths > 0, scores / lengths, 0.0),  # mean top-k |s − s̄|
        "coef_mean": stats.coef_mean,
        "coef_std": stats.coef_variance.sqrt(),
        "direction_norm": lengths,
        "sign": stats.principal_signs().int(),
        "kept": keep,
    }
    order = ranked(scores)
    values = {name: column.flatten()[order].tolist() for name, column in columns.items()}
    rows = []
    for i, flat in enumerate(order.tolist()):
        h, n = divmod(flat, stats.neurons)
        rows.append({"head": h, "neuron": n, "label": f"H{h}N{n}", **{name: values[name][i] for name in columns}})
    return rows


def ranked(scores: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Flat indices of `scores` by score descending (ties: lower index first), only those in `keep` if given."""
    order = scores.flatten().argsort(descending=True, stable=True)
    return order if keep is None else order[keep.flatten()[order]]


@click.command("pairs")
@model_options
@data_options
@pair_fit_options
@omp_options(PAIR_ATOMS)
@texts_per_unit_option
@click.option("--keep", type=float, default=10.0, show_default=True,
              help="Percentage of pairs (and of neurons) kept by score; the rest are mean-ablated.")
@output_option("cliplens-out/pairs")
def command(**options: Any) -> None:
    """Statistics, words and ablation accuracy of ResNet neuron×head pairs."""
    keep_percent = check_keep(options.pop("keep"))
    lens = load_lens(options)
    require_resnet(lens, "cliplens pairs")
    output_dir: Path = options["output_dir"]
    output_dir.mkdir(parents=True, exist_ok=True)
    data_path, batch_size, workers = options["data_path"], options["batch_size"], options["num_workers"]
    stats = fit_statistics(lens, options["stats_path"], options["fit_path"] or data_path, top_k=options["top_k"],
                           batch_size=batch_size, num_workers=workers, output_dir=output_dir)
    scores = stats.scores()
    pair_mask, neuron_mask = top_mask(scores, keep_percent), top_mask(neuron_scores(scores), keep_percent)
    write_rows(output_dir / "pairs.csv", pair_summary(stats, scores, pair_mask))

    text = texts = pool_embeddings = None
    atoms = options["omp_atoms"]
    if atoms != 0:
        _, texts, pool_embeddings = candidate_texts(lens, options, data_path, UNIT_POOL)
        atoms = atom_count(atoms, PAIR_ATOMS, len(texts))
        text, pair_omp = text_reconstruction(stats, pool_embeddings, texts, n_atoms=atoms,
                                             dict_norm=options["dict_norm"])
        kept = ranked(scores, pair_mask).tolist()
        method = f"omp-k{atoms}"
        rows = word_rows(pair_omp, [(f"H{flat // stats.neurons}", flat % stats.neurons) for flat in kept], kept,
                         options["texts_per_unit"], method)
        write_descriptions(output_dir / "pair_words.csv", rows)

    source = as_source(data_path)
    weights = source_classifier(lens, source, options["templates"]) if getattr(source, "classnames", None) else None
    ablation = PairAblation(stats, lens.device)
    board = None
    if weights is not None:
        board = AccuracyBoard(weights, standard_variants(ablation, keeps=[keep_percent], text=text,
                                                         text_label=f"text k={atoms}"))
    moments = Moments(stats.neurons, stats.heads)
    for dec, batch in pair_batches(lens, source, batch_size=batch_size, num_workers=workers, progress=True):
        moments.update(dec.coefficients.transpose(1, 2))
        if board is not None:
            board.update(dec, batch.labels)
    if moments.count == 0:
        raise CliplensError(f"no readable images in {data_path}; check --data-path")

    if atoms:
        directions, _ = neuron_principal_directions(stats, moments)
        kept_neurons = ranked(neuron_scores(scores), neuron_mask).tolist()
        neuron_omp = SparseTextDecomposition(atoms, dict_norm=options["dict_norm"], dtype=torch.float64)
        neuron_omp.fit(directions[kept_neurons], pool_embeddings, texts)
        rows = word_rows(neuron_omp, [("layer4", n) for n in kept_neurons], list(range(len(kept_neurons))),
                         options["texts_per_unit"], method)
        write_descriptions(output_dir / "neuron_words.csv", rows)

    click.echo(f"{stats.heads * stats.neurons} pairs from {stats.count} images; kept {int(pair_mask.sum())} pairs and "
               f"{int(neuron_mask.sum())} neurons (top {keep_percent:g}%); results in {output_dir}")
    if board is None:
        click.echo("  the evaluation data has no class names, so no accuracy was measured")
        return
    rows = board.rows(in_sample=is_in_sample(stats, source))
    write_rows(output_dir / "ablation.csv", rows)
    echo_table(rows)

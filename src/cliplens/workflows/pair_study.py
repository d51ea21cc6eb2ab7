"""ResNet neuron×head pairs end to end (docs/methods/resnet-pairs.md): the calls behind `cliplens pairs` and `cliplens
neuron-ablate`.

`pair_study`: pair statistics (collected on the fit data, or read), a summary of every pair, the words of each kept
pair's and neuron's principal direction (OMP over a text pool), and the zero-shot accuracy with all but the top x % of
pairs (or neurons) mean-ablated and with every pair rebuilt from its principal direction and from its words. A
neuron's direction needs the covariance of its H coefficients, which the pair statistics do not hold, so it is
accumulated during the evaluation pass: neuron words describe the evaluation data.

Given an analysis that asked for `pair-ablate` as the evaluation data, both read the counts and the neurons' moments
its evaluation pass stored, and stream no image (docs/methods/analysis.md#reading).

`pair_ablation_study`: the accuracy table alone, for several keep percentages and levels, in one streaming pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data.analyzed import AnalyzedData
from ..data.loader import as_source
from ..errors import CliplensError
from ..evaluate.pair_ablation import (
    DEFAULT_KEEPS, DirectionReconstruction, PairAblation, PairReading, PairVariant, ablation_table, check_keep,
    is_in_sample, neuron_principal_directions, neuron_scores, require_resnet, standard_variants,
    stored_neuron_moments, text_reconstruction, top_mask,
)
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..explain.omp import DictNorm, SparseTextDecomposition, require_fewer_atoms
from ..explain.unit_words import atom_count, word_rows
from ..labels import pair_label, pool_neuron_label
from ..stats.fit_passes import one_pass
from ..stats.obtain import obtain_pair_stats
from ..stats.pairs import PairStats
from ..text.candidates import UNIT_POOL, UNIT_POOL_TEMPLATES, candidate_texts, check_candidates

if TYPE_CHECKING:
    from ..lens import Lens

PAIR_ATOMS = 64  # the ResNet paper's k
LEVELS = ("pair", "neuron", "both")


@dataclass
class PairStudy:
    """What `pair_study` found. Rows are ready for CSV: `summary` one per pair by score, `pair_words` and
    `neuron_words` (description rows; None when the text side was skipped), `ablation` one per variant (None when the
    evaluation data has no class names)."""

    stats: PairStats
    keep_percent: float
    pair_mask: torch.Tensor  # [H, C]
    neuron_mask: torch.Tensor  # [C]
    summary: list[dict[str, Any]]
    pair_words: list[dict[str, Any]] | None
    neuron_words: list[dict[str, Any]] | None
    ablation: list[dict[str, Any]] | None


@dataclass
class PairTexts:
    """The text side of a pair run: the pool, k, each pair's pc0 written as k atoms, and the fitted OMP."""

    texts: list[str]
    embeddings: torch.Tensor
    atoms: int
    reconstruction: DirectionReconstruction
    omp: SparseTextDecomposition


def pair_texts(
    lens: Lens, stats: PairStats, data_path: Any, *, omp_atoms: int | None, dict_norm: DictNorm,
    pool: str | os.PathLike | None, pool_size: int | None, pool_templates: str, progress: bool = False,
) -> PairTexts | None:
    """Each pair's principal direction as `omp_atoms` texts of the pool (default k: PAIR_ATOMS, at most half the
    pool); None when `omp_atoms` is 0."""
    if omp_atoms == 0:
        return None
    _, texts, embeddings = candidate_texts(lens, data_path, UNIT_POOL, pool=pool, pool_size=pool_size,
                                           pool_templates=pool_templates, progress=progress)
    atoms = atom_count(omp_atoms, PAIR_ATOMS, len(texts), embeddings.shape[1])
    reconstruction, omp = text_reconstruction(stats, embeddings, texts, n_atoms=atoms, dict_norm=dict_norm,
                                              progress=progress)
    return PairTexts(texts, embeddings, atoms, reconstruction, omp)


def pair_variants(lens: Lens, stats: PairStats, keeps: Sequence[float], levels: Sequence[str],
                  text: PairTexts | None) -> list[PairVariant]:
    """The variants `pairs`, `neuron-ablate` and an analysis score: `standard_variants` with the sparse-text
    reconstruction labelled by its k (none without text)."""
    words = {} if text is None else {"text": text.reconstruction, "text_label": f"text k={text.atoms}"}
    return standard_variants(PairAblation(stats, lens.device), keeps=keeps, levels=levels, **words)


def ranked(scores: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Flat indices of `scores` by score descending (ties: lower index first), only those in `keep` if given."""
    order = scores.flatten().argsort(descending=True, stable=True)
    return order if keep is None else order[keep.flatten()[order]]


def pair_summary(stats: PairStats, scores: torch.Tensor, keep: torch.Tensor) -> list[dict[str, Any]]:
    """One row per pair, by score descending (docs/outputs.md#pairs): its rank, score, spread, principal sign and
    whether the mask keeps it."""
    lengths = stats.direction_norms()
    columns = {
        "score": scores,
        "top_mean_abs_deviation": torch.where(lengths > 0, scores / lengths, 0.0),  # mean top-k |s − s̄|
        "coef_mean": stats.coef_mean,
        "coef_std": stats.coef_variance.sqrt(),
        "direction_norm": lengths,
        "sign": stats.principal_signs().int(),
        "kept_in_ablation": keep,
    }
    order = ranked(scores)
    values = {name: column.flatten()[order].tolist() for name, column in columns.items()}
    rows = []
    for rank, flat in enumerate(order.tolist()):
        h, n = divmod(flat, stats.neurons)
        rows.append({"rank": rank, "label": pair_label(h, n), "head": h, "neuron": n,
                     **{name: values[name][rank] for name in columns}})
    return rows


def pair_study(
    lens: Lens, data_path: Any, *, keep: float = 10.0, stats_path: str | os.PathLike | None = None,
    fit_path: Any = None, top_k: int = 50, templates: str = "auto", omp_atoms: int | None = None,
    dict_norm: DictNorm = "row", pool: str | os.PathLike | None = None, pool_size: int | None = None,
    pool_templates: str = UNIT_POOL_TEMPLATES, texts_per_unit: int = 10, batch_size: int = 32, num_workers: int = 0,
    save_stats: str | os.PathLike | None = None, progress: bool = False,
) -> PairStudy:
    """Statistics, words and ablation accuracy of a ResNet's neuron×head pairs, keeping the top `keep` % of pairs
    (and of neurons). Statistics are read from `stats_path` or collected on `fit_path` (default: `data_path`, i.e.
    in-sample means) and then saved to `save_stats` if given."""
    keep_percent = check_keep(keep)
    require_resnet(lens, "cliplens pairs")
    require_fewer_atoms(omp_atoms, lens.spec.output_dim)  # everything the later steps need is checked before the passes
    if omp_atoms != 0:
        check_candidates(data_path, UNIT_POOL, pool=pool, pool_templates=pool_templates)
    source = as_source(data_path)
    labelled = bool(getattr(source, "classnames", None))
    if labelled:
        classifier_prompts(source, templates)
    stats = obtain_pair_stats(lens, stats_path, fit_path or data_path, top_k=top_k, batch_size=batch_size,
                              num_workers=num_workers, save_to=save_stats, progress=progress)
    scores = stats.scores()
    pair_mask, neuron_mask = top_mask(scores, keep_percent), top_mask(neuron_scores(scores), keep_percent)
    summary = pair_summary(stats, scores, pair_mask)

    text = pair_texts(lens, stats, data_path, omp_atoms=omp_atoms, dict_norm=dict_norm, pool=pool,
                      pool_size=pool_size, pool_templates=pool_templates, progress=progress)
    pair_words = None
    if text is not None:
        kept = ranked(scores, pair_mask).tolist()
        labels = [pair_label(*divmod(flat, stats.neurons)) for flat in kept]
        pair_words = word_rows(text.omp, labels, kept, texts_per_unit, f"omp-k{text.atoms}")

    classifiers = [(source_classifier(lens, source, templates, progress=progress), None)] if labelled else []
    variants = pair_variants(lens, stats, [keep_percent], ("pair", "neuron"), text)
    reading = PairReading(lens, stats, variants, classifiers)
    if isinstance(source, AnalyzedData):
        moments = stored_neuron_moments(source, lens)
        for board, _ in reading.boards:
            board.restore(source.path, stats)
    else:
        one_pass(lens, source, reading.update, description=f"pairs {lens.name}", batch_size=batch_size,
                 num_workers=num_workers, progress=progress)
        moments = reading.moments

    neuron_words = None
    if text is not None:
        directions, _ = neuron_principal_directions(stats, moments)
        kept_neurons = ranked(neuron_scores(scores), neuron_mask).tolist()
        neuron_omp = SparseTextDecomposition(text.atoms, dict_norm=dict_norm, dtype=torch.float64)
        neuron_omp.fit(directions[kept_neurons], text.embeddings, text.texts, progress=progress)
        neuron_words = word_rows(neuron_omp, [pool_neuron_label(n) for n in kept_neurons],
                                 list(range(len(kept_neurons))), texts_per_unit, f"omp-k{text.atoms}")
    ablation = reading.boards[0][0].rows(in_sample=is_in_sample(stats, source)) if reading.boards else None
    return PairStudy(stats, keep_percent, pair_mask, neuron_mask, summary, pair_words, neuron_words, ablation)


def pair_ablation_study(
    lens: Lens, data_path: Any, *, keeps: Sequence[float] = DEFAULT_KEEPS, level: str = "both",
    stats_path: str | os.PathLike | None = None, fit_path: Any = None, top_k: int = 50, templates: str = "auto",
    omp_atoms: int | None = None, dict_norm: DictNorm = "row", pool: str | os.PathLike | None = None,
    pool_size: int | None = None, pool_templates: str = UNIT_POOL_TEMPLATES, batch_size: int = 32,
    num_workers: int = 0, save_stats: str | os.PathLike | None = None, progress: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy rows on `data_path` of the full model, the top x % of pairs or neurons kept (the rest mean-ablated)
    for each x in `keeps` at `level` ("pair", "neuron" or "both"), and every pair rebuilt from its principal direction
    and from its words; statistics as in `pair_study`."""
    keeps = [check_keep(keep) for keep in keeps]
    if level not in LEVELS:
        raise CliplensError(f"unknown level {level!r}; choose from {', '.join(LEVELS)}")
    require_resnet(lens, "cliplens neuron-ablate (ViT MLP neurons are ablated by `cliplens second-order`)")
    require_fewer_atoms(omp_atoms, lens.spec.output_dim)
    if omp_atoms != 0:
        check_candidates(data_path, UNIT_POOL, pool=pool, pool_templates=pool_templates)
    source = as_source(data_path)
    weights = source_classifier(lens, source, templates, progress=progress)
    stats = obtain_pair_stats(lens, stats_path, fit_path or data_path, top_k=top_k, batch_size=batch_size,
                              num_workers=num_workers, save_to=save_stats, progress=progress)
    text = pair_texts(lens, stats, data_path, omp_atoms=omp_atoms, dict_norm=dict_norm, pool=pool,
                      pool_size=pool_size, pool_templates=pool_templates, progress=progress)
    levels = ("pair", "neuron") if level == "both" else (level,)
    variants = pair_variants(lens, stats, keeps, levels, text)
    return ablation_table(lens, source, weights, variants, stats, batch_size=batch_size, num_workers=num_workers,
                          progress=progress)

"""Per-neuron second-order statistics of one ViT MLP layer, their words and their ablations
(docs/methods/second-order.md, docs/methods/omp.md): the call behind `cliplens second-order`.

The statistics hold each neuron's mean effect, principal direction, threshold and top images; each principal direction
(top-k images, the paper's) is written as signed OMP text atoms; with labelled evaluation data, the five zero-shot
accuracies of docs/methods/second-order.md#statistics are measured in one more pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..apps.retrieval import Ranking, write_ranking
from ..data.loader import as_source
from ..data.shards import Shard
from ..errors import CliplensError
from ..evaluate.second_order_ablation import SecondOrderAblation, second_order_ablation
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..explain.omp import DictNorm, SparseTextDecomposition, require_fewer_atoms
from ..explain.unit_words import atom_count, word_rows
from ..labels import neuron_label
from ..stats.checkpoint import EVERY
from ..io.artifacts import is_analysis
from ..stats.second_order import SecondOrderStats, collect_second_order, load_second_order
from ..text.candidates import UNIT_POOL, UNIT_POOL_TEMPLATES, candidate_texts, check_candidates

if TYPE_CHECKING:
    from ..lens import Lens

NEURON_ATOMS = 128  # the second-order paper's k


@dataclass
class SecondOrderStudy:
    """The statistics, one summary row per neuron, the neurons' words (None when skipped) and the ablation
    accuracies (None without evaluation data)."""

    stats: SecondOrderStats
    neurons: list[dict[str, Any]]
    words: list[dict[str, Any]] | None
    ablation: SecondOrderAblation | None


def neuron_rows(stats: SecondOrderStats) -> list[dict[str, Any]]:
    """One row per neuron: the size of its mean effect and spread, its threshold, PC1's share, its top images."""
    mean_norms = stats.mean_effects.norm(dim=-1).tolist()
    spread = stats.mean_square_deviation.clamp_min(0).sqrt().tolist()
    thresholds, explained = stats.thresholds.tolist(), stats.variance_explained.tolist()
    explained_topk, top = stats.topk_variance_explained.tolist(), stats.top_images.tolist()
    return [{"label": neuron_label(stats.layer, n), "layer": stats.layer, "neuron": n, "mean_norm": mean_norms[n],
             "rms_deviation": spread[n], "threshold": thresholds[n], "variance_explained_pc1": explained[n],
             "topk_variance_explained_pc1": explained_topk[n], "top_images": " ".join(map(str, top[n]))}
            for n in range(stats.basis.num_neurons)]


def neuron_words(
    stats: SecondOrderStats, lens: Lens, data_path: Any, *, omp_atoms: int | None, dict_norm: DictNorm,
    pool: str | os.PathLike | None, pool_size: int | None, pool_templates: str, texts_per_unit: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Each neuron's principal direction (top-k images, the paper's) as OMP text atoms; neurons that never moved
    (a zero direction) have nothing to explain and get no rows."""
    _, texts, embeddings = candidate_texts(lens, data_path, UNIT_POOL, pool=pool, pool_size=pool_size,
                                           pool_templates=pool_templates, progress=progress)
    atoms = atom_count(omp_atoms, NEURON_ATOMS, len(texts), embeddings.shape[1])
    directions = stats.principal_directions
    alive = (directions.norm(dim=-1) > 0).nonzero()[:, 0].tolist()
    omp = SparseTextDecomposition(atoms, dict_norm=dict_norm, dtype=torch.float64)
    omp.fit(directions[alive], embeddings, texts, progress=progress)
    return word_rows(omp, [neuron_label(stats.layer, n) for n in alive], list(range(len(alive))), texts_per_unit,
                     f"omp-k{atoms}")


def study_record(study: SecondOrderStudy, lens: Lens) -> dict[str, Any]:
    """What metadata.json of a second-order output folder keeps: the model, the layer and settings, and the ablation's
    record with how often a neuron was significant (a number of the whole table, not of a row)."""
    stats = study.stats
    record = {"command": "second-order", "model": lens.describe(), "layer": stats.layer,
              **stats.settings.metadata(), "scale": stats.scale}
    if study.ablation is not None:
        record["ablation"] = {**study.ablation.metadata, "images": study.ablation.count,
                              "significant_fraction": study.ablation.significant_fraction}
    return record


def write_top_images(stats: SecondOrderStats, data: Any, folder: Path, count: int) -> Path:
    """Grids of the top images (by centred second-order norm) of the `count` neurons with the largest mean of them."""
    strongest = stats.norms().mean(-1).argsort(descending=True, stable=True)[:count].tolist()
    for n in strongest:
        ranking = Ranking(neuron_label(stats.layer, n), "centred second-order norm", stats.top_images[n].cpu(),
                          stats.top_norms[n].cpu())
        write_ranking(folder, ranking, data)
    return folder


def require_whole_data(shard: str | Shard | None) -> None:
    """Refuse a shard: the second pass needs the first-pass mean of all the data, and the words, grids and ablations
    need statistics of all of it (docs/commands/second-order.md#long-runs)."""
    if shard is not None:
        raise CliplensError("second-order cannot run on one shard: its second pass needs the first-pass mean of all "
                            "the data; split the run with torchrun --nproc-per-node K -m cliplens second-order ...")


def second_order_study(
    lens: Lens, data_path: Any, *, mlp_layer: int, convention: str = "separate", scale: float = 1.0,
    normalize: bool = False, top_k: int = 100, eval_data_path: Any = None, templates: str = "auto",
    omp_atoms: int | None = None, dict_norm: DictNorm = "row", pool: str | os.PathLike | None = None,
    pool_size: int | None = None, pool_templates: str = UNIT_POOL_TEMPLATES, texts_per_unit: int = 10,
    batch_size: int = 32, num_workers: int = 0, save_stats: str | os.PathLike | None = None,
    progress: bool = False, shard: str | Shard | None = None, checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = EVERY, resume: bool = False,
) -> SecondOrderStudy | None:
    """Second-order statistics of every neuron of `mlp_layer` over `data_path` (two streaming passes), saved to
    `save_stats` at once if given; their words unless `omp_atoms` is 0; the ablations on `eval_data_path` if given.

    The passes checkpoint and resume as in `collect_second_order`. Under torchrun the ranks share the passes and rank 0
    does the rest (the others return None). A `shard` is refused: its words, grids and ablations would describe
    statistics ranked from its own mean, which no other shard shares (`require_whole_data`)."""
    require_whole_data(shard)
    require_fewer_atoms(omp_atoms, lens.spec.output_dim)  # everything the later steps need is checked before the passes
    if omp_atoms != 0:
        check_candidates(data_path, UNIT_POOL, pool=pool, pool_templates=pool_templates)
    source = None if eval_data_path is None else as_source(eval_data_path)
    if source is not None:
        classifier_prompts(source, templates)
    if is_analysis(data_path):  # its fit passes collected the layer with the same settings, or it is refused
        stats = load_second_order(data_path, lens, mlp_layer, convention=convention, scale=float(scale),
                                  normalize=normalize, top_k=top_k)
    else:
        stats = collect_second_order(lens, data_path, layer=mlp_layer, convention=convention, scale=scale,
                                     normalize=normalize, top_k=top_k, batch_size=batch_size, num_workers=num_workers,
                                     progress=progress, checkpoint_dir=checkpoint_dir,
                                     checkpoint_every=checkpoint_every, resume=resume, distributed=None)
    if stats is None:  # a torchrun rank other than 0
        return None
    if save_stats is not None:
        stats.save(save_stats)
    words = None
    if omp_atoms != 0:
        words = neuron_words(stats, lens, data_path, omp_atoms=omp_atoms, dict_norm=dict_norm, pool=pool,
                             pool_size=pool_size, pool_templates=pool_templates, texts_per_unit=texts_per_unit,
                             progress=progress)
    ablation = None
    if source is not None:
        weights = source_classifier(lens, source, templates, progress=progress)
        ablation = second_order_ablation(lens, stats, source, weights, batch_size=batch_size,
                                         num_workers=num_workers, progress=progress)
    return SecondOrderStudy(stats, neuron_rows(stats), words, ablation)

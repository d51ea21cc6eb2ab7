"""Every head of the last layers named with texts, from statistics: the call behind `cliplens explain` and
`cliplens textspan`.

- textspan: the head's greedy variance-maximising text basis (docs/methods/textspan.md#algorithm); variance_explained.
- svd: each principal component named by the texts at its two poles (docs/methods/svd-poles.md); similarity = the text's
  coordinate (a cosine).
- omp: each of the head's top principal directions written as k signed text atoms (docs/methods/omp.md); coefficient =
  the atom's weight, direction = which principal direction.

The statistics come from `stats_path` (a `cliplens collect --granularity head` artifact, refused if made for another
model) or are collected over `data_path`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..errors import CliplensError
from ..evaluate.reconstruction import principal_directions, split_heads
from ..explain.base import fit_pieces
from ..explain.omp import SparseTextDecomposition, require_fewer_atoms
from ..explain.svd_poles import SVDPoles
from ..explain.tables import description_row, description_rows
from ..explain.textspan import TextSpan
from ..stats.collect import PieceStats
from ..stats.obtain import obtain_piece_stats, statistics_record
from ..settings import Settings
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES, candidate_texts, check_candidates

if TYPE_CHECKING:
    from ..lens import Lens

EXPLAIN_METHODS = ("textspan", "svd", "omp")


@dataclass
class HeadTexts:
    """Description rows (explain/tables.py's columns) for `heads`, and the record metadata.json keeps."""

    method: str
    heads: list[str]
    pool: str | os.PathLike
    texts: list[str]
    rows: list[dict[str, Any]]
    metadata: dict[str, Any]


def check_method(method: str) -> None:
    if method not in EXPLAIN_METHODS:
        raise CliplensError(f"unknown explanation method {method!r}; choose from {', '.join(EXPLAIN_METHODS)}")


def check_texts_per_head(method: str, texts_per_head: int, pool_size: int, span: int) -> None:
    """Refuse, before the statistics pass, more texts per head than the pool has (or, for TextSpan, than the span
    it picks orthogonal directions in can hold), in the options' own words."""
    if texts_per_head > pool_size:
        raise CliplensError(f"--texts-per-head {texts_per_head} exceeds the text pool ({pool_size} texts); ask for "
                            "fewer or use a larger --pool")
    if method == "textspan" and texts_per_head > span:
        raise CliplensError(f"--texts-per-head {texts_per_head} exceeds the span TextSpan picks its texts in ({span}: "
                            "the smaller of --w-ov-rank and the embedding width); ask for fewer texts")


def omp_rows(
    stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str], atoms: int,
    directions: int, progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Description rows for each head's top principal directions written as `atoms` texts, and their fidelities."""
    position = {label: i for i, label in enumerate(stats.labels)}
    covariance = stats.covariance
    parts = [principal_directions(covariance[position[label]], directions)[1] for label in heads]
    omp = SparseTextDecomposition(atoms, dtype=torch.float64).fit(torch.cat(parts), text_embeddings, texts,
                                                                  progress=progress)
    rows, fidelity, target = [], {}, 0
    for label, part in zip(heads, parts):
        fidelity[label] = omp.fidelity_[target : target + len(part)].tolist()
        for index in range(len(part)):
            rows.extend(
                description_row(label, {"method": f"omp-k{atoms}", "direction": index, "rank": rank,
                                        "description": text, "coefficient": coef})
                for rank, (text, coef) in enumerate(omp.texts_[target + index])
            )
        target += len(part)
    return rows, fidelity


def head_descriptions(
    method: str, stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str], *,
    texts_per_head: int, w_ov_rank: int, max_components: int, num_directions: int, progress: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(description rows, method-specific metadata) for the given heads."""
    check_method(method)
    embeddings = text_embeddings.to(torch.float64)
    if method == "omp":
        rows, fidelity = omp_rows(stats, heads, embeddings, texts, texts_per_head, num_directions, progress)
        return rows, {"atoms": texts_per_head, "directions_per_head": num_directions, "fidelity": fidelity}
    if method == "textspan":
        explainer: Any = TextSpan(n_texts=texts_per_head, rank=w_ov_rank)
    else:
        explainer = SVDPoles(texts_per_pole=texts_per_head, max_components=max_components)
    fitted = fit_pieces(explainer, stats.moments, stats.labels, embeddings, texts, only=heads, progress=progress)
    extra = {"params": explainer.get_params()}
    if method == "svd":
        extra["components"] = {label: poles.n_components_ for label, poles in fitted.items()}
    return description_rows(fitted), extra


def explain_heads(
    lens: Lens, data_path: Any, *, method: str = "textspan",
    stats_path: str | os.PathLike | None = None, convention: str | None = None, normalize: bool | None = None,
    pool: str | os.PathLike | None = None, pool_size: int | None = None, pool_templates: str = HEAD_POOL_TEMPLATES,
    texts_per_head: int = 20, num_last_layers: int = 4, w_ov_rank: int = 80, max_components: int = 80,
    num_directions: int = 3, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> HeadTexts:
    """Name every head of the last `num_last_layers` layers with `method`, from statistics of `data_path` (or read
    from `stats_path`) and the candidate texts of `pool` (default: descriptions, or the shapes vocabulary on shapes
    data)."""
    check_method(method)
    if method == "omp":
        require_fewer_atoms(texts_per_head, lens.spec.output_dim, "--texts-per-head")
    split_heads(lens.decomposer.labels(Settings("head")), num_last_layers)  # checked now, used once the stats are in
    check_candidates(data_path, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    pool, texts, embeddings = candidate_texts(lens, data_path, HEAD_POOL, pool=pool, pool_size=pool_size,
                                              pool_templates=pool_templates, progress=progress)
    check_texts_per_head(method, texts_per_head, len(texts), min(w_ov_rank, embeddings.shape[1]))
    stats = obtain_piece_stats(lens, stats_path, data_path, convention=convention, normalize=normalize,
                               batch_size=batch_size, num_workers=num_workers, progress=progress)
    heads, _ = split_heads(stats.labels, num_last_layers)
    rows, extra = head_descriptions(method, stats, heads, embeddings, texts, texts_per_head=texts_per_head,
                                    w_ov_rank=w_ov_rank, max_components=max_components,
                                    num_directions=num_directions, progress=progress)
    metadata = {
        "model": lens.describe(),
        "statistics": statistics_record(stats, stats_path or data_path),
        "pool": {"name": pool, "size": len(texts), "templates": pool_templates},
        "heads": heads,
        "num_last_layers": num_last_layers,
        "texts_per_head": texts_per_head,
        **extra,
    }
    return HeadTexts(method, heads, pool, texts, rows, metadata)

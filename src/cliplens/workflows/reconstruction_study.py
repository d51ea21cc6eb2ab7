"""Accuracy vs texts per head when the last layers' heads are rebuilt from text
(docs/methods/reconstruction.md#protocol): the call behind
`cliplens reconstruct`.

Every head of the last `num_last_layers` layers is replaced by its reconstruction from m texts (TextSpan, SVD poles,
OMP codes of its principal directions, or TextSpan on random vectors), earlier heads by their mean, embed and MLPs
kept. Everything fitted (means, spans, text choices) comes from the reference set (evaluate/reference.py); the
accuracy is measured on the evaluation data in one pass for every method and m.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..evaluate.reconstruction import (
    METHODS, ReconstructionResult, check_methods, check_text_counts, reconstruction_accuracy, split_heads,
)
from ..evaluate.reference import evaluation_record, evaluation_source, reference_statistics
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..errors import require_seed
from ..settings import Settings
from ..stats.obtain import statistics_record
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES, candidate_texts, check_candidates

if TYPE_CHECKING:
    from ..lens import Lens


@dataclass
class ReconstructionStudy:
    """The accuracy rows and fit record (`result`), where the fits came from, and the metadata.json record."""

    result: ReconstructionResult
    where: str
    metadata: dict[str, Any]

    @property
    def images(self) -> int:
        return self.result.rows[0]["images"]


def reconstruction_study(
    lens: Lens, data_path: Any, *, methods: Sequence[str] = METHODS, counts: Sequence[int] | None = None,
    num_last_layers: int = 4, w_ov_rank: int = 80, random_seed: int = 0,
    stats_path: str | os.PathLike | None = None, fit_path: Any = None, mean_source: str = "reference",
    label: str | None = None, templates: str | None = None, convention: str | None = None,
    normalize: bool | None = None, pool: str | os.PathLike | None = None, pool_size: int | None = None,
    pool_templates: str = HEAD_POOL_TEMPLATES, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
) -> ReconstructionStudy:
    """Accuracy on `data_path` with the last layers' heads rebuilt from m texts for each method and each m in
    `counts` (default: 1, 2, 4, ... up to the smallest of `w_ov_rank`, the embedding dimension and the pool size)."""
    check_methods(methods)  # everything the passes below need is checked before the first one
    require_seed("--random-seed", random_seed)
    split_heads(lens.decomposer.labels(Settings("head")), num_last_layers)
    if counts is not None:
        check_text_counts(counts, min(w_ov_rank, lens.spec.output_dim))
    check_candidates(data_path, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    source = evaluation_source(data_path, label)
    classifier_prompts(source, templates)
    stats, where = reference_statistics(lens, source, data_path, stats_path=stats_path, fit_path=fit_path,
                                        mean_source=mean_source, convention=convention, normalize=normalize,
                                        granularity="head", batch_size=batch_size, num_workers=num_workers,
                                        progress=progress)
    pool, texts, embeddings = candidate_texts(lens, data_path, HEAD_POOL, pool=pool, pool_size=pool_size,
                                              pool_templates=pool_templates, progress=progress)
    weights = source_classifier(lens, source, templates, progress=progress)
    result = reconstruction_accuracy(
        lens, source, weights, stats, embeddings, texts, methods=methods, counts=counts,
        num_last_layers=num_last_layers, rank=w_ov_rank, seed=random_seed, batch_size=batch_size,
        num_workers=num_workers, progress=progress,
    )
    metadata = {
        "model": lens.describe(),
        "fit": {**statistics_record(stats, where), "mean_source": mean_source},
        "evaluation": evaluation_record(source, result.rows[0]["images"], templates),
        "pool": {"name": pool, "size": len(texts), "templates": pool_templates},
        **result.metadata,
    }
    return ReconstructionStudy(result, where, metadata)

"""Zero-shot accuracy with chosen pieces replaced by their mean (docs/methods/mean-ablation.md#definition): the call
behind `cliplens ablate`.

Each group of patterns is one variant (its pieces ablated together); presets add the references' variants: `mlps`
(every MLP plus embed), `cls` (TextSpan's table: the CLS→CLS attention cells, the MLPs, and both; its means need
per-token statistics, collected when needed) or `layer-curve` (attention of layers 0..k, for every k). One streaming
pass over the evaluation data scores them all; the means come from a reference set (evaluate/reference.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import CliplensError
from ..evaluate.ablation import (
    Scores, Variant, cls_variants, evaluate_variants, layer_curve, mlp_variants, nothing_ablated, pattern_variants,
)
from ..evaluate.groups import split_patterns
from ..evaluate.reference import evaluation_record, evaluation_source, reference_statistics
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..settings import Settings
from ..stats.obtain import statistics_record

if TYPE_CHECKING:
    from ..lens import Lens

PRESETS = {"mlps": mlp_variants, "cls": cls_variants, "layer-curve": layer_curve}


@dataclass
class AblationStudy:
    """The scores of every variant (the first ablates nothing), where the means came from, and the metadata record."""

    scores: Scores
    variants: list[Variant]
    where: str
    metadata: dict[str, Any]


def check_request(components: Sequence[str], presets: Sequence[str]) -> None:
    """Refuse an ablation with nothing to ablate or an unknown preset, before any work."""
    if not components and not presets:
        raise CliplensError(f"nothing to ablate: pass --components (e.g. 'L3H*,mlps') or --preset {'|'.join(PRESETS)}")
    unknown = [preset for preset in presets if preset not in PRESETS]
    if unknown:
        raise CliplensError(f"unknown preset {unknown[0]!r}; choose from {', '.join(PRESETS)}")


def study_variants(labels: Sequence[str], presets: Sequence[str], groups: Sequence[Sequence[str]]) -> list[Variant]:
    """Nothing ablated, then each preset's variants (a variant two presets share, as mlps, once), then one per
    pattern group."""
    variants = [nothing_ablated()]
    for preset in dict.fromkeys(presets):
        named = {variant.name for variant in variants}
        variants += [variant for variant in PRESETS[preset](labels)[1:] if variant.name not in named]
    return variants + pattern_variants(labels, groups)


def ablation_study(
    lens: Lens, data_path: Any, *, components: Sequence[str] = (), presets: Sequence[str] = (),
    stats_path: str | os.PathLike | None = None, fit_path: Any = None, mean_source: str = "reference",
    label: str | None = None, templates: str | None = None, granularity: str | None = None,
    convention: str | None = None, normalize: bool | None = None, batch_size: int = 32, num_workers: int = 0,
    progress: bool = False,
) -> AblationStudy:
    """Accuracy on `data_path` with each variant mean-ablated: one per comma-separated pattern group in
    `components`, plus those of each preset; `label` re-labels shapes data by another attribute."""
    check_request(components, presets)
    groups = [split_patterns(text) for text in components]
    if stats_path is None:  # collected below: a pattern that names no piece is found before that pass, not after
        pattern_variants(lens.decomposer.labels(Settings(granularity or "head", convention=convention or "separate")),
                         groups)
    source = evaluation_source(data_path, label)
    classifier_prompts(source, templates)
    stats, where = reference_statistics(lens, source, data_path, stats_path=stats_path, fit_path=fit_path,
                                        mean_source=mean_source, convention=convention, normalize=normalize,
                                        granularity=granularity, spatial="cls" in presets, batch_size=batch_size,
                                        num_workers=num_workers, progress=progress)
    variants = study_variants(stats.labels, presets, groups)
    weights = source_classifier(lens, source, templates, progress=progress)
    scores = evaluate_variants(lens, source, variants, weights, stats, batch_size=batch_size,
                               num_workers=num_workers, progress=progress)
    metadata = {
        "model": lens.describe(),
        "means": {**statistics_record(stats, where), "mean_source": mean_source},
        "evaluation": evaluation_record(source, scores.count, templates),
        "variants": {variant.name: list(variant.ablated) + (["CLS cells"] if variant.cls else [])
                     for variant in variants},
    }
    return AblationStudy(scores, variants, where, metadata)

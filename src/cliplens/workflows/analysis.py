"""Analyse once (docs/methods/analysis.md): every statistic and every zero-shot score asked for, from at most two
passes over the fit data and one over the evaluation data; the call behind `cliplens analyze`.

The fit passes (stats/fit_passes.py) collect what the explainers read. Between the passes everything an evaluation
fits is fixed (ablation means, reconstruction bases chosen from text), so every variant of every question and label
is scored in the one evaluation pass (evaluate/ablation.py `score_tasks`). The folder written holds each statistic as
its own command would save it and the scores keyed by what was scored, so commands given the folder answer from it
without touching an image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch.utils.data import Subset

from ..apps.principal_images import COMPONENTS, PART, TOP_K, PrincipalImages, head_directions, image_bytes, pool_record
from ..data.loader import Batch, as_source, fingerprint
from ..decompose.second_order import check_layer
from ..errors import CliplensError
from ..evaluate.ablation import Relabelled, Task, VariantScorer, scored_tasks, true_classes
from ..evaluate.reconstruction import METHODS, check_methods, check_text_counts, reconstruction_variants, split_heads
from ..evaluate.piece_edits import head_labels
from ..evaluate.reference import evaluation_source
from ..evaluate.second_order_ablation import VARIANTS, SecondOrderBoard
from ..evaluate.stored_scores import SCORES, scores_file
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..io.artifacts import ANALYSIS, save_parts
from ..io.compat import fitted_on
from ..settings import Settings
from ..stats.collect import PAIRS, PIECES, PieceStats
from ..stats.fit_passes import FitRequest, FitStatistics, fit_statistics, one_pass
from ..stats.second_order import analysis_part
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES, candidate_texts, check_candidates
from .ablation_study import PRESETS, study_variants

if TYPE_CHECKING:
    from ..lens import Lens

QUESTIONS = ("statistics", "pairs", "second-order", "head-images", "ablate", "reconstruct")
EVALUATIONS = ("ablate", "reconstruct")
SAMPLE_BATCHES = 2  # timed by a dry run


@dataclass(frozen=True)
class Plan:
    """What an analysis collects and scores; checked against the model before any pass."""

    questions: tuple[str, ...]
    fit: FitRequest
    presets: tuple[str, ...] = ()
    labels: tuple[str | None, ...] = (None,)
    methods: tuple[str, ...] = METHODS
    texts: tuple[int, ...] | None = None
    num_last_layers: int = 4
    pool: str | os.PathLike | None = None
    pool_size: int | None = None
    pool_templates: str = HEAD_POOL_TEMPLATES
    templates: str | None = None
    head_components: int = COMPONENTS  # head-images: components per head and images per end
    head_top: int = TOP_K

    scored: bool = False  # labelled evaluation data given: second-order layers are ablated on it too

    @property
    def evaluations(self) -> list[str]:
        return [question for question in self.questions if question in EVALUATIONS]

    def passes(self) -> dict[str, int]:
        scored = self.evaluations or (self.scored and self.fit.mlp_layers)
        return {"fit": self.fit.passes(), "evaluation": 1 if scored else 0}


def plan_analysis(lens: Lens, questions: Sequence[str], *, every: bool = False, scored: bool = False,
                  mlp_layers: Sequence[int] = (),
                  presets: Sequence[str] = (), labels: Sequence[str] = (), methods: Sequence[str] = METHODS,
                  texts: Sequence[int] | None = None, num_last_layers: int = 4, pool: str | os.PathLike | None = None,
                  pool_size: int | None = None, pool_templates: str = HEAD_POOL_TEMPLATES,
                  templates: str | None = None, head_components: int = COMPONENTS, head_top: int = TOP_K) -> Plan:
    """The plan for `questions` (or every question this model supports, `every`; evaluations only when there is data
    to score them on, `scored`), refused in one line where the model cannot answer one."""
    vit = lens.kind == "vit"
    if every:  # on a ViT: second-order with the layers named, head images, evaluations with data, every preset
        questions = (["statistics", "pairs"] if not vit else
                     ["statistics"] + ["second-order"] * bool(mlp_layers) + ["head-images"])
        questions += list(EVALUATIONS) if vit and scored else []
        presets = presets or tuple(PRESETS)
    questions = tuple(dict.fromkeys(questions))
    if scored and not any(q in ("second-order", *EVALUATIONS) for q in questions):
        raise CliplensError("--data-path is scored by ablate, reconstruct and the second-order ablations; ask for one "
                            "of them or drop it")
    if not questions:
        raise CliplensError(f"nothing to analyse: pass --ask ({', '.join(QUESTIONS)}) or --all")
    unknown = [q for q in questions if q not in QUESTIONS]
    if unknown:
        raise CliplensError(f"unknown question {unknown[0]!r}; choose from {', '.join(QUESTIONS)}")
    if not vit and any(q in ("second-order", "head-images", *EVALUATIONS) for q in questions):
        raise CliplensError("on a ResNet, analyze collects statistics and pairs (with their top images); "
                            "second-order, head-images, ablate and reconstruct read ViT pieces")
    if vit and "pairs" in questions:
        raise CliplensError("pairs exist for ResNet CLIP models only; ask a ViT for second-order neurons instead")
    if ("second-order" in questions) != bool(mlp_layers):
        raise CliplensError("second-order and --mlp-layer go together: name the MLP layers whose neurons to explain")
    for layer in mlp_layers:
        check_layer(lens.decomposer, layer)
    unknown = [preset for preset in presets if preset not in PRESETS]
    if unknown:
        raise CliplensError(f"unknown preset {unknown[0]!r}; choose from {', '.join(PRESETS)}")
    if "ablate" in questions and not presets:
        raise CliplensError(f"ablate needs --preset ({', '.join(PRESETS)}): the variants to score")
    if "reconstruct" in questions:
        check_methods(methods)
        split_heads(lens.decomposer.labels(Settings("head")), num_last_layers)
        if texts is not None:
            check_text_counts(texts, lens.spec.output_dim)
    for name, value in (("--head-components", head_components), ("--head-top", head_top)):
        if not isinstance(value, int) or value < 1:
            raise CliplensError(f"{name} must be a positive whole number, got {value!r}")
    fit = FitRequest(pieces=True, pairs="pairs" in questions, mlp_layers=tuple(mlp_layers),
                     head_images="head-images" in questions)
    return Plan(questions, fit, tuple(presets), tuple(labels) or (None,), tuple(methods),
                None if texts is None else tuple(texts), num_last_layers, pool, pool_size, pool_templates, templates,
                head_components, head_top, scored)


@dataclass
class Analysis:
    """The statistics, the stored scores and the record of one analysis."""

    plan: Plan
    fit: FitStatistics
    images: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # the part head-images
    scores: dict[str, dict[str, Any]] = field(default_factory=lambda: {"tasks": {}, "second_order": {}})
    record: dict[str, Any] = field(default_factory=dict)

    def save(self, folder: str | os.PathLike) -> Path:
        """One folder: a part per statistic (read back by `--stats`, `--fit-path` or `--data-path`) and the scores."""
        parts = {}
        if self.fit.pieces is not None:
            parts[PIECES] = self.fit.pieces.artifact()
        if self.fit.pairs is not None:
            parts[PAIRS] = self.fit.pairs.artifact()
        for layer, stats in self.fit.second_order.items():
            parts[analysis_part(layer)] = stats.artifact()
        if self.images is not None:
            parts[PART] = self.images
        text = scores_file(self.scores["tasks"], self.scores["second_order"])
        return save_parts(folder, parts, {"kind": ANALYSIS, **self.record},
                          {SCORES: lambda file: file.write_text(text, encoding="utf-8")})


def check_data(plan: Plan, fit_path: Any, data_path: Any) -> None:
    """Refuse, before any pass, evaluation data that cannot be scored as asked."""
    if plan.evaluations and data_path is None:  # (second-order layers are ablated only when data is given)
        raise CliplensError(f"{' and '.join(plan.evaluations)} score zero-shot accuracy: pass the labelled evaluation "
                            "data with --data-path")
    for label in plan.labels if plan.passes()["evaluation"] else ():
        classifier_prompts(evaluation_source(data_path, label), plan.templates)
    if "reconstruct" in plan.questions or "head-images" in plan.questions:
        check_candidates(fit_path, HEAD_POOL, pool=plan.pool, pool_templates=plan.pool_templates)


def head_images(lens: Lens, fit_path: Any, plan: Plan) -> tuple[Callable[[PieceStats], Callable[[Batch], None]],
                                                                   list[PrincipalImages]]:
    """The reader of pass 2 that keeps every head's top and bottom images along its first principal components
    (docs/methods/retrieval.md#principal), built from pass 1's piece statistics; and the list it puts its reducer in."""
    made: list[PrincipalImages] = []

    def later(pieces: PieceStats) -> Callable[[Batch], None]:
        name, texts, embeddings = candidate_texts(lens, fit_path, HEAD_POOL, pool=plan.pool, pool_size=plan.pool_size,
                                                  pool_templates=plan.pool_templates)
        directions = head_directions(pieces, head_labels(pieces.labels), embeddings, texts,
                                     pool=pool_record(name, plan.pool_size, plan.pool_templates))
        made.append(PrincipalImages(directions, plan.head_components, plan.head_top))
        return lambda batch: made[0].update(lens, batch.images, batch.indices)

    return later, made


def analyze(lens: Lens, fit_path: Any, data_path: Any, plan: Plan, *, batch_size: int = 32, num_workers: int = 0,
            progress: bool = False) -> Analysis:
    """Collect the statistics of `plan` over `fit_path` and score its evaluations on `data_path`, in
    `plan.passes()` passes."""
    check_data(plan, fit_path, data_path)
    started = time.perf_counter()
    later, made = head_images(lens, fit_path, plan) if plan.fit.head_images else (None, [])
    fit = fit_statistics(lens, fit_path, plan.fit, batch_size=batch_size, num_workers=num_workers, progress=progress,
                         later=later)
    seconds = {"fit": time.perf_counter() - started}
    images = made[0].artifact(lens, as_source(fit_path), fit.ranked) if made else None
    analysis = Analysis(plan, fit, images)
    evaluation = None
    if plan.passes()["evaluation"]:
        started = time.perf_counter()
        evaluation = evaluate(lens, plan, fit, fit_path, data_path, analysis, batch_size=batch_size,
                              num_workers=num_workers, progress=progress)
        seconds["evaluation"] = time.perf_counter() - started
    analysis.record = {
        **lens.describe(), "architecture": lens.kind, "questions": list(plan.questions), "passes": plan.passes(),
        "fit": {"data": _spec(fit_path), "fingerprint": fingerprint(as_source(fit_path)), "images": fit.pieces.count,
                "mlp_layers": list(plan.fit.mlp_layers)},
        "evaluation": evaluation, "presets": list(plan.presets), "seconds": seconds,
    }
    return analysis


def evaluate(lens: Lens, plan: Plan, fit: FitStatistics, fit_path: Any, data_path: Any, analysis: Analysis, *,
             batch_size: int, num_workers: int, progress: bool) -> dict[str, Any]:
    """The one evaluation pass: every variant of every task and every second-order ablation, for every label, from
    one forward per batch; their counts go to `analysis.scores` and the pass's record is returned."""
    tasks, weights = evaluation_tasks(lens, plan, fit, fit_path, data_path, progress=progress)
    scorer = VariantScorer(lens, tasks, fit.pieces) if tasks else None
    boards = [(SecondOrderBoard(lens, stats, w), relabelled) for stats in fit.second_order.values()
              for w, relabelled in weights]

    def read(batch: Batch) -> None:
        if scorer is not None:
            scorer.update(batch)
        for board, relabelled in boards:
            board.update(batch.images, true_classes(batch, relabelled))

    source = as_source(data_path)
    report = one_pass(lens, source, read, description=f"analyse {lens.name} (evaluation)", labelled=True,
                      batch_size=batch_size, num_workers=num_workers, progress=progress)
    if scorer is not None:
        scores = scorer.scores(report.loaded, fitted_on(fit.pieces.metadata, fingerprint(source)))
        analysis.scores["tasks"] = scored_tasks(tasks, scores, fit.pieces)
    analysis.scores["second_order"] = {board.key(): {**board.stored(), "skipped": len(report.skipped)}
                                       for board, _ in boards}
    return {"data": _spec(data_path), "fingerprint": fingerprint(source), "images": report.loaded,
            "skipped": len(report.skipped), "labels": list(plan.labels),
            "questions": plan.evaluations + ["second-order ablation"] * bool(boards),
            "variants": sum(len(task.variants) for task in tasks) + len(VARIANTS) * len(boards)}


def evaluation_tasks(lens: Lens, plan: Plan, fit: FitStatistics, fit_path: Any, data_path: Any, *,
                     progress: bool = False) -> tuple[list[Task], list[tuple[torch.Tensor, Relabelled | None]]]:
    """Every variant the plan's evaluations score, one task per (question, label), all fixed before the pass; and
    each label's classifier with where its true classes come from (for the second-order ablations)."""
    stats, variants = fit.pieces, {}
    if "ablate" in plan.questions:
        variants["ablate"] = study_variants(stats.labels, plan.presets, ())
    if "reconstruct" in plan.questions:
        _, texts, embeddings = candidate_texts(lens, fit_path, HEAD_POOL, pool=plan.pool, pool_size=plan.pool_size,
                                               pool_templates=plan.pool_templates, progress=progress)
        variants["reconstruct"] = reconstruction_variants(lens, stats, embeddings, texts, methods=plan.methods,
                                                          counts=plan.texts, num_last_layers=plan.num_last_layers,
                                                          progress=progress)
    own = as_source(data_path)
    tasks, classifiers = [], []
    for label in plan.labels:
        source = evaluation_source(data_path, label)
        weights = source_classifier(lens, source, plan.templates, progress=progress)
        same = getattr(source, "fingerprint", None) == getattr(own, "fingerprint", None)
        relabelled = None if same else Relabelled(source)  # shared: its classes are read once per batch
        tasks += [Task(group, weights, relabelled) for group in variants.values()]
        classifiers.append((weights, relabelled))
    return tasks, classifiers


def sample_plan(lens: Lens, fit_path: Any, plan: Plan, *, batch_size: int = 32,
                num_workers: int = 0) -> dict[str, Any]:
    """What a dry run prints: each statistic's size on disk (exact: sizes do not grow with the images) and the time
    of the passes, extrapolated from `SAMPLE_BATCHES` timed batches of the fit passes."""
    source = as_source(fit_path)
    sample = Subset(source, range(min(len(source), SAMPLE_BATCHES * batch_size)))
    started = time.perf_counter()
    later, _ = head_images(lens, fit_path, plan) if plan.fit.head_images else (None, [])
    fit = fit_statistics(lens, sample, plan.fit, batch_size=batch_size, num_workers=num_workers, later=later)
    per_image_pass = (time.perf_counter() - started) / (len(sample) * fit.passes)
    sizes = {}
    if fit.pieces is not None:
        sizes[PIECES] = _bytes(fit.pieces.artifact()[0])
    if fit.pairs is not None:
        sizes[PAIRS] = _bytes(fit.pairs.artifact()[0])
    for layer, stats in fit.second_order.items():
        sizes[analysis_part(layer)] = _bytes(stats.artifact()[0])
    if plan.fit.head_images:
        sizes[PART] = image_bytes(len(head_labels(fit.pieces.labels)), plan.head_components, plan.head_top,
                                  lens.spec.output_dim)
    return {"sizes": sizes, "passes": plan.passes(), "images": len(source),
            "seconds_per_image_and_pass": per_image_pass,
            "fit_seconds": per_image_pass * len(source) * plan.fit.passes()}


def _bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


def _spec(data: Any) -> str | None:
    """How the data was named, so the analysis can be read as data again (None for a Python dataset)."""
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        return text if text.startswith(("shapes:", "waterbirds:", "stanford-cars:")) else os.path.abspath(text)
    return None

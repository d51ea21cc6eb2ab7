"""Analyse once (docs/methods/analysis.md): every statistic and every zero-shot score asked for, from at most two
passes over the fit data and one over the evaluation data; the call behind `cliplens analyze`.

The fit passes (stats/fit_passes.py) collect what the explainers read. Between the passes everything an evaluation
fits is fixed (ablation means, reconstruction bases chosen from text, ResNet pair masks and the pairs' directions
written in words), so every variant of every question and label is scored in the one evaluation pass
(evaluate/ablation.py `score_tasks`, evaluate/pair_ablation.py `PairReading`). The folder written holds each
statistic as its own command would save it and the scores keyed by what was scored, so commands given the folder
answer from it without touching an image.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch.utils.data import Subset

from ..apps.principal_images import COMPONENTS, PART, TOP_K, PrincipalImages, head_directions, image_bytes, pool_record
from ..apps.segmentation import usable_lenses
from ..data.loader import Batch, as_source, fingerprint
from ..data.segmentation import segmentation_source
from ..decompose.second_order import check_layer
from ..errors import CliplensError, require_positive_int
from ..evaluate.ablation import Relabelled, Task, VariantScorer, scored_tasks, true_classes
from ..evaluate.pair_ablation import DEFAULT_KEEPS, NEURON_MOMENTS, PairReading, check_keep, neuron_moments_part
from ..evaluate.reconstruction import METHODS, check_methods, check_text_counts, reconstruction_variants, split_heads
from ..evaluate.piece_edits import head_labels
from ..evaluate.reference import evaluation_source
from ..evaluate.second_order_ablation import VARIANTS, SecondOrderBoard
from ..evaluate.stored_scores import SCORES, scores_file
from ..evaluate.zeroshot import classifier_prompts, source_classifier
from ..explain.omp import DictNorm, require_fewer_atoms
from ..io.artifacts import ANALYSIS, save_parts
from ..io.compat import MODEL_KEY, fitted_on
from ..settings import Settings
from ..stats.collect import PAIRS, PIECES, PieceStats
from ..stats.checkpoint import EVERY, Checkpoints, Passes
from ..stats.fit_passes import FitRequest, FitStatistics, fit_statistics
from ..stats.moments import Moments
from ..stats.pairs import PairStats
from ..stats.second_order import RANKED_SHAPES, analysis_part
from ..text.candidates import (
    HEAD_POOL, HEAD_POOL_TEMPLATES, UNIT_POOL, UNIT_POOL_TEMPLATES, candidate_texts, check_candidates,
)
from .ablation_study import PRESETS, study_variants
from .segmentation import (
    SEGMENTATION, SegmentationCounts, SegmentationRequest, class_texts, segmentation_pass, segmentation_request,
)
from .pair_study import pair_texts, pair_variants

if TYPE_CHECKING:
    from ..lens import Lens

QUESTIONS = ("statistics", "pairs", "second-order", "head-images", "ablate", "reconstruct", "pair-ablate", "segment")
EVALUATIONS = ("ablate", "reconstruct", "pair-ablate")
VIT_EVALUATIONS = ("ablate", "reconstruct")
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
    pool_templates: str | None = None  # None: each question's own (its command's default)
    templates: str | None = None
    keeps: tuple[float, ...] = DEFAULT_KEEPS  # pair-ablate: the union of what `pairs` and `neuron-ablate` keep
    omp_atoms: int | None = None
    dict_norm: DictNorm = "row"
    head_components: int = COMPONENTS  # head-images: components per head and images per end
    head_top: int = TOP_K

    scored: bool = False  # labelled evaluation data given: second-order layers are ablated on it too
    segment: SegmentationRequest | None = None  # what the pass over the segmentation split computes

    @property
    def evaluations(self) -> list[str]:
        return [question for question in self.questions if question in EVALUATIONS]

    @property
    def unit_templates(self) -> str:
        """The templates pair words are embedded with, as `pairs` and `neuron-ablate` embed them."""
        return UNIT_POOL_TEMPLATES if self.pool_templates is None else self.pool_templates

    @property
    def head_templates(self) -> str:
        """The templates reconstruction texts are embedded with, as `reconstruct` embeds them."""
        return HEAD_POOL_TEMPLATES if self.pool_templates is None else self.pool_templates

    def digest(self) -> str:
        """Every setting of the plan, as one digest: what a resumed analysis must share with the interrupted one."""
        return hashlib.sha256(repr(self).encode()).hexdigest()

    def passes(self) -> dict[str, int]:
        scored = self.evaluations or (self.scored and self.fit.mlp_layers)
        segmentation = {"segmentation": 1} if self.segment is not None else {}
        return {"fit": self.fit.passes(), "evaluation": 1 if scored else 0, **segmentation}


def plan_analysis(lens: Lens, questions: Sequence[str], *, every: bool = False, scored: bool = False,
                  mlp_layers: Sequence[int] = (),
                  presets: Sequence[str] = (), labels: Sequence[str] = (), methods: Sequence[str] = METHODS,
                  texts: Sequence[int] | None = None, num_last_layers: int = 4, pool: str | os.PathLike | None = None,
                  pool_size: int | None = None, pool_templates: str | None = None, templates: str | None = None,
                  keeps: Sequence[float] = DEFAULT_KEEPS, omp_atoms: int | None = None,
                  dict_norm: DictNorm = "row", segmented: bool = False, lenses: Sequence[str] = (),
                  last_layers: int = 4, heads: str | None = None, top_neurons: int | None = None,
                  top_pairs: int | None = None, threshold: float | None = None, examples: int = 6,
                  head_components: int = COMPONENTS, head_top: int = TOP_K) -> Plan:
    """The plan for `questions` (or every question this model supports, `every`; evaluations only when there is data
    to score them on, `scored`; segment when a segmentation split is given, `segmented`), refused in one line where
    the model cannot answer one. `lenses` and the options after it are `segment`'s, whose second-order lens reads the
    `mlp_layers` (segment's default when none are named)."""
    vit = lens.kind == "vit"
    if every:  # second-order with the layers named, head images on a ViT, evaluations with data, every preset
        questions = (["statistics", "pairs"] if not vit else
                     ["statistics"] + ["second-order"] * bool(mlp_layers) + ["head-images"])
        questions += ([*VIT_EVALUATIONS] if vit else ["pair-ablate"]) if scored else []
        questions += ["segment"] if segmented else []
        presets = presets or tuple(PRESETS)
        lenses = lenses or (tuple(usable_lenses(lens)) if segmented else ())
    questions = tuple(dict.fromkeys(questions))
    if scored and not any(q in ("second-order", *EVALUATIONS) for q in questions):
        raise CliplensError("--data-path is scored by ablate, reconstruct, pair-ablate and the second-order ablations; "
                            "ask for one of them or drop it")
    if not questions:
        raise CliplensError(f"nothing to analyse: pass --ask ({', '.join(QUESTIONS)}) or --all")
    unknown = [q for q in questions if q not in QUESTIONS]
    if unknown:
        raise CliplensError(f"unknown question {unknown[0]!r}; choose from {', '.join(QUESTIONS)}")
    if not vit and any(q in ("second-order", "head-images", *VIT_EVALUATIONS) for q in questions):
        raise CliplensError("on a ResNet, analyze collects statistics and pairs and scores pair-ablate; second-order, "
                            "head-images, ablate and reconstruct read ViT pieces")
    if vit and ("pairs" in questions or "pair-ablate" in questions):
        raise CliplensError("pairs exist for ResNet CLIP models only; ask a ViT for second-order neurons instead")
    segment = _segment_request(lens, questions, segmented, lenses, mlp_layers, last_layers=last_layers, heads=heads,
                               top_neurons=top_neurons, top_pairs=top_pairs, threshold=threshold, examples=examples)
    if "second-order" in questions and not mlp_layers:
        raise CliplensError("second-order and --mlp-layer go together: name the MLP layers whose neurons to explain")
    if mlp_layers and "second-order" not in questions and "second-order" not in (segment.lenses if segment else ()):
        raise CliplensError("--mlp-layer names the layers of second-order (and of segment's second-order lens): ask "
                            "for one of them or drop it")
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
    keeps = tuple(dict.fromkeys(check_keep(keep) for keep in keeps))
    if "pair-ablate" in questions:
        require_fewer_atoms(omp_atoms, lens.spec.output_dim)
    require_positive_int("--head-components", head_components)
    require_positive_int("--head-top", head_top)
    fit = FitRequest(pieces=questions != ("segment",), pairs=bool({"pairs", "pair-ablate"} & set(questions)),
                     mlp_layers=tuple(mlp_layers) if "second-order" in questions else (),
                     head_images="head-images" in questions)
    return Plan(questions, fit, tuple(presets), tuple(labels) or (None,), tuple(methods),
                None if texts is None else tuple(texts), num_last_layers, pool, pool_size, pool_templates, templates,
                keeps, omp_atoms, dict_norm, head_components, head_top, scored, segment)


def _segment_request(lens: Lens, questions: Sequence[str], segmented: bool, lenses: Sequence[str],
                     mlp_layers: Sequence[int], **options: Any) -> SegmentationRequest | None:
    """segment's request, checked as `segment` checks it; --segment-path, --lens and segment's settings go with
    --ask segment."""
    if "segment" not in questions:
        given = [name for name, value in (("--segment-path", segmented), ("--lens", lenses),
                                          ("--heads", options["heads"]), ("--top-neurons", options["top_neurons"]),
                                          ("--top-pairs", options["top_pairs"]),
                                          ("--threshold", options["threshold"] is not None)) if value]
        if given:
            raise CliplensError(f"{given[0]} is read by segment: ask for it (--ask segment) or drop {given[0]}")
        return None
    if not segmented:
        raise CliplensError("segment needs the images with masks: pass --segment-path")
    if not lenses:
        raise CliplensError(f"segment needs its lenses: pass --lens ({', '.join(usable_lenses(lens))})")
    return segmentation_request(lens, lenses, mlp_layers=mlp_layers or None, **options)


@dataclass
class Analysis:
    """The statistics, the stored scores and the record of one analysis."""

    plan: Plan
    fit: FitStatistics
    scores: dict[str, dict[str, Any]] = field(default_factory=lambda: {"tasks": {}, "second_order": {}, "pairs": {}})
    neuron_moments: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # pair-ablate: the `pairs` part
    images: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None  # the part head-images
    record: dict[str, Any] = field(default_factory=dict)
    segmentation: SegmentationCounts | None = None

    def save(self, folder: str | os.PathLike) -> Path:
        """One folder: a part per statistic (read back by `--stats`, `--fit-path` or `--data-path`) and the scores."""
        parts = {}
        if self.fit.pieces is not None:
            parts[PIECES] = self.fit.pieces.artifact()
        if self.fit.pairs is not None:
            parts[PAIRS] = self.fit.pairs.artifact()
        for layer, stats in self.fit.second_order.items():
            parts[analysis_part(layer)] = stats.artifact()
        if self.neuron_moments is not None:
            parts[NEURON_MOMENTS] = self.neuron_moments
        if self.images is not None:
            parts[PART] = self.images
        if self.segmentation is not None:
            parts[SEGMENTATION] = self.segmentation.artifact()
        text = scores_file(self.scores["tasks"], self.scores["second_order"], self.scores["pairs"])
        return save_parts(folder, parts, {"kind": ANALYSIS, **self.record},
                          {SCORES: lambda file: file.write_text(text, encoding="utf-8")})


def check_data(plan: Plan, fit_path: Any, data_path: Any, segment_path: Any = None) -> None:
    """Refuse, before any pass, evaluation data that cannot be scored as asked, and a segmentation split whose
    classes cannot be prompted."""
    if plan.evaluations and data_path is None:  # (second-order layers are ablated only when data is given)
        raise CliplensError(f"{' and '.join(plan.evaluations)} score zero-shot accuracy: pass the labelled evaluation "
                            "data with --data-path")
    for label in plan.labels if plan.passes()["evaluation"] else ():
        classifier_prompts(evaluation_source(data_path, label), plan.templates)
    if "reconstruct" in plan.questions or "head-images" in plan.questions:
        check_candidates(fit_path, HEAD_POOL, pool=plan.pool, pool_templates=plan.head_templates)
    if "pair-ablate" in plan.questions and plan.omp_atoms != 0:  # pairs name their words after the evaluation data
        check_candidates(data_path, UNIT_POOL, pool=plan.pool, pool_templates=plan.unit_templates)
    if plan.segment is not None:
        class_texts(segmentation_source(segment_path))


def head_images(lens: Lens, fit_path: Any, plan: Plan) -> Callable[[PieceStats], PrincipalImages]:
    """What builds, from pass 1's piece statistics, the reader of pass 2 that keeps every head's top and bottom images
    along its first principal components (docs/methods/retrieval.md#principal)."""

    def later(pieces: PieceStats) -> PrincipalImages:
        name, texts, embeddings = candidate_texts(lens, fit_path, HEAD_POOL, pool=plan.pool, pool_size=plan.pool_size,
                                                  pool_templates=plan.head_templates)
        directions = head_directions(pieces, head_labels(pieces.labels), embeddings, texts,
                                     pool=pool_record(name, plan.pool_size, plan.head_templates),
                                     spans=lens.decomposer.head_spans(pieces.settings))
        return PrincipalImages(directions, plan.head_components, plan.head_top)

    return later


def analyze(lens: Lens, fit_path: Any, data_path: Any, plan: Plan, *, segment_path: Any = None, batch_size: int = 32,
            num_workers: int = 0, progress: bool = False, checkpoint_dir: str | os.PathLike | None = None,
            checkpoint_every: int = EVERY, resume: bool = False) -> Analysis:
    """Collect the statistics of `plan` over `fit_path`, score its evaluations on `data_path` and segment
    `segment_path`, in `plan.passes()` passes.

    Long runs: with `checkpoint_dir`, every pass's running state (and the finished passes' results) is saved there
    every `checkpoint_every` batches, and `resume=True` continues from it: the analysis is bit-identical to an
    uninterrupted one."""
    check_data(plan, fit_path, data_path, segment_path)
    fit_source = as_source(fit_path)  # read once here: a folder's listing is a scan of it
    identity = {"pass": "analyze", MODEL_KEY: lens.fingerprint, "model": lens.name, "precision": lens.precision,
                "plan": plan.digest(), "batch_size": batch_size, "fit_fingerprint": fingerprint(fit_source),
                "data_fingerprint": None if data_path is None else fingerprint(as_source(data_path)),
                "segment_fingerprint": None if segment_path is None else fingerprint(segmentation_source(segment_path))}
    passes = Passes(Checkpoints(checkpoint_dir, "analyze", identity, checkpoint_every), resume)
    started = time.perf_counter()
    later = head_images(lens, fit_path, plan) if plan.fit.head_images else None
    fit = fit_statistics(lens, fit_path, plan.fit, batch_size=batch_size, num_workers=num_workers, progress=progress,
                         later=later, passes=passes)
    seconds = {"fit": time.perf_counter() - started}
    images = fit.later.artifact(lens, fit_source, fit.ranked) if fit.later is not None else None
    analysis = Analysis(plan, fit, images=images)
    evaluation = None
    if plan.passes()["evaluation"]:
        started = time.perf_counter()
        evaluation = evaluate(lens, plan, fit, fit_path, data_path, analysis, batch_size=batch_size,
                              num_workers=num_workers, progress=progress, passes=passes)
        seconds["evaluation"] = time.perf_counter() - started
    segmentation = None
    if plan.segment is not None:
        started = time.perf_counter()
        analysis.segmentation = segmentation_pass(
            lens, segment_path, plan.segment, batch_size=batch_size, num_workers=num_workers, progress=progress,
            description=f"analyse {lens.name} (segmentation)", passes=passes)
        seconds["segmentation"] = time.perf_counter() - started
        counts = analysis.segmentation
        segmentation = {"data": counts.data["data_path"], "fingerprint": counts.data["data_fingerprint"],
                        "images": counts.report.loaded, "lenses": list(plan.segment.lenses)}
    analysis.record = {
        **lens.describe(), "architecture": lens.kind, "questions": list(plan.questions), "passes": plan.passes(),
        "fit": {"data": _spec(fit_path), "fingerprint": identity["fit_fingerprint"],
                "images": fit.report.loaded if fit.report else 0,
                "mlp_layers": list(plan.fit.mlp_layers)},
        "evaluation": evaluation, "segmentation": segmentation, "presets": list(plan.presets), "seconds": seconds,
    }
    return analysis


def evaluate(lens: Lens, plan: Plan, fit: FitStatistics, fit_path: Any, data_path: Any, analysis: Analysis, *,
             batch_size: int, num_workers: int, progress: bool, passes: Passes) -> dict[str, Any]:
    """The one evaluation pass: every variant of every task and every second-order ablation, for every label, from
    one forward per batch; their counts go to `analysis.scores` and the pass's record is returned."""
    tasks, weights = evaluation_tasks(lens, plan, fit, fit_path, data_path, progress=progress)
    scorer = VariantScorer(lens, tasks, fit.pieces) if tasks else None
    boards = [(SecondOrderBoard(lens, stats, w), relabelled) for stats in fit.second_order.values()
              for w, relabelled in weights]
    pairs = pair_reading(lens, plan, fit, data_path, weights, progress=progress)

    def read(batch: Batch) -> None:
        if scorer is not None:
            scorer.update(batch)
        for board, relabelled in boards:
            board.update(batch.images, true_classes(batch, relabelled))
        if pairs is not None:
            pairs.update(batch)

    source = as_source(data_path)
    readers = {**({"variants": scorer} if scorer is not None else {}),
               **{f"second-order-{b}": board for b, (board, _) in enumerate(boards)},
               **({"pairs": pairs} if pairs is not None else {})}
    report = passes.run(lens, source, "evaluation", readers, read, description=f"analyse {lens.name} (evaluation)",
                        labelled=True, batch_size=batch_size, num_workers=num_workers, progress=progress)
    if scorer is not None:
        scores = scorer.scores(report.loaded, fitted_on(fit.pieces.metadata, fingerprint(source)))
        analysis.scores["tasks"] = scored_tasks(tasks, scores, fit.pieces)
    analysis.scores["second_order"] = {board.key(): {**board.stored(), "skipped": len(report.skipped)}
                                       for board, _ in boards}
    pair_variants_scored = 0
    if pairs is not None:
        for board, _ in pairs.boards:
            entry = analysis.scores["pairs"].setdefault(board.key(fit.pairs), {"count": board.count, "variants": {}})
            entry["variants"].update(board.stored()["variants"])
        analysis.neuron_moments = neuron_moments_part(pairs.moments, lens, source)
        pair_variants_scored = len(pairs.variants) * len(pairs.boards)
    return {"data": _spec(data_path), "fingerprint": fingerprint(source), "images": report.loaded,
            "skipped": len(report.skipped), "labels": list(plan.labels),
            "questions": plan.evaluations + ["second-order ablation"] * bool(boards),
            "variants": sum(len(task.variants) for task in tasks) + len(VARIANTS) * len(boards) + pair_variants_scored}


def pair_reading(lens: Lens, plan: Plan, fit: FitStatistics, data_path: Any,
                 classifiers: Sequence[tuple[torch.Tensor, Relabelled | None]], *,
                 progress: bool = False) -> PairReading | None:
    """pair-ablate: every variant `pairs` and `neuron-ablate` score with the plan's settings (both levels, each keep,
    the words of each pair's principal direction chosen from the pool before the pass) for every label, and the
    neurons' moments `pairs` describes the evaluation data with."""
    if "pair-ablate" not in plan.questions:
        return None
    text = pair_texts(lens, fit.pairs, data_path, omp_atoms=plan.omp_atoms, dict_norm=plan.dict_norm, pool=plan.pool,
                      pool_size=plan.pool_size, pool_templates=plan.unit_templates, progress=progress)
    variants = pair_variants(lens, fit.pairs, plan.keeps, ("pair", "neuron"), text)
    return PairReading(lens, fit.pairs, variants, classifiers)


def evaluation_tasks(lens: Lens, plan: Plan, fit: FitStatistics, fit_path: Any, data_path: Any, *,
                     progress: bool = False) -> tuple[list[Task], list[tuple[torch.Tensor, Relabelled | None]]]:
    """Every variant the plan's evaluations score, one task per (question, label), all fixed before the pass; and
    each label's classifier with where its true classes come from (for the second-order ablations)."""
    stats, variants = fit.pieces, {}
    if "ablate" in plan.questions:
        variants["ablate"] = study_variants(stats.labels, plan.presets, ())
    if "reconstruct" in plan.questions:
        _, texts, embeddings = candidate_texts(lens, fit_path, HEAD_POOL, pool=plan.pool, pool_size=plan.pool_size,
                                               pool_templates=plan.head_templates, progress=progress)
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
    """What a dry run prints: each statistic's size on disk (exact: sizes grow with the images only until the
    top-k lists are full) and the time of the passes, extrapolated from `SAMPLE_BATCHES` timed batches of the fit
    passes."""
    source = as_source(fit_path)
    sample = Subset(source, range(min(len(source), SAMPLE_BATCHES * batch_size)))
    started = time.perf_counter()
    later = head_images(lens, fit_path, plan) if plan.fit.head_images else None
    fit = fit_statistics(lens, sample, plan.fit, batch_size=batch_size, num_workers=num_workers, later=later)
    per_image_pass = (time.perf_counter() - started) / (len(sample) * fit.passes) if fit.passes else 0.0
    sizes = {}
    if fit.pieces is not None:
        sizes[PIECES] = _bytes(fit.pieces.artifact()[0])
    if fit.pairs is not None:
        sizes[PAIRS] = _bytes(fit.pairs.artifact()[0], PairStats.STATE_SHAPES, fit.pairs.high_index.shape[-1],
                              min(fit.pairs.top_k, len(source)))
    if "pair-ablate" in plan.questions:
        sizes[NEURON_MOMENTS] = _bytes(Moments(fit.pairs.neurons, fit.pairs.heads).state())
    for layer, stats in fit.second_order.items():
        sizes[analysis_part(layer)] = _bytes(stats.artifact()[0], RANKED_SHAPES, stats.top.filled,
                                             min(stats.top_k, len(source)))
    if plan.fit.head_images:
        sizes[PART] = image_bytes(len(head_labels(fit.pieces.labels)), plan.head_components,
                                  min(plan.head_top, len(source)), lens.spec.output_dim)  # fewer images keep fewer
    return {"sizes": sizes, "passes": plan.passes(), "images": len(source),
            "seconds_per_image_and_pass": per_image_pass,
            "fit_seconds": per_image_pass * len(source) * plan.fit.passes()}


def _bytes(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple] | None = None, kept: int = 1,
           full: int = 1) -> int:
    """The tensors' size; those with a top-k dimension "k" in `shapes` counted `full` wide instead of the sample's
    `kept` (a dry run ranks a few batches, the whole data min(top_k, images))."""
    return sum(tensor.numel() * tensor.element_size() * (full if "k" in (shapes or {}).get(name, ()) else kept)
               // kept for name, tensor in tensors.items())


def _spec(data: Any) -> str | None:
    """How the data was named, so the analysis can be read as data again (None for a Python dataset)."""
    if isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        return text if text.startswith(("shapes:", "waterbirds:", "stanford-cars:")) else os.path.abspath(text)
    return None

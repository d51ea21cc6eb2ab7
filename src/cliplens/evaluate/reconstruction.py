"""Reconstruction accuracy (docs/methods/reconstruction.md#protocol): how much zero-shot accuracy survives when every
head of the last k layers is rebuilt from m texts, the earlier heads are mean-ablated and `embed`, the MLPs (and `bias`)
are kept.

Each method turns a head's statistics into an orthogonal projection, and the head's piece p becomes μ + (p − μ) U Uᵀ
with U [d, r] orthonormal:

- `textspan`: U spans the first m TextSpan directions (docs/methods/textspan.md), so U Uᵀ = Q_m.
- `svd`: PCLens's text reconstruction (docs/methods/svd-poles.md) with at most m components: the top r = min(m, 99%-rule
  rank) principal components, each named by its top text; U spans the range of V_rᵀ Π V_r.
- `omp`: sparse text codes of the head's principal directions. The top P = min(m, 99%-rule rank) principal
  directions are each written as m text atoms by OMP (docs/methods/omp.md, centred row-normalised dictionary); every
atom used is scored by the variance it carries, Σ_i λ_i c_ij² (λ_i the variance along direction i, c_ij its coefficient
there); U spans the m best-scoring atoms. So m texts per head again, chosen to rebuild the head's main directions rather
than greedily for variance as TextSpan does.
- `random`: TextSpan run on as many random unit vectors as the text pool has texts (the text-free baseline).

Every map is fixed, so one streaming pass over the evaluation data scores all methods and all m at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data.loader import as_source, fingerprint
from ..errors import CliplensError, require_positive_int, require_seed
from ..extras import require
from ..explain.base import fit_pieces
from ..explain.omp import orthogonal_matching_pursuit, prepare_dictionary
from ..explain.svd_poles import SVDPoles, nuclear_rank, row_space_projector, signed_components
from ..explain.textspan import TextSpan
from ..io.atomic import replacing
from ..io.compat import fitted_on
from ..io.tables import SCHEMAS, write_table
from ..labels import parse_label
from ..progress import progress_over
from ..stats.collect import PieceStats
from .ablation import Variant, check_statistics, evaluate_variants
from .groups import attention_layers, heads_of_layers

if TYPE_CHECKING:
    from ..lens import Lens

METHODS = ("textspan", "svd", "omp", "random")
BASELINE = "mean-ablation baseline"  # earlier heads mean-ablated, the analysed heads whole: what m texts approach
Bases = dict[str, torch.Tensor]  # head label -> orthonormal basis [d, r]
COLUMNS = SCHEMAS["reconstruction"]
REFERENCE_ROWS = ("full model", BASELINE, "chance")
# the share of singular-value mass that sets how many principal directions a head has (docs/methods/svd-poles.md)
PRINCIPAL_MASS = 0.99


def split_heads(labels: Sequence[str], num_last_layers: int) -> tuple[list[str], list[str]]:
    """(heads of the last k layers, heads of every earlier layer), from the statistics' labels."""
    layers = attention_layers(labels)
    if not layers or any(parse_label(label).kind == "attn" for members in layers.values() for label in members):
        raise CliplensError("reconstruction needs per-head statistics of a ViT; collect them with granularity 'head'")
    count = max(layers) + 1
    if isinstance(num_last_layers, bool) or not isinstance(num_last_layers, int) or not 1 <= num_last_layers <= count:
        raise CliplensError(f"--num-last-layers must be between 1 and {count} (the model's layers), "
                            f"got {num_last_layers!r}")
    first = count - num_last_layers
    return heads_of_layers(labels, range(first, count)), heads_of_layers(labels, range(first))


def check_methods(methods: Sequence[str]) -> None:
    unknown = [method for method in methods if method not in METHODS]
    if unknown or not methods:
        raise CliplensError(f"unknown reconstruction method {unknown[:1] or methods}; choose from {', '.join(METHODS)}")


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to `limit`, the default sweep."""
    return [2**i for i in range(limit.bit_length())]


def text_sweep(counts: Sequence[int] | None, limit: int) -> list[int]:
    """The texts per head to sweep: `counts` checked against `limit` (the smallest of the TextSpan rank, the
    embedding dimension and the pool size), or by default 1, 2, 4, ... up to it."""
    return powers_of_two(limit) if counts is None else check_text_counts(counts, limit)


def check_text_counts(counts: Sequence[int], limit: int) -> list[int]:
    """Sorted distinct text counts, each between 1 and `limit` (the largest span the texts can fill)."""
    counts = sorted({require_positive_int("a text count", m) for m in counts})
    if not counts:
        raise CliplensError("no text counts given; pass at least one, e.g. counts=(1, 2, 4)")
    if counts[-1] > limit:
        raise CliplensError(
            f"{counts[-1]} texts per head exceeds the span the texts can fill ({limit} = the smallest of the "
            "TextSpan rank, the embedding dimension and the pool size); ask for fewer texts"
        )
    return counts


def orthonormal_rows_span(vectors: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis [d, r] of the span of the rows of `vectors` [k, d] (rank cut as numpy's matrix_rank)."""
    left, values, _ = torch.linalg.svd(vectors.T, full_matrices=False)
    cut = values.max() * max(vectors.shape) * torch.finfo(vectors.dtype).eps
    return left[:, values > cut]


def textspan_bases(
    stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str],
    counts: Sequence[int], rank: int,
) -> dict[int, Bases]:
    """For each m, every head's first m TextSpan directions (unit columns); one fit per head serves all m."""
    fitted = fit_pieces(TextSpan(n_texts=max(counts), rank=rank), stats.moments, stats.labels,
                        text_embeddings.to(torch.float64), texts, only=heads)
    units = {label: span.directions_ / span.directions_.norm(dim=1, keepdim=True) for label, span in fitted.items()}
    return {m: {label: unit[:m].T for label, unit in units.items()} for m in counts}


def random_bases(
    stats: PieceStats, heads: Sequence[str], pool_size: int, counts: Sequence[int], rank: int, seed: int
) -> dict[int, Bases]:
    """TextSpan on `pool_size` random unit vectors (seeded): what the method gives without any text."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(pool_size, stats.mean.shape[1], generator=generator, dtype=torch.float64)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    return textspan_bases(stats, heads, vectors, [f"random {i}" for i in range(pool_size)], counts, rank)


def svd_bases(
    stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str],
    counts: Sequence[int],
) -> dict[int, Bases]:
    """For each m, the range of PCLens's reconstruction map V_rᵀ Π V_r with at most m components.

    One fit with max(counts) components serves every m: the fit with m components keeps the first r = min(m, rank)
    components and columns of Γ, so its top texts and Π follow from the big fit's by truncation.
    """
    explainer = SVDPoles(texts_per_pole=1, max_components=max(counts), mass=PRINCIPAL_MASS)
    fitted = fit_pieces(explainer, stats.moments, stats.labels, text_embeddings.to(torch.float64), texts, only=heads)
    bases: dict[int, Bases] = {m: {} for m in counts}
    for label, poles in fitted.items():
        for m in counts:
            r = min(m, poles.n_components_)
            coordinates = poles.coordinates_[:, :r]
            projector = row_space_projector(coordinates[coordinates.argmax(dim=0)])
            values, vectors = torch.linalg.eigh(projector)
            # Π is an orthogonal projector: its eigenvalues are 0 or 1 up to rounding, so 1/2 separates them exactly.
            bases[m][label] = poles.components_[:r].T @ vectors[:, values > 0.5]
    return bases


def principal_directions(covariance: torch.Tensor, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(variances [P], directions [P, d]) of a piece: the top P = min(limit, 99%-rule rank), signs as in SVD poles."""
    if covariance.trace() <= 0:
        raise CliplensError("a head does not vary over the fit data (zero covariance); fit on more varied images")
    variances, vectors = torch.linalg.eigh(covariance)
    variances, vectors = variances.flip(0).clamp(min=0), vectors.flip(1)
    count = nuclear_rank(variances.sqrt(), PRINCIPAL_MASS, limit)
    return variances[:count], signed_components(vectors[:, :count].T)


def omp_bases(
    stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, counts: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[int, Bases]:
    """For each m, the span of the m atoms that carry most of the head's principal variance (module docstring)."""
    dictionary = prepare_dictionary(text_embeddings.to(device, torch.float64))
    position = {label: i for i, label in enumerate(stats.labels)}
    covariance = stats.covariance.to(device)
    bases: dict[int, Bases] = {m: {} for m in counts}
    for m in counts:
        parts = [principal_directions(covariance[position[label]], m) for label in heads]
        targets = torch.cat([directions for _, directions in parts])
        codes = orthogonal_matching_pursuit(targets, dictionary, m)
        start = 0
        for label, (variances, directions) in zip(heads, parts):
            ids, coef = codes.ids[start : start + len(directions)], codes.coef[start : start + len(directions)]
            start += len(directions)
            used = ids >= 0
            importance = torch.zeros(len(dictionary), dtype=torch.float64, device=dictionary.device)
            importance.index_add_(0, ids[used], (variances[:, None] * coef.square())[used])
            # Stable sort of atoms by decreasing importance: equal scores keep the lower atom id first.
            ranked = importance.argsort(descending=True, stable=True)
            chosen = ranked[: min(m, ids[used].unique().numel())]
            bases[m][label] = orthonormal_rows_span(dictionary[chosen])
    return bases


@dataclass
class ReconstructionResult:
    """Accuracy rows (`COLUMNS`) in order: the three reference rows, then each method's rows by increasing m."""

    rows: list[dict[str, Any]]
    metadata: dict[str, Any]


def reconstruction_variants(
    lens: Lens,
    stats: PieceStats,
    text_embeddings: torch.Tensor,
    texts: Sequence[str],
    *,
    methods: Sequence[str] = METHODS,
    counts: Sequence[int] | None = (1, 2, 4, 8, 16),
    num_last_layers: int = 4,
    rank: int = 80,
    seed: int = 0,
    progress: bool = False,
) -> list[Variant]:
    """The mean-ablation baseline, then one variant per method and m (`counts`, None: the default `text_sweep`):
    everything fitted on `stats` (head granularity: the means that replace earlier heads, the heads' statistics, the
    text selections) from the unit embeddings [M, d] of the pool `texts`."""
    stats = check_statistics(stats, lens)
    check_methods(methods)
    require_seed("seed", seed)
    analysed, earlier = split_heads(stats.labels, num_last_layers)
    dim = stats.mean.shape[1]
    text_embeddings = torch.as_tensor(text_embeddings)
    if text_embeddings.ndim != 2 or text_embeddings.shape != (len(texts), dim):
        raise CliplensError(f"expected {len(texts)} text embeddings of dimension {dim}, "
                            f"got {tuple(text_embeddings.shape)}")
    counts = text_sweep(counts, min(rank, dim, len(texts)))
    builders = {
        "textspan": lambda: textspan_bases(stats, analysed, text_embeddings, texts, counts, rank),
        "svd": lambda: svd_bases(stats, analysed, text_embeddings, texts, counts),
        "omp": lambda: omp_bases(stats, analysed, text_embeddings, counts, lens.device),
        "random": lambda: random_bases(stats, analysed, len(texts), counts, rank, seed),
    }
    variants = [Variant(BASELINE, tuple(earlier))]
    for method in progress_over(list(dict.fromkeys(methods)), "fit the reconstructions", "method", progress):
        for m, bases in builders[method]().items():
            variants.append(Variant(f"{method}:{m}", tuple(earlier), bases))
    return variants


def reconstruction_accuracy(
    lens: Lens,
    data: Any,
    weights: torch.Tensor,
    stats: PieceStats,
    text_embeddings: torch.Tensor,
    texts: Sequence[str],
    *,
    methods: Sequence[str] = METHODS,
    counts: Sequence[int] | None = (1, 2, 4, 8, 16),
    num_last_layers: int = 4,
    rank: int = 80,
    seed: int = 0,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
) -> ReconstructionResult:
    """Accuracy vs texts per head for each method (`reconstruction_variants`), evaluated in one pass over `data`."""
    variants = reconstruction_variants(lens, stats, text_embeddings, texts, methods=methods, counts=counts,
                                       num_last_layers=num_last_layers, rank=rank, seed=seed, progress=progress)
    analysed, earlier = split_heads(stats.labels, num_last_layers)
    counts = text_sweep(counts, min(rank, stats.mean.shape[1], len(texts)))
    scores = evaluate_variants(lens, data, variants, weights, stats, batch_size=batch_size, num_workers=num_workers,
                               progress=progress)
    images = scores.count
    rows = [
        _row("full model", "", scores.full_correct, images),
        _row(BASELINE, "", scores.correct[0], images),
        {"method": "chance", "texts": "", "accuracy": scores.chance, "correct": "", "images": ""},
    ]
    for variant, correct in zip(variants[1:], scores.correct[1:]):
        method, m = variant.name.split(":")
        rows.append(_row(method, int(m), correct, images))
    eval_fingerprint = fingerprint(as_source(data))
    metadata = {
        "methods": list(dict.fromkeys(methods)),
        "texts_per_head": counts,
        "num_last_layers": num_last_layers,
        "w_ov_rank": rank,
        "random_seed": seed,
        "pool_size": len(texts),
        "analysed_heads": analysed,
        "mean_ablated": earlier,
        "kept": [label for label in stats.labels if label not in set(analysed) | set(earlier)],
        **stats.settings.metadata(),
        "fit_data_fingerprint": stats.metadata.get("data_fingerprint"),
        "fit_images": stats.count,
        "eval_data_fingerprint": eval_fingerprint,
        "eval_images": images,
        "in_sample": fitted_on(stats.metadata, eval_fingerprint),
        "classes": scores.classes,
    }
    return ReconstructionResult(rows, metadata)


def _row(method: str, texts: int | str, correct: int, images: int) -> dict[str, Any]:
    return {"method": method, "texts": texts, "accuracy": correct / images, "correct": correct, "images": images}


def write_csv(path: str | os.PathLike, result: ReconstructionResult) -> Path:
    return write_table(path, "reconstruction", result.rows)


def plot(path: str | os.PathLike, result: ReconstructionResult, title: str = "") -> Path:
    """Accuracy vs texts per head, one line per method, the reference rows as horizontal lines (PNG)."""
    require("explain", "matplotlib", user="the reconstruction plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        references = {row["method"]: row["accuracy"] for row in result.rows if row["method"] in REFERENCE_ROWS}
        for (name, value), style in zip(references.items(), ("-", "--", ":")):
            axes.axhline(100 * value, color="grey", linestyle=style, linewidth=1, label=f"{name} ({100 * value:.1f})")
        for method in result.metadata["methods"]:
            rows = [row for row in result.rows if row["method"] == method]
            axes.plot([row["texts"] for row in rows], [100 * row["accuracy"] for row in rows], marker="o", label=method)
        axes.set_xscale("log", base=2)
        counts = result.metadata["texts_per_head"]
        axes.set_xticks(counts, [str(m) for m in counts])
        axes.set_xlabel("texts per head")
        axes.set_ylabel("zero-shot top-1 accuracy (%)")
        axes.set_title(title or f"heads of the last {result.metadata['num_last_layers']} layers rebuilt from text")
        axes.legend(fontsize=8)
        figure.tight_layout()
        with replacing(path) as staging:
            figure.savefig(staging, dpi=120, format="png")
    finally:
        plt.close(figure)
    return path

"""`cliplens explain --method {textspan,svd,omp}`: name every head of the last layers with texts, from statistics.

- textspan: the head's greedy variance-maximising text basis (METHODS §3); similarity = variance explained.
- svd: each principal component named by the texts at its two poles (§7.1); similarity = the text's coordinate.
- omp: each of the head's top principal directions written as k signed text atoms (§5); similarity = coefficient,
  method `omp-pc{i}` names the direction.

The statistics come from `--stats` (a `cliplens collect --granularity head` artifact, refused if made for another
model) or are collected here over `--data-path`. The helpers below are shared with the other text commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import click
import torch

from ..errors import CliplensError
from ..evaluate.reconstruction import principal_directions, split_heads
from ..explain.omp import SparseTextDecomposition
from ..explain.svd_poles import SVDPoles
from ..explain.tables import description_rows, label_position, write_descriptions
from ..explain.base import fit_pieces
from ..explain.textspan import TextSpan
from ..stats.collect import PieceStats, load_stats
from .options import data_options, load_lens, model_options
from .texts import HEAD_POOL, candidate_texts, pool_options

EXPLAIN_METHODS = ("textspan", "svd", "omp")


# shared with textspan, ablate and reconstruct ----------------------------------------------------------------------
def statistics_options(command: Callable) -> Callable:
    """--stats --convention --normalize: which per-piece statistics the command works from."""
    for option in reversed([
        click.option("--stats", "stats_path", type=click.Path(exists=True, file_okay=False), default=None,
                     help="Statistics from `cliplens collect`; collected here over the fit data if omitted."),
        click.option("--convention", type=click.Choice(["separate", "reference"]), default=None,
                     help="Bias convention of the pieces [default: the --stats artifact's, else separate]."),
        click.option("--normalize/--no-normalize", default=None,
                     help="Pieces of the unit embedding, as the references [default: the artifact's, else no]."),
    ]):
        command = option(command)
    return command


def piece_statistics(
    lens: Any, stats_path: str | None, data: Any, *, convention: str | None, normalize: bool | None,
    granularity: str | None = "head", batch_size: int = 32, num_workers: int = 0, spatial: bool = False,
) -> PieceStats:
    """Statistics read from `stats_path` (checked against the lens and any setting given) or collected over `data`.

    A setting left at None accepts what the artifact holds; collection then uses head granularity, the separate
    convention and unnormalised pieces. `spatial` asks for per-token means too (the CLS ablation's).
    """
    if stats_path is not None:
        expect: dict[str, Any] = {}
        if granularity is not None:
            expect["granularity"] = granularity
        if convention is not None:
            expect["convention"] = convention
        if normalize is not None:
            expect["normalize"] = normalize
        stats = load_stats(stats_path, lens, **expect)
        if not isinstance(stats, PieceStats):
            raise CliplensError(f"{stats_path} holds ResNet pair statistics; collect with --granularity head")
        if spatial and stats.token_mean is None:
            raise CliplensError(f"{stats_path} has no per-token means, which this needs; collect the statistics with "
                                "`cliplens collect --spatial`")
        return stats
    return lens.collect(data, granularity=granularity or "head", spatial=spatial, convention=convention or "separate",
                        normalize=bool(normalize), batch_size=batch_size, num_workers=num_workers, progress=True)


def statistics_record(stats: PieceStats, source: str | None) -> dict[str, Any]:
    """What metadata.json says about the statistics a command used."""
    keys = ("granularity", "convention", "normalize", "data_fingerprint", "data_size", "skipped")
    return {"source": source, "count": stats.count, **{key: stats.metadata.get(key) for key in keys}}


def write_metadata(output_dir: Path, record: Mapping[str, Any]) -> Path:
    path = output_dir / "metadata.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


# the explainers ----------------------------------------------------------------------------------------------------
def omp_rows(
    stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str], atoms: int,
    directions: int,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Description rows for each head's top principal directions written as `atoms` texts, and their fidelities."""
    position = {label: i for i, label in enumerate(stats.labels)}
    covariance = stats.covariance
    parts = [principal_directions(covariance[position[label]], directions)[1] for label in heads]
    omp = SparseTextDecomposition(atoms, dtype=torch.float64).fit(torch.cat(parts), text_embeddings, texts)
    rows, fidelity, target = [], {}, 0
    for label, part in zip(heads, parts):
        layer, unit = label_position(label)
        fidelity[label] = omp.fidelity_[target : target + len(part)].tolist()
        for index in range(len(part)):
            rows.extend(
                {"layer": layer, "unit": unit, "description": text, "similarity": coef, "rank": rank,
                 "method": f"omp-pc{index}"}
                for rank, (text, coef) in enumerate(omp.texts_[target + index])
            )
        target += len(part)
    return rows, fidelity


def explain_heads(
    method: str, stats: PieceStats, heads: Sequence[str], text_embeddings: torch.Tensor, texts: Sequence[str], *,
    texts_per_head: int, w_ov_rank: int, max_components: int, num_directions: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(description rows, method-specific metadata) for the given heads."""
    embeddings = text_embeddings.to(torch.float64)
    if method == "omp":
        rows, fidelity = omp_rows(stats, heads, embeddings, texts, texts_per_head, num_directions)
        return rows, {"atoms": texts_per_head, "directions_per_head": num_directions, "fidelity": fidelity}
    if method == "textspan":
        explainer: Any = TextSpan(n_texts=texts_per_head, rank=w_ov_rank)
    else:
        explainer = SVDPoles(texts_per_pole=texts_per_head, max_components=max_components)
    fitted = fit_pieces(explainer, stats.moments, stats.labels, embeddings, texts, only=heads)
    extra = {"params": explainer.get_params()}
    if method == "svd":
        extra["components"] = {label: poles.n_components_ for label, poles in fitted.items()}
    return description_rows(fitted), extra


def run_explain(method: str, options: dict[str, Any]) -> Path:
    """Everything a text command does after parsing: load, fit, write `<method>.csv` and metadata.json."""
    lens = load_lens(options)
    data_path = options["data_path"]
    stats = piece_statistics(lens, options["stats_path"], data_path, convention=options["convention"],
                             normalize=options["normalize"], batch_size=options["batch_size"],
                             num_workers=options["num_workers"])
    heads, _ = split_heads(stats.labels, options["num_last_layers"])
    pool, texts, embeddings = candidate_texts(lens, options, data_path, HEAD_POOL)
    rows, extra = explain_heads(method, stats, heads, embeddings, texts, texts_per_head=options["texts_per_head"],
                                w_ov_rank=options["w_ov_rank"], max_components=options["max_components"],
                                num_directions=options["num_directions"])
    output_dir = Path(options["output_dir"] or f"cliplens-out/{method}")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = write_descriptions(output_dir / f"{method}.csv", rows)
    write_metadata(output_dir, {
        "command": method if method == "textspan" else f"explain --method {method}",
        "model": lens.describe(),
        "statistics": statistics_record(stats, options["stats_path"] or data_path),
        "pool": {"name": pool, "size": len(texts), "templates": options["pool_templates"]},
        "heads": heads,
        "num_last_layers": options["num_last_layers"],
        "texts_per_head": options["texts_per_head"],
        **extra,
    })
    click.echo(f"{lens.name}: {len(heads)} heads of the last {options['num_last_layers']} layers explained with "
               f"{method} over {len(texts)} texts of '{pool}'; wrote {path}")
    return path


def explain_options(command: Callable) -> Callable:
    """Everything `cliplens textspan` and `cliplens explain` share."""
    for option in reversed([
        model_options, data_options, statistics_options, pool_options(HEAD_POOL, "none"),
        click.option("--texts-per-head", type=click.IntRange(min=1), default=20, show_default=True,
                     help="textspan: texts per head; svd: texts per pole; omp: atoms per principal direction."),
        click.option("--num-last-layers", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Explain the heads of this many last layers."),
        click.option("--w-ov-rank", type=click.IntRange(min=1), default=80, show_default=True,
                     help="textspan: rank of the head's output span the texts are projected onto."),
        click.option("--max-components", type=click.IntRange(min=1), default=80, show_default=True,
                     help="svd: at most this many principal components per head (PCLens max_text)."),
        click.option("--num-directions", type=click.IntRange(min=1), default=3, show_default=True,
                     help="omp: top principal directions explained per head."),
        click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Folder for <method>.csv and metadata.json [default: cliplens-out/<method>]."),
    ]):
        command = option(command)
    return command


@click.command("explain")
@click.option("--method", type=click.Choice(EXPLAIN_METHODS), default="textspan", show_default=True)
@explain_options
def command(method: str, **options: Any) -> None:
    """Describe every head of the last layers with texts: TextSpan, SVD poles or sparse OMP codes."""
    run_explain(method, options)

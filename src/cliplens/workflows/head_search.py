"""Head-specific search, the call behind `cliplens search` (docs/methods/head-search.md).

Head sets are named (`L3H1+L3H2`, `embedding`) or chosen per attribute of the shapes world from TextSpan on separate
fit data: a head's share of an attribute is the variance its TextSpan texts of that attribute's words explain, and the
attribute's set is its `set_size` heads of largest share (docs/methods/head-search.md#choosing). One pass indexes
every set; then a query image's neighbours, a text projected into each set's span, and the precision@k of neighbours
sharing each attribute (against the whole embedding and against chance).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..apps.retrieval import Ranking, write_ranking_grid, write_ranking_table
from ..apps.search import (
    EMBEDDING, HeadIndex, Searcher, build_indexes, chance_precision, check_engine, image_query, neighbour_precision,
    parse_head_set, search, searcher, set_name, span_projector, text_query,
)
from ..data.loader import as_source
from ..errors import CliplensError, require_positive_int
from ..evaluate.reference import default_reference
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..shapes import ShapesDataset
from ..shapes.vocabulary import OBJECT_ATTRIBUTES, SCENE_ATTRIBUTES, VOCABULARY
from ..text.candidates import HEAD_POOL, candidate_texts, check_candidates
from ..text.embed import embed_texts
from .head_texts import explain_heads

if TYPE_CHECKING:
    from ..lens import Lens

PRECISION, SHARES, PLOT = "precision.csv", "head_shares.csv", "precision.png"


@dataclass
class SearchResult:
    sets: dict[str, tuple[str, ...]]  # space name → heads
    chosen: dict[str, str]  # attribute → the space chosen for it
    rankings: dict[str, Ranking]
    span_texts: dict[str, list[str]]  # space → the TextSpan texts a text query was projected on
    precision_rows: list[dict[str, Any]]
    share_rows: list[dict[str, Any]]
    metadata: dict[str, Any]


def parse_heads_for(requests: Sequence[str], set_size: int) -> dict[str, int]:
    """`colour` or `colour:1` → {attribute: heads in its set}; `set_size` where no size is given."""
    sizes = {}
    for request in requests:
        attribute, _, size = request.partition(":")
        if size and not size.strip().isdigit() or size.strip() == "0":
            raise CliplensError(f"cannot read {request!r}; write ATTRIBUTE or ATTRIBUTE:SIZE, e.g. colour:2")
        sizes[attribute.strip()] = int(size) if size else set_size
    return sizes


def check_attributes(attributes: Sequence[str], data: Any) -> None:
    known = OBJECT_ATTRIBUTES + SCENE_ATTRIBUTES
    unknown = [a for a in attributes if a not in known]
    if unknown:
        raise CliplensError(f"unknown attribute {unknown[0]!r}; choose from {', '.join(known)}")
    if attributes and not isinstance(as_source(data), ShapesDataset):
        raise CliplensError("attributes (--heads-for, --attribute) need shapes:<split> data, whose attributes are "
                            "known exactly")


def attribute_shares(lens: Lens, fit_data: Any, attributes: Sequence[str], *, stats_path: Any = None,
                     n_texts: int = 10, rank: int = 80, batch_size: int = 32, num_workers: int = 0,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Per head and attribute, the fraction of the head's variance its TextSpan texts of that attribute explain
    (head statistics read from `stats_path`, else collected over `fit_data`)."""
    named = explain_heads(lens, fit_data, method="textspan", stats_path=stats_path, pool="shapes",
                          pool_templates="photo", texts_per_head=n_texts, num_last_layers=lens.spec.layers,
                          w_ov_rank=rank, batch_size=batch_size, num_workers=num_workers, progress=progress)
    rows = []
    for head in named.heads:
        texts = [r for r in named.rows if r["label"] == head]
        for attribute in attributes:
            share = sum(r["variance_explained"] for r in texts if r["description"] in VOCABULARY[attribute])
            rows.append({"head": head, "attribute": attribute, "share": share})
    return rows


def choose_heads(share_rows: Sequence[dict[str, Any]], attribute: str, size: int) -> tuple[str, ...]:
    """The `size` heads of largest share of `attribute` (ties: model order)."""
    rows = [row for row in share_rows if row["attribute"] == attribute]
    if size > len(rows):
        raise CliplensError(f"--set-size {size} exceeds the {len(rows)} heads of the model")
    ranked = sorted(range(len(rows)), key=lambda i: -rows[i]["share"])[:size]
    return tuple(rows[i]["head"] for i in sorted(ranked))


def attribute_labels(source: ShapesDataset, attribute: str) -> torch.Tensor:
    """Each image's value of `attribute` as an index into its vocabulary (the scene's first object, or background)."""
    values = VOCABULARY[attribute]
    owner = (lambda scene: scene.objects[0]) if attribute in OBJECT_ATTRIBUTES else (lambda scene: scene.background)
    return torch.tensor([values.index(owner(source.scene(i)).attribute(attribute)) for i in range(len(source))])


def head_search(
    lens: Lens, data: Any, *, head_sets: Sequence[str] = (), heads_for: Sequence[str] = (), set_size: int = 1,
    fit_path: Any = None, stats_path: Any = None, query_image: Any = None, query_text: str | None = None,
    attributes: Sequence[str] = (),
    top: int = 16, neighbours: int = 10, n_texts: int = 10, rank: int = 80,
    pool: str | os.PathLike | None = None, pool_size: int | None = None, pool_templates: str = "none",
    convention: str = "reference", engine: str = "exact", batch_size: int = 32, num_workers: int = 0,
    progress: bool = False,
) -> SearchResult:
    """Index the named head sets, the sets chosen for `heads_for` (`colour` or `colour:SIZE`; `set_size` heads where
    no size is given) and the whole embedding over `data`; answer the queries and measure precision@`neighbours`
    per attribute in `attributes`."""
    require_positive_int("top", top)
    require_positive_int("neighbours", neighbours)
    require_positive_int("--set-size", set_size)
    check_engine(engine)  # before the pass, not after it
    sizes = parse_heads_for(heads_for, set_size)
    check_attributes(list(sizes) + list(attributes), data)
    if query_image is not None and query_text is not None:
        raise CliplensError("give one query: --query-image or --query-text")
    if query_text is not None:
        check_candidates(data, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    if not (head_sets or heads_for):
        raise CliplensError("name a head set (--heads L3H1+L3H2) or an attribute to choose heads for (--heads-for)")
    sets = {set_name(heads): heads for heads in (parse_head_set(text, lens) for text in head_sets)}
    share_rows, chosen, fit_where = [], {}, None
    if heads_for:
        if stats_path is not None and fit_path is not None:
            raise CliplensError("heads are chosen on --stats or on --fit-path, not both; drop one")
        if stats_path is not None:
            fit_data, fit_where = fit_path, str(stats_path)
        elif fit_path is not None:
            fit_data, fit_where = fit_path, str(fit_path)
        else:
            fit_data, fit_where = default_reference(as_source(data))
        share_rows = attribute_shares(lens, fit_data, list(sizes), stats_path=stats_path, n_texts=n_texts, rank=rank,
                                      batch_size=batch_size, num_workers=num_workers, progress=progress)
        for attribute, size in sizes.items():
            heads = choose_heads(share_rows, attribute, size)
            chosen[attribute] = set_name(heads)
            sets[set_name(heads)] = heads
    sets[EMBEDDING] = ()
    indexes = build_indexes(lens, data, list(sets.values()), convention=convention, batch_size=batch_size,
                            num_workers=num_workers, progress=progress)
    finders = {name: searcher(index, engine) for name, index in indexes.items()}
    rankings, span_texts = _answer(lens, data, indexes, finders, query_image=query_image, query_text=query_text,
                                   top=top, n_texts=n_texts, rank=rank, pool=pool, pool_size=pool_size,
                                   pool_templates=pool_templates, convention=convention)
    rows = _precision_rows(as_source(data), indexes, finders, chosen, attributes, neighbours)
    metadata = {
        "model": lens.describe(), "data": str(data), "fit_data": fit_where,
        "sets": {name: list(heads) for name, heads in sets.items()},
        "chosen": chosen, "set_sizes": sizes, "texts_per_head": n_texts, "rank": rank, "convention": convention,
        "pool_templates": pool_templates,
        "query_image": None if query_image is None else str(query_image), "query_text": query_text,
        "span_texts": span_texts, "top": top, "neighbours": neighbours, "engine": engine,
    }
    return SearchResult(sets, chosen, rankings, span_texts, rows, share_rows, metadata)


def _answer(lens: Lens, data: Any, indexes: dict[str, HeadIndex], finders: dict[str, Searcher], *,
            query_image: Any, query_text: str | None, top: int, n_texts: int, rank: int, pool: Any,
            pool_size: int | None, pool_templates: str, convention: str
            ) -> tuple[dict[str, Ranking], dict]:
    """Each space's top images for the query (none without one)."""
    rankings, span_texts = {}, {}
    if query_text is not None:
        _, texts, embeddings = candidate_texts(lens, data, HEAD_POOL, pool=pool, pool_size=pool_size,
                                               pool_templates=pool_templates)
        query = embed_texts(lens, [query_text], templates=pool_templates)[0]
    for name, index in indexes.items():
        if query_image is not None:
            vector, score = image_query(index, lens, query_image, convention=convention), "cos(p - mean, p(query))"
        elif query_text is not None:
            span = span_projector(index, embeddings, texts, n_texts=n_texts, rank=rank)
            span_texts[name] = list(span.texts_)
            vector, score = text_query(span, query), "cos(p - mean, Q_span q)"
        else:
            continue
        rankings[name] = search(index, vector, top, score=score, find=finders[name])
    return rankings, span_texts


def _precision_rows(source: Any, indexes: dict[str, HeadIndex], finders: dict[str, Searcher], chosen: dict[str, str],
                    attributes: Sequence[str], top: int) -> list[dict[str, Any]]:
    rows = []
    for attribute in attributes:
        labels = attribute_labels(source, attribute)
        measured = {name: float(neighbour_precision(index, labels, top, find=finders[name]).mean())
                    for name, index in indexes.items()}
        chance = chance_precision(labels[indexes[EMBEDDING].positions])
        for name, index in indexes.items():
            rows.append({
                "space": name, "heads": " ".join(index.heads) or "all", "attribute": attribute, "top": top,
                "chosen_for": next((a for a, space in chosen.items() if space == name), ""),
                "precision": measured[name], "baseline_embedding": measured[EMBEDDING], "chance": chance,
                "images": len(index),
            })
    return rows


def write_search(result: SearchResult, data: Any, output_dir: str | os.PathLike) -> Path:
    """`precision.csv` + `precision.png` (with --attribute), `head_shares.csv` (with --heads-for), and per space
    `<space>.csv` + `<space>.png` (the query's top images)."""
    writers = {}
    if result.precision_rows:
        writers[PRECISION] = lambda file: write_table(file, "precision", result.precision_rows)
        writers[PLOT] = lambda file: plot_precision(file, result.precision_rows)
    if result.share_rows:
        writers[SHARES] = lambda file: write_table(file, "shares", result.share_rows)
    for name, ranking in result.rankings.items():
        writers[f"{name}.csv"] = lambda file, ranking=ranking: write_ranking_table(file, ranking, data)
        writers[f"{name}.png"] = lambda file, ranking=ranking: write_ranking_grid(file, ranking, data)
    return write_folder(output_dir, writers, result.metadata)


def plot_precision(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Grouped bars: precision@k per attribute (groups) and space (bars), chance as a dashed tick per attribute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attributes = list(dict.fromkeys(row["attribute"] for row in rows))
    spaces = list(dict.fromkeys(row["space"] for row in rows))
    width = 0.8 / len(spaces)
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    try:
        for j, space in enumerate(spaces):
            values = [next(r["precision"] for r in rows if r["space"] == space and r["attribute"] == a)
                      for a in attributes]
            axes.bar([i + j * width for i in range(len(attributes))], [100 * v for v in values], width, label=space)
        for i, attribute in enumerate(attributes):
            chance = next(r["chance"] for r in rows if r["attribute"] == attribute)
            axes.hlines(100 * chance, i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="--",
                        label="chance" if i == 0 else None)
        axes.set_xticks([i + 0.4 - width / 2 for i in range(len(attributes))], attributes)
        axes.set_ylabel(f"precision@{rows[0]['top']} (%): neighbours sharing the attribute")
        axes.set_title(f"neighbours per head space, {rows[0]['images']} images")
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(path, dpi=120, format="png")
    finally:
        plt.close(figure)

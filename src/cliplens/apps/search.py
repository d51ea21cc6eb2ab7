"""Head-specific search (docs/methods/head-search.md): nearest neighbours inside one head's (or head set's) space.

An index keeps, per image, the sum of the chosen heads' pieces p_S(x) = Σ_{h∈S} p_h(x), centred by its mean over the
indexed data. Neighbours of a query image are ranked by the cosine of the centred pieces; a text query is first
projected into the space's TextSpan span (fitted on the index's own moments), so only the properties that space
carries are searched for. Search is exact: a matrix product over chunks of the index, keeping the running top k, so
memory is bounded by the chunk, not by the dataset. For indexes of millions of images, `ApproximateSearch` answers the
same questions from a faiss HNSW graph (approximate, sublinear per query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..data.loader import as_source, stream
from ..errors import CliplensError, require_positive_int
from ..explain.textspan import TextSpan
from ..extras import require
from ..settings import Settings
from .retrieval import Ranking, parse_component

if TYPE_CHECKING:
    from ..lens import Lens

EMBEDDING = "embedding"  # the whole image embedding, the baseline space
SEPARATOR = "+"
CHUNK = 16_384  # index rows per matrix product: a chunk of scores is queries × CHUNK floats
ENGINES = ("exact", "faiss")


@dataclass(frozen=True)
class HeadIndex:
    """The centred per-image pieces of one head set over a dataset (docs/methods/head-search.md#index)."""

    name: str  # "L3H1+L3H2", or "embedding"
    heads: tuple[str, ...]  # empty for the whole embedding
    centred: torch.Tensor  # [N, d] float32, p_S(x) − mean
    mean: torch.Tensor  # [d] float64
    positions: torch.Tensor  # [N] dataset positions

    def __len__(self) -> int:
        return len(self.positions)

    def moments(self, chunk: int = CHUNK) -> tuple[int, torch.Tensor, torch.Tensor]:
        """(count, mean, covariance) of p_S in float64, accumulated over chunks (what TextSpan needs)."""
        covariance = torch.zeros(self.centred.shape[1], self.centred.shape[1], dtype=torch.float64)
        for start in range(0, len(self), chunk):
            part = self.centred[start:start + chunk].double()
            covariance += part.T @ part
        return len(self), self.mean, covariance / len(self)


def parse_head_set(text: str, lens: Lens) -> tuple[str, ...]:
    """`L3H1+L3H2` → its head labels, checked against the model; `embedding` → () (the whole embedding)."""
    if text.strip() == EMBEDDING:
        return ()
    labels = [part.strip() for part in text.split(SEPARATOR)]
    components = [parse_component(label, lens) for label in labels]
    if any(component.kind != "head" for component in components):
        raise CliplensError(f"{text!r} is not a set of ViT heads; write L<layer>H<head>[+L<layer>H<head>...] or "
                            f"{EMBEDDING}")
    if len(set(labels)) < len(labels):
        raise CliplensError(f"{text!r} names a head twice; name each head once")
    return tuple(component.label for component in components)


def set_name(heads: Sequence[str]) -> str:
    return SEPARATOR.join(heads) if heads else EMBEDDING


def _set_pieces(result: Any, heads: tuple[str, ...]) -> torch.Tensor:
    if not heads:
        return result.embedding
    return torch.stack([result[label] for label in heads]).sum(0)


def build_indexes(
    lens: Lens, data: Any, head_sets: Sequence[Sequence[str]], *, convention: str = "reference", batch_size: int = 32,
    num_workers: int = 0, progress: bool = False,
) -> dict[str, HeadIndex]:
    """One pass over `data` indexing every head set (a sequence of head labels; empty = the whole embedding)."""
    if lens.kind != "vit":
        raise CliplensError(f"head-specific search needs a ViT; {lens.name} is a {lens.kind}")
    sets = {set_name(heads): tuple(heads) for heads in head_sets}
    if not sets:
        raise CliplensError(f"name at least one head set, e.g. L3H1+L3H2 or {EMBEDDING}")
    settings = Settings(granularity="head", convention=convention)
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in sets}
    positions = []
    with torch.no_grad():
        for batch in stream(lens, as_source(data), batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"index {lens.name}"):
            result = lens.decomposer.decompose(batch.images, settings)
            for name, heads in sets.items():
                kept[name].append(_set_pieces(result, heads).float().cpu())
            positions.append(batch.indices)
    if not positions:
        raise CliplensError("no image of the data could be read; nothing to index")
    positions = torch.cat(positions)
    indexes = {}
    for name, heads in sets.items():
        pieces = torch.cat(kept.pop(name))
        mean = pieces.double().mean(0)
        indexes[name] = HeadIndex(name, heads, (pieces.double() - mean).float(), mean, positions)
    return indexes


def image_query(index: HeadIndex, lens: Lens, image: Any, *, convention: str = "reference") -> torch.Tensor:
    """The query image's own centred piece in the index's space [d]."""
    result = lens.decompose(image, granularity="head", convention=convention)
    return (_set_pieces(result, index.heads)[0].double().cpu() - index.mean).float()


def span_projector(index: HeadIndex, text_embeddings: torch.Tensor, texts: Sequence[str], *, n_texts: int = 10,
                   rank: int = 80) -> TextSpan:
    """TextSpan fitted on the index's own moments: its projector is the text span a text query is projected into."""
    count, mean, covariance = index.moments()
    return TextSpan(n_texts=n_texts, rank=rank).fit(count, mean, covariance, text_embeddings.double(), texts)


def text_query(span: TextSpan, text_embedding: torch.Tensor) -> torch.Tensor:
    """Q_m q̂: the unit text embedding projected into the span (docs/methods/head-search.md#text)."""
    unit = text_embedding.double() / text_embedding.double().norm()
    projected = span.projector() @ unit
    if projected.norm() <= 1e-12:
        raise CliplensError("the text query is orthogonal to this space's text span; it carries nothing of it")
    return projected.float()


def nearest(
    index: HeadIndex, queries: torch.Tensor, top: int, *, exclude: torch.Tensor | None = None, chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top-`top` rows of the index per query [Q, d] → (values [Q, top], rows [Q, top]), best first.

    `exclude` [Q] is an index row each query must not return (itself, when the queries are indexed images). The index
    is read `chunk` rows at a time; ties keep the earlier row."""
    _check_top(index, top, exclude)
    require_positive_int("chunk", chunk)
    units = _unit_rows(queries.float())
    best_values = torch.full((len(queries), 0), -torch.inf)
    best_rows = torch.zeros((len(queries), 0), dtype=torch.long)
    for start in range(0, len(index), chunk):
        part = index.centred[start:start + chunk]
        scores = units @ _unit_rows(part).T
        rows = torch.arange(start, start + len(part))
        if exclude is not None:
            scores[rows[None, :] == exclude[:, None]] = -torch.inf
        values = torch.cat([best_values, scores], 1)
        candidates = torch.cat([best_rows, rows.expand(len(queries), -1)], 1)
        order = values.argsort(dim=1, descending=True, stable=True)[:, :top]
        best_values, best_rows = values.gather(1, order), candidates.gather(1, order)
    return best_values, best_rows


def _check_top(index: HeadIndex, top: int, exclude: torch.Tensor | None) -> None:
    """`top` neighbours exist among the index's rows (one fewer per query when its own row is excluded)."""
    require_positive_int("top", top)
    available = len(index) - (exclude is not None)
    if top > available:
        raise CliplensError(f"the index holds {available} candidate images; ask for at most {available} neighbours")


def _unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)


class ApproximateSearch:
    """`nearest` from a faiss HNSW graph over the index's unit rows (inner product = cosine): per query it visits a
    few thousand rows instead of all of them, at the price of sometimes missing a true neighbour
    (docs/methods/head-search.md#faiss). Built once per index; `links` and `breadth` are HNSW's M and efSearch."""

    def __init__(self, index: HeadIndex, *, links: int = 32, breadth: int = 128) -> None:
        check_engine("faiss")
        import faiss

        self.index = index
        self.graph = faiss.IndexHNSWFlat(index.centred.shape[1], links, faiss.METRIC_INNER_PRODUCT)
        self.graph.hnsw.efSearch = breadth
        self.graph.add(_unit_rows(index.centred.float()).numpy())

    def __call__(self, queries: torch.Tensor, top: int, *, exclude: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `nearest`: (values [Q, top], rows [Q, top]), best first, never the `exclude` row."""
        _check_top(self.index, top, exclude)
        wanted = top + (exclude is not None)
        values, rows = (torch.from_numpy(array) for array in self.graph.search(_unit_rows(queries.float()).numpy(),
                                                                                wanted))
        rows = rows.long()
        if exclude is None:
            return values, rows
        excluded = rows == exclude[:, None]
        keep = excluded.int().argsort(dim=1, stable=True)[:, :top]  # the others first, in their order
        return values.gather(1, keep), rows.gather(1, keep)


def check_engine(engine: str) -> None:
    """A known engine, with its optional package installed: checked before any pass over the data."""
    if engine not in ENGINES:
        raise CliplensError(f"unknown search engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "faiss":
        require("search", "faiss", user="search --engine faiss")


# `nearest` bound to one index, or an ApproximateSearch: (queries, top, exclude=) -> (values, rows)
Searcher = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def searcher(index: HeadIndex, engine: str = "exact") -> Searcher:
    """The search behind `engine` for one index: exact chunked products, or faiss's HNSW graph."""
    check_engine(engine)
    if engine == "faiss":
        return ApproximateSearch(index)
    return lambda queries, top, exclude=None: nearest(index, queries, top, exclude=exclude)


def search(index: HeadIndex, query: torch.Tensor, top: int, *, score: str, find: Searcher | None = None) -> Ranking:
    """The top images of one query as a retrieval `Ranking` (written by `apps.retrieval.write_ranking`)."""
    values, rows = (find or searcher(index))(query[None], top)
    return Ranking(index.name, score, index.positions[rows[0]], values[0].double())


def neighbour_precision(index: HeadIndex, labels: torch.Tensor, top: int = 10, *, chunk: int = 1024,
                        find: Searcher | None = None) -> torch.Tensor:
    """Per indexed image, the fraction of its `top` nearest other images that share its label [N]
    (docs/methods/head-search.md#precision); `labels` are indexed by dataset position."""
    find = find or searcher(index)
    labels = torch.as_tensor(labels)
    if len(labels) <= int(index.positions.max()):
        raise CliplensError(f"{len(labels)} labels for data of at least {int(index.positions.max()) + 1} images")
    labels = labels[index.positions]
    precision = []
    for start in range(0, len(index), chunk):
        rows = torch.arange(start, min(start + chunk, len(index)))
        _, found = find(index.centred[rows], top, exclude=rows)
        precision.append((labels[found] == labels[rows, None]).double().mean(1))
    return torch.cat(precision)


def chance_precision(labels: torch.Tensor) -> float:
    """The expected precision of neighbours drawn at random among the other images: Σ_v n_v(n_v − 1) / (N(N − 1))."""
    counts = torch.unique(torch.as_tensor(labels), return_counts=True)[1].double()
    total = counts.sum()
    return float((counts * (counts - 1)).sum() / (total * (total - 1)))

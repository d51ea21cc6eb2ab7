"""Top images per component (docs/methods/retrieval.md#scores): ResNet pairs and neurons, and ViT heads against a query.

A ranking needs one scalar per image and component, so a pass keeps exactly that and sorts at the end: exact, and
memory grows by one number per image. Pairs need no pass when their statistics were collected on the same data: the
streaming extremes already are their top images.

Scores, all in embedding units:
- pair H{h}N{n}: |s − s̄|·‖u‖, the centred pair's norm; signed, (s − s̄)·‖u‖, its projection on u/‖u‖;
- neuron N{n}: ‖Σ_h r^{n,h}‖, uncentred, bias shares included in the reference convention (as the reference ranks);
- ViT head L{l}H{h}: ⟨p_{l,h}(x), q⟩ (or the cosine) for a unit text embedding q, or q = the query image's piece.

With `maps`, a second forward pass over each ranking's top images only gives where in each image the component acts
(docs/methods/retrieval.md#maps): each token's share of its piece, projected on the direction the ranking measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from PIL import ImageOps
from safetensors.torch import save_file

from ..data.loader import as_source, describe_item, fingerprint, stream
from ..errors import CliplensError, require_positive_int
from ..io.atomic import replacing
from ..io.compat import fitted_on, require_model
from ..io.tables import SCHEMAS, write_table
from ..labels import match_label, padding_hint, pair_label
from ..report.grids import save_grid, to_image
from ..report.overlays import heat_overlay
from ..settings import Settings
from ..stats.pairs import PairStats
from .segmentation import head_token_scores, patch_start, to_grid

if TYPE_CHECKING:
    from ..lens import Lens

COLUMNS = SCHEMAS["ranking"]
# what a ranking can name, (label kind, inside a transformer layer), and the numbers of its label that index it
RANKED = {("pair", False): ("head", "neuron"), ("neuron", False): ("neuron",), ("head", True): ("layer", "head")}
LIMITS = {"layer": "layers", "head": "heads", "neuron": "channels"}  # the spec's size for each of those numbers


@dataclass(frozen=True)
class Component:
    label: str
    kind: str  # "pair", "neuron" or "head"
    index: tuple[int, ...]  # (head, neuron), (neuron,) or (layer, head)


@dataclass(frozen=True)
class TokenMaps:
    """Where in each ranked image its component acts (docs/methods/retrieval.md#maps), best image first."""

    measure: str  # what the values are, in words
    patches: torch.Tensor  # [k, G, G]: each patch token's share, projected on the ranking's direction
    other: torch.Tensor  # [k]: the share of the tokens that are not places (class and register tokens, mean token)


@dataclass(frozen=True)
class Ranking:
    component: str
    score: str  # what the values measure
    positions: torch.Tensor  # [k] dataset positions, best first
    values: torch.Tensor  # [k]
    maps: TokenMaps | None = None  # with retrieve(..., maps=True)


def parse_component(label: str, lens: Lens) -> Component:
    """`H3N17` (pair), `N17` (neuron) or `L3H2` (ViT head), checked against the model's shape."""
    piece = match_label(label.strip())
    numbers = None if piece is None or piece.token is not None else RANKED.get((piece.kind, piece.layer is not None))
    if numbers is None:
        raise CliplensError(f"cannot read component {label!r}{padding_hint(label.strip())}; write H<head>N<neuron>, "
                            "N<neuron> or L<layer>H<head>")
    kind, index = piece.kind, tuple(getattr(piece, number) for number in numbers)
    spec = lens.spec
    wanted = "vit" if kind == "head" else "resnet"
    if lens.kind != wanted:
        raise CliplensError(
            f"{label} is a {'ViT head' if kind == 'head' else 'ResNet pair or neuron'} but {lens.name} is a "
            f"{lens.kind}; use {'H<head>N<neuron> or N<neuron>' if kind == 'head' else 'L<layer>H<head>'}"
        )
    for number, value in zip(numbers, index):
        limit = LIMITS[number]
        if value >= getattr(spec, limit):
            raise CliplensError(f"{label} is out of range: the model has {getattr(spec, limit)} {limit}")
    return Component(label.strip(), kind, index)


def top_ranking(component: str, score: str, values: torch.Tensor, positions: torch.Tensor, top: int) -> Ranking:
    """The `top` largest values, best first; equal values keep dataset order."""
    order = values.argsort(descending=True, stable=True)[:top]
    return Ranking(component, score, positions[order], values[order])


def pair_score_name(signed: bool) -> str:
    return "(s - mean s)*|u|" if signed else "|s - mean s|*|u|"


def pair_length(lens: Lens, head: int, neuron: int) -> torch.Tensor:
    """‖u‖ of pair (head, neuron), u = W_o^h W_v^h[:, n], in float64 on the CPU."""
    decomposer = lens.decomposer
    return (decomposer.out_weight[head] @ decomposer.value_weight[head, :, neuron]).double().norm().cpu()


def pair_ranking_from_stats(stats: PairStats, head: int, neuron: int, top: int, *, signed: bool = False) -> Ranking:
    """A pair's top images straight from its statistics (no pass): needs top ≤ the statistics' top_k."""
    if top > min(stats.top_k, stats.count):
        raise CliplensError(f"these statistics keep {min(stats.top_k, stats.count)} images per pair; ask for fewer")
    length = stats.directions(torch.tensor([head]), torch.tensor([neuron])).norm()
    if signed:
        values = stats.high_values[head, neuron, :top] - stats.coef_mean[head, neuron]
        positions = stats.high_index[head, neuron, :top]
    else:
        deviation, index = stats.top_deviations()
        values, positions = deviation[head, neuron, :top].abs(), index[head, neuron, :top]
    return Ranking(pair_label(head, neuron), pair_score_name(signed), positions, values * length)


def query_vector(lens: Lens, component: Component, *, text: str | None, image: Any, convention: str) -> torch.Tensor:
    """q for a ViT head: the unit text embedding, or the query image's own piece p_{l,h}(q) (unnormalised)."""
    if text is not None:
        embedding = lens.encode_text([text])[0].to(lens.dtype)
        return embedding / embedding.norm()
    pieces = lens.decompose(image, granularity="head", convention=convention)  # an image path is read there
    return pieces[component.label][0]


def query_words(text: str | None, image: Any) -> str:
    """What q is, for a ranking's `score`: the query text, or the image's path where the query image is a file."""
    if text is not None:
        return f"the text {text!r}"
    return f"the piece of {image}" if isinstance(image, (str, os.PathLike)) else "the query image's piece"


def retrieve(
    lens: Lens,
    data: Any,
    components: Sequence[str],
    *,
    top: int = 16,
    signed: bool = False,
    cosine: bool = False,
    query_text: str | None = None,
    query_image: Any = None,
    stats: PairStats | None = None,
    convention: str = "reference",
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    maps: bool = False,
) -> dict[str, Ranking]:
    """Top `top` images of `data` per component label, best first (see the module docstring for the scores).

    `stats` gives the pairs' means s̄ (otherwise they are the mean over `data`); when they were collected on `data`
    itself and keep at least `top` images, pairs are read from them without a pass. `convention` decides whether a
    neuron's norm includes its bias shares ("reference") or not ("separate"), and the ViT head pieces' LN shares.
    `maps` adds each ranking's `TokenMaps`, from one more pass over its top images only.
    """
    require_positive_int("top", top)
    parsed = [parse_component(label, lens) for label in components]
    if not parsed:
        raise CliplensError("name at least one component, e.g. H3N17, N17 or L3H2")
    named = [component.label for component in parsed]
    twice = [label for i, label in enumerate(named) if label in named[:i]]
    if twice:
        raise CliplensError(f"component {twice[0]} is named twice; name each component once")
    kinds = {c.kind for c in parsed}
    if "head" in kinds and (query_text is None) == (query_image is None):
        raise CliplensError("ranking a ViT head needs exactly one query: a text or an image")
    if "head" not in kinds and (query_text is not None or query_image is not None or cosine):
        raise CliplensError("queries and --cosine rank ViT heads (L<layer>H<head>) only")
    if signed and "pair" not in kinds:
        raise CliplensError("--signed ranks pairs (H<head>N<neuron>) only")
    source = as_source(data)
    if stats is not None:
        require_model(stats.metadata, lens.fingerprint, "the pair statistics")
    rankings: dict[str, Ranking] = {}
    same_data = stats is not None and fitted_on(stats.metadata, fingerprint(source))
    pending = []
    for component in parsed:
        if component.kind == "pair" and same_data and top <= min(stats.top_k, stats.count):
            rankings[component.label] = pair_ranking_from_stats(stats, *component.index, top, signed=signed)
        else:
            pending.append(component)
    queries = {c.label: query_vector(lens, c, text=query_text, image=query_image, convention=convention)
               for c in parsed if c.kind == "head"}
    if pending:
        asked = query_words(query_text, query_image)
        rankings.update(_scan(lens, source, pending, queries, top=top, signed=signed, cosine=cosine, stats=stats,
                              convention=convention, batch_size=batch_size, num_workers=num_workers,
                              progress=progress, query=asked))
    if maps:
        for c in parsed:
            found = token_maps(lens, source, c, rankings[c.label], queries.get(c.label), cosine=cosine,
                               convention=convention, batch_size=batch_size)
            rankings[c.label] = replace(rankings[c.label], maps=found)
    return {c.label: rankings[c.label] for c in parsed}


def _scan(
    lens: Lens, source: Any, components: list[Component], queries: dict[str, torch.Tensor], *, top: int, signed: bool,
    cosine: bool, stats: PairStats | None, convention: str, batch_size: int, num_workers: int, progress: bool,
    query: str,
) -> dict[str, Ranking]:
    """One pass over `source` keeping each component's per-image scalar, then the rankings; `query` says in words
    what a head's q is."""
    values: dict[str, list[torch.Tensor]] = {c.label: [] for c in components}
    positions = []
    settings = Settings(granularity="pair" if lens.kind == "resnet" else "head", convention=convention)
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"retrieve {lens.name}"):
            result = lens.decomposer.decompose(batch.images, settings)
            for c in components:
                values[c.label].append(_batch_values(c, result, queries.get(c.label), cosine).double().cpu())
            positions.append(batch.indices)
    positions = torch.cat(positions)
    rankings = {}
    for c in components:
        scores = torch.cat(values[c.label])
        if c.kind == "pair":
            head, neuron = c.index
            mean = stats.coef_mean[head, neuron] if stats is not None else scores.mean()
            centred = (scores - mean) * pair_length(lens, head, neuron)
            rankings[c.label] = top_ranking(c.label, pair_score_name(signed), centred if signed else centred.abs(),
                                            positions, top)
        else:
            name = "|sum_h r^{n,h}|" if c.kind == "neuron" else f"{'cos(p, q)' if cosine else '<p, q>'}, q = {query}"
            rankings[c.label] = top_ranking(c.label, name, scores, positions, top)
    return rankings


def _batch_values(component: Component, result: Any, query: torch.Tensor | None, cosine: bool) -> torch.Tensor:
    """The per-image scalar a component is ranked by, for one batch ([B]); pairs give raw coefficients s."""
    if component.kind == "pair":
        return result.coefficients[:, component.index[0], component.index[1]]
    if component.kind == "neuron":
        n = component.index[0]
        directions = result.directions(torch.arange(result.heads), torch.full((result.heads,), n))  # [H, O]
        total = result.coefficients[:, :, n] @ directions + result.offsets.sum(0)
        return total.norm(dim=1)
    pieces = result[component.label]
    if cosine:
        return pieces @ query / (pieces.norm(dim=1) * query.norm()).clamp_min(torch.finfo(pieces.dtype).tiny)
    return pieces @ query


def token_maps(lens: Lens, source: Any, component: Component, ranking: Ranking, query: torch.Tensor | None, *,
               cosine: bool, convention: str, batch_size: int) -> TokenMaps:
    """Per ranked image, each token's share of the component's piece projected on the ranking's direction
    (docs/methods/retrieval.md#maps); the images go through the model once more, `batch_size` at a time."""
    items = [(_item_image(source, int(position)), -1) for position in ranking.positions]
    rows = [_token_values(lens, batch.images, component, query, cosine, convention).double().cpu()
            for batch in stream(lens, items, batch_size=batch_size)]
    values, first = torch.cat(rows), patch_start(lens)  # [k, N]
    return TokenMaps(_map_measure(component, cosine), to_grid(values[None, :, first:])[0], values[:, :first].sum(1))


def _map_measure(component: Component, cosine: bool) -> str:
    if component.kind == "pair":
        return "A_hm T_mn |u|: token m's share of s*|u|, the pair's projection on u/|u|"
    if component.kind == "neuron":
        return "sum_h A_hm T_mn <u_hn, e>: token m's share of sum_h r^{n,h} on its own direction e"
    return "<p_t, q>/(|p| |q|): token t's share of the cosine" if cosine else "<p_t, q>: token t's share of <p, q>"


def _token_values(lens: Lens, images: torch.Tensor, component: Component, query: torch.Tensor | None, cosine: bool,
                  convention: str) -> torch.Tensor:
    """[B, N]: each source token's share of the component's ranking score for a batch (docs/methods/retrieval.md#maps);
    a ResNet's pool tokens are the mean token then the spatial ones, a ViT's its class (and register) tokens first."""
    decomposer = lens.decomposer
    if component.kind == "head":
        layer, head = component.index
        factors = decomposer.factorise(images, Settings("head", spatial=True, convention=convention))
        values = head_token_scores(factors, query[None], [(layer, head)])[:, 0]
        if not cosine:
            return values
        piece = factors.coefficients[:, layer, head] @ factors.basis[layer, head]  # the tokens' sum
        return values / (piece.norm(dim=1, keepdim=True) * query.norm()).clamp_min(torch.finfo(piece.dtype).tiny)
    trace = decomposer.trace(images)
    if component.kind == "pair":
        head, neuron = component.index
        return trace.attention[:, head] * trace.tokens[:, :, neuron] * pair_length(lens, head, neuron).to(images)
    neuron = component.index[0]
    result = decomposer.decompose(images, Settings("pair", convention=convention))
    directions = decomposer.directions()[:, neuron]  # [H, O]
    total = result.coefficients[:, :, neuron] @ directions + result.offsets.sum(0)  # [B, O], as ranked
    unit = total / total.norm(dim=1, keepdim=True).clamp_min(torch.finfo(total.dtype).tiny)
    along = unit @ directions.T  # [B, H]: each pair direction's coordinate on the neuron's
    return torch.einsum("bhm,bm,bh->bm", trace.attention, trace.tokens[:, :, neuron], along)


def ranking_rows(ranking: Ranking, data: Any) -> list[dict[str, Any]]:
    """Ranking-table rows (docs/outputs.md#ranking), best first: `item` says which image (its file path, or a shapes
    scene's attributes)."""
    source = as_source(data)
    return [
        {"label": ranking.component, "rank": rank, "index": int(position),
         "item": describe_item(source, int(position)), "score": float(value), "ranked_by": ranking.score}
        for rank, (position, value) in enumerate(zip(ranking.positions, ranking.values))
    ]


def write_ranking(directory: str | os.PathLike, ranking: Ranking, data: Any, *, columns: int = 8) -> tuple[Path, Path]:
    """`<component>.csv` and `<component>.png` (the top images with their scores) in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return (write_ranking_table(directory / f"{ranking.component}.csv", ranking, data),
            write_ranking_grid(directory / f"{ranking.component}.png", ranking, data, columns=columns))


def write_ranking_table(path: str | os.PathLike, ranking: Ranking, data: Any) -> Path:
    return write_table(path, "ranking", ranking_rows(ranking, data))


def write_ranking_grid(path: str | os.PathLike, ranking: Ranking, data: Any, *, columns: int = 8) -> Path:
    """The ranking's images as a grid captioned with their positions and scores."""
    source = as_source(data)
    rows = ranking_rows(ranking, source)
    images = [_item_image(source, row["index"]) for row in rows]
    captions = [f"#{row['index']}  {row['score']:.3g}" for row in rows]
    return save_grid(path, images, captions, columns=columns,
                     title=f"{ranking.component}: top {len(rows)} by {ranking.score}")


def write_token_maps(directory: str | os.PathLike, ranking: Ranking, data: Any, *, columns: int = 8,
                     size: int = 112) -> tuple[Path, Path]:
    """`<component>-maps.safetensors` (the numbers, docs/outputs.md#retrieve) and `<component>-maps.png` (each top
    image with its positive patch shares over it, red where largest, on one scale for all the component's images)."""
    maps = ranking.maps
    if maps is None:
        raise CliplensError(f"the ranking of {ranking.component} has no token maps; retrieve it with maps=True")
    directory = Path(directory)
    numbers = directory / f"{ranking.component}-maps.safetensors"
    tensors = {"patches": maps.patches.float().contiguous(), "other_tokens": maps.other.float().contiguous(),
               "index": ranking.positions.long().contiguous(), "score": ranking.values.double().contiguous()}
    with replacing(numbers) as staging:
        save_file(tensors, staging, metadata={"component": ranking.component, "measure": maps.measure,
                                              "ranked_by": ranking.score})
    source = as_source(data)
    positive = maps.patches.clamp_min(0)
    scale = float(positive.max()) or 1.0
    upsampled = F.interpolate(positive[:, None] / scale, size=(size, size), mode="bilinear", align_corners=False)
    tiles = [heat_overlay(ImageOps.fit(to_image(_item_image(source, int(position))), (size, size)), heat[0])
             for position, heat in zip(ranking.positions, upsampled)]
    captions = [f"#{int(p)}  {float(v):.3g}" for p, v in zip(ranking.positions, ranking.values)]
    title = (f"{ranking.component}: where it acts in its top {len(tiles)} images by {ranking.score}; red: the largest "
             f"share ({scale:.3g}) of {maps.measure}")
    return numbers, save_grid(directory / f"{ranking.component}-maps.png", tiles, captions, columns=columns,
                              size=size, title=title)


def _item_image(source: Any, position: int) -> Any:
    item = source[position]
    image = item[0] if isinstance(item, tuple) else item
    if image is None:
        raise CliplensError(f"{describe_item(source, position)} can no longer be read; was it changed since the pass?")
    return image

"""Top images per component (docs/methods/retrieval.md#scores): ResNet pairs and neurons, ViT heads against a query,
and both ends of a ViT head's principal components (apps/principal_images.py).

A ranking needs one scalar per image and component, so a pass keeps exactly that and sorts at the end: exact, and
memory grows by one number per image. Pairs need no pass when their statistics were collected on the same data: the
streaming extremes already are their top images.

Scores, all in embedding units:
- pair H{h}N{n}: |s − s̄|·‖u‖, the centred pair's norm; signed, (s − s̄)·‖u‖, its projection on u/‖u‖;
- neuron N{n}: ‖Σ_h r^{n,h}‖, uncentred, bias shares included in the reference convention (as the reference ranks);
- ViT head L{l}H{h}: ⟨p_{l,h}(x), q⟩ (or the cosine) for a unit text embedding q, or q = the query image's piece;
- principal component L{l}H{h}.pc{j}: ⟨p_{l,h}(x) − μ, u_j⟩, two rankings: `+` the most positive images (towards the
  dominant text pole), `-` the most negative; an analysis given as the data answers them from its part `head-images`.

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

from ..data.loader import analyzed_fit_source, as_source, describe_item, fingerprint, stream
from ..errors import CliplensError, require_positive_int
from ..io.artifacts import is_analysis
from ..io.atomic import replacing
from ..io.compat import fitted_on, require_model
from ..io.tables import SCHEMAS, write_table
from ..labels import head_label, match_component, match_label, padding_hint, pair_label
from ..report.grids import save_grid, to_image
from ..report.overlays import heat_overlay
from ..settings import Settings
from ..stats.collect import PieceStats
from ..stats.pairs import PairStats
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES, candidate_texts, check_candidates
from .principal_images import HeadDirections, PrincipalImages, head_directions, load_images, pool_record
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
    kind: str  # "pair", "neuron", "head" or "pc" (one end of a principal component)
    index: tuple[int, ...]  # (head, neuron), (neuron,), (layer, head) or (layer, head, component)
    positive: bool = True  # a principal component's end: the most positive images (+) or the most negative (-)

    @property
    def head(self) -> str:
        """The ViT head of a head or principal-component ranking."""
        return head_label(*self.index[:2])


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
    """`H3N17` (pair), `N17` (neuron), `L3H2` (ViT head) or `L3H2.pc1` (its principal component 1), checked against
    the model's shape."""
    principal = match_component(label.strip())
    piece, j = principal if principal is not None else (match_label(label.strip()), None)
    numbers = None if piece is None or piece.token is not None else RANKED.get((piece.kind, piece.layer is not None))
    if numbers is None or (j is not None and piece.kind != "head"):
        raise CliplensError(f"cannot read component {label!r}{padding_hint(label.strip())}; write H<head>N<neuron>, "
                            "N<neuron>, L<layer>H<head> or L<layer>H<head>.pc<component>")
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
    if j is not None:
        return Component(label.strip(), "pc", (*index, j))
    return Component(label.strip(), kind, index)


def ends(component: Component) -> list[Component]:
    """A principal component's two rankings, `<label>+` (most positive first) and `<label>-`; others as they are."""
    if component.kind != "pc":
        return [component]
    return [replace(component, label=f"{component.label}{sign}", positive=sign == "+") for sign in "+-"]


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
    stats: PairStats | PieceStats | None = None,
    convention: str = "reference",
    pool: str | os.PathLike | None = None,
    pool_size: int | None = None,
    pool_templates: str = HEAD_POOL_TEMPLATES,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = False,
    maps: bool = False,
) -> dict[str, Ranking]:
    """Top `top` images of `data` per component label, best first (see the module docstring for the scores); a
    principal component `L3H2.pc1` gives two rankings, `L3H2.pc1+` and `L3H2.pc1-`.

    `stats` gives the pairs' means s̄ (otherwise they are the mean over `data`); when they were collected on `data`
    itself and keep at least `top` images, pairs are read from them without a pass. Principal components need head
    statistics as `stats` (their mean and directions) and are oriented by the text pool (`pool`, as `cliplens
    components`). An analysis given as `data` stands for its fit data: what it keeps (pairs, principal-component
    images) is read from it with no pass, anything else is refused. `convention` decides whether a neuron's norm
    includes its bias shares ("reference") or not ("separate"), and the ViT head pieces' LN shares (a principal
    component is scored in its statistics' convention). `maps` adds each ranking's `TokenMaps`, from one more pass
    over its top images only.
    """
    require_positive_int("top", top)
    parsed = [end for label in components for end in ends(parse_component(label, lens))]
    if not parsed:
        raise CliplensError("name at least one component, e.g. H3N17, N17, L3H2 or L3H2.pc0")
    named = [component.label for component in parsed]
    twice = [label for i, label in enumerate(named) if label in named[:i]]
    if twice:
        raise CliplensError(f"component {twice[0].rstrip('+-')} is named twice; name each component once")
    kinds = {c.kind for c in parsed}
    if "head" in kinds and (query_text is None) == (query_image is None):
        raise CliplensError("ranking a ViT head needs exactly one query: a text or an image")
    if "head" not in kinds and (query_text is not None or query_image is not None or cosine):
        raise CliplensError("queries and --cosine rank ViT heads (L<layer>H<head>) only")
    if signed and "pair" not in kinds:
        raise CliplensError("--signed ranks pairs (H<head>N<neuron>) only")
    analysis = data if is_analysis(data) else None
    source = ranked_source(data)
    if stats is not None:
        require_model(stats.metadata, lens.fingerprint,
                      "the pair statistics" if isinstance(stats, PairStats) else "the head statistics")
    directions = principal_directions(lens, data, parsed, stats, pool=pool, pool_size=pool_size,
                                      pool_templates=pool_templates)
    rankings: dict[str, Ranking] = {}
    pairs = stats if isinstance(stats, PairStats) else None
    same_data = pairs is not None and fitted_on(pairs.metadata, fingerprint(source))
    stored = load_images(analysis, lens) if analysis is not None and "pc" in kinds else None
    pending = []
    for component in parsed:
        if component.kind == "pair" and same_data and top <= min(pairs.top_k, pairs.count):
            rankings[component.label] = pair_ranking_from_stats(pairs, *component.index, top, signed=signed)
        elif component.kind == "pc" and stored is not None:
            u = directions.heads.index(component.head)
            positions, values = stored.end(component.head, component.index[2], top,
                                           directions.vectors[u][component.index[2]], directions.means[u],
                                           component.positive)
            rankings[component.label] = Ranking(component.label, principal_score_name(component, directions),
                                                positions, values)
        else:
            pending.append(component)
    if analysis is not None and pending:
        raise CliplensError(f"{analysis} is an analysis: it keeps the top images of its pairs and of its heads' "
                            f"principal components, not images to rank {pending[0].label} by; pass the image data "
                            "itself as --data-path")
    queries = {c.label: query_vector(lens, c, text=query_text, image=query_image, convention=convention)
               for c in parsed if c.kind == "head"}
    if pending:
        asked = query_words(query_text, query_image)
        rankings.update(_scan(lens, source, pending, queries, top=top, signed=signed, cosine=cosine, stats=pairs,
                              directions=directions, convention=convention, batch_size=batch_size,
                              num_workers=num_workers, progress=progress, query=asked))
    if maps:
        for c in parsed:
            query, measured = queries.get(c.label), convention
            if c.kind == "pc":
                query = principal_direction(c, directions).to(lens.device, lens.dtype)
                measured = directions.settings.convention
            found = token_maps(lens, source, c, rankings[c.label], query, cosine=cosine and c.kind == "head",
                               convention=measured,
                               batch_size=batch_size)
            rankings[c.label] = replace(rankings[c.label], maps=found)
    return {c.label: rankings[c.label] for c in parsed}


def ranked_source(data: Any) -> Any:
    """The images a ranking of `data` is drawn from: an analysis's fit data (what its rankings were kept over), else
    the data itself."""
    return analyzed_fit_source(data) if is_analysis(data) else as_source(data)


def principal_directions(lens: Lens, data: Any, parsed: list[Component], stats: Any, *,
                         pool: str | os.PathLike | None, pool_size: int | None,
                         pool_templates: str) -> HeadDirections | None:
    """The oriented directions of the heads whose principal components are ranked (None if none is), refused in one
    line before any pass when there are no head statistics or the component does not exist."""
    heads = list(dict.fromkeys(c.head for c in parsed if c.kind == "pc"))
    if not heads:
        return None
    if not isinstance(stats, PieceStats) or any(label not in stats.labels for label in heads):
        raise CliplensError("ranking a principal component needs the head statistics its direction comes from: pass "
                            "--stats (`cliplens collect` or `cliplens analyze` output)")
    check_candidates(data, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    name, texts, embeddings = candidate_texts(lens, data, HEAD_POOL, pool=pool, pool_size=pool_size,
                                              pool_templates=pool_templates)
    found = head_directions(stats, heads, embeddings, texts, pool=pool_record(name, pool_size, pool_templates),
                            spans=lens.decomposer.head_spans(stats.settings))
    for c in parsed:
        kept = len(found.vectors[heads.index(c.head)]) if c.kind == "pc" else None
        if kept is not None and c.index[2] >= kept:
            raise CliplensError(f"{c.head} has {kept} principal components (the rank rule of `cliplens components`), "
                                f"so pc{c.index[2]} does not exist; ask for pc0 to pc{kept - 1}")
    return found


def principal_direction(component: Component, directions: HeadDirections) -> torch.Tensor:
    """The direction an end's images lie along: u_j for `+`, −u_j for `-`."""
    vector = directions.vectors[directions.heads.index(component.head)][component.index[2]]
    return vector if component.positive else -vector


def principal_score_name(component: Component, directions: HeadDirections) -> str:
    """What an end's values are: the signed score, which end first, and the texts of the pole it lies towards."""
    dominant, opposite = directions.poles[directions.heads.index(component.head)][component.index[2]]
    pole, texts = ("dominant", dominant) if component.positive else ("opposite", opposite)
    first = "most positive" if component.positive else "most negative"
    return f"<p - mean, u>, {first} first (towards its {pole} pole: {' | '.join(texts)})"


def _scan(
    lens: Lens, source: Any, components: list[Component], queries: dict[str, torch.Tensor], *, top: int, signed: bool,
    cosine: bool, stats: PairStats | None, directions: HeadDirections | None, convention: str, batch_size: int,
    num_workers: int, progress: bool, query: str,
) -> dict[str, Ranking]:
    """One pass over `source` keeping each component's per-image scalar (a principal component's extremes, streamed),
    then the rankings; `query` says in words what a head's q is."""
    scanned = [c for c in components if c.kind != "pc"]
    values: dict[str, list[torch.Tensor]] = {c.label: [] for c in scanned}
    principal = None
    if directions is not None and len(scanned) < len(components):
        principal = PrincipalImages(directions, max(c.index[2] for c in components if c.kind == "pc") + 1, top)
    positions = []
    settings = Settings(granularity="pair" if lens.kind == "resnet" else "head", convention=convention)
    with torch.no_grad():
        for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                            description=f"retrieve {lens.name}"):
            with lens.decomposer.sharing(batch.images):
                if principal is not None:
                    principal.update(lens, batch.images, batch.indices)
                result = lens.decomposer.decompose(batch.images, settings) if scanned else None
            for c in scanned:
                values[c.label].append(_batch_values(c, result, queries.get(c.label), cosine).double().cpu())
            positions.append(batch.indices)
    positions = torch.cat(positions)
    rankings = {}
    for c in components:
        if c.kind == "pc":
            u, j, end = directions.heads.index(c.head), c.index[2], "top" if c.positive else "bottom"
            rankings[c.label] = Ranking(c.label, principal_score_name(c, directions),
                                        getattr(principal, f"{end}_index")[u, j],
                                        getattr(principal, f"{end}_values")[u, j])
            continue
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
    if component.kind == "pc":
        u = "u" if component.positive else "-u"
        return f"<p_t, {u}>: token t's share of <p, {u}> (the score plus <mean, {u}>, which no token holds)"
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
    if component.kind in ("head", "pc"):
        layer, head = component.index[:2]
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

"""Concept discovery in one image (docs/methods/discovery.md): the pieces that write most of the image's score for a
text, what each of them writes in words, and where in the image each acts.

For a unit text direction t̂ the image's score ⟨y, t̂⟩ splits exactly over the pieces, c_i = ⟨p_i, t̂⟩ (separate
convention: the biases are a piece of their own), and a spatially split piece splits further over the tokens it
reads, c_i = Σ_m c_{i,m}. The listed pieces are the `top` largest |c_i|; "rest" is ⟨y, t̂⟩ − Σ_listed c_i, so the
table always sums to the score. Pieces:
- ViT: heads L{l}H{h} (per-token maps over the patches), and the non-head pieces (embed, MLPs, bias) that act at the
  class token only;
- ResNet: neuron×head pairs H{h}N{n}, s^{n,h} = Σ_m A_{h,m} T_{m,n}, so c_{(n,h),m} = A_{h,m} T_{m,n} ⟨u^{n,h}, t̂⟩;
  or neurons N{n} (their pairs summed over heads). Token 0 (the mean token) is not a place and is left off the map.
A piece's words are the pool texts t_w (unit) with the largest ⟨p_i, t_w⟩: what it writes in this image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from ..errors import CliplensError, require_positive_int
from ..io.tables import SCHEMAS
from ..labels import match_label, pair_label, pool_neuron_label
from ..report.grids import image_grid
from ..report.overlays import heat_overlay
from ..settings import Settings
from .segmentation import normalised, to_grid

if TYPE_CHECKING:
    from ..lens import Lens

GRANULARITIES = {"vit": ("head",), "resnet": ("pair", "neuron")}
REST = "rest"
COLUMNS = SCHEMAS["discovery"]


@dataclass
class Discovery:
    """One image's pieces for one text, largest |contribution| first; `maps[piece]` is its [G, G] patch map."""

    text: str
    score: float  # ⟨y, t̂⟩, the image's score for the text
    rows: list[dict[str, Any]]  # the listed pieces, then the "rest" row
    maps: dict[str, torch.Tensor]


@dataclass
class Contributions:
    labels: list[str]
    kinds: list[str]
    total: torch.Tensor  # [C] c_i
    tokens: torch.Tensor  # [C, M] c_{i,m}, token 0 the pooled (class or mean) token
    spatial: list[bool]  # whether a piece is split over the image's tokens
    words: torch.Tensor  # [C, W] ⟨p_i, t_w⟩ for the pool
    embedding: torch.Tensor  # [d] y


def vit_contributions(lens: Lens, images: torch.Tensor, direction: torch.Tensor, pool: torch.Tensor) -> Contributions:
    result = lens.decomposer.decompose(images, Settings("head", spatial=True, convention="separate"))
    pieces = result.components[0].double()  # [C, M, d]
    kinds = [piece.kind if (piece := match_label(label)) is not None else label for label in result.labels]
    return Contributions(result.labels, kinds, pieces.sum(1) @ direction, pieces @ direction,
                         [kind == "head" for kind in kinds], pieces.sum(1) @ pool.T, result.embedding[0].double())


def resnet_contributions(lens: Lens, images: torch.Tensor, direction: torch.Tensor, pool: torch.Tensor,
                         granularity: str) -> Contributions:
    decomposer = lens.decomposer
    trace = decomposer.trace(images)
    units = decomposer.directions().double()  # u [H, C, O]
    along = units @ direction  # ⟨u, t̂⟩ [H, C]
    per_token = trace.attention[0].double()[:, :, None] * trace.tokens[0].double()[None]  # A_{h,m} T_{m,n} [H, M, C]
    tokens = per_token * along[:, None]  # [H, M, C]
    coefficients = per_token.sum(1)  # s [H, C]
    words = torch.einsum("hc,hco,wo->hcw", coefficients, units, pool)
    heads, channels = coefficients.shape
    bias = decomposer.decompose(images, Settings("head", convention="separate"))["bias"][0].double()
    if granularity == "neuron":
        labels = [pool_neuron_label(n) for n in range(channels)]
        tokens, words = tokens.sum(0).T, words.sum(0)  # [C, M], [C, W]
    else:
        labels = [pair_label(h, n) for h in range(heads) for n in range(channels)]
        tokens, words = tokens.permute(0, 2, 1).reshape(heads * channels, -1), words.reshape(heads * channels, -1)
    bias_tokens = torch.zeros(1, tokens.shape[1], dtype=tokens.dtype)
    bias_tokens[0, 0] = bias @ direction
    tokens = torch.cat([tokens, bias_tokens])
    words = torch.cat([words, (bias @ pool.T)[None]])
    labels, kinds = labels + ["bias"], [granularity] * len(labels) + ["bias"]
    return Contributions(labels, kinds, tokens.sum(1), tokens, [kind != "bias" for kind in kinds], words,
                         trace.embedding[0].double())


def contributions(lens: Lens, images: torch.Tensor, direction: torch.Tensor, pool: torch.Tensor, *,
                  granularity: str | None = None) -> Contributions:
    """Every piece's contribution to ⟨y, t̂⟩ for one preprocessed image [1, 3, S, S]."""
    granularity = granularity or GRANULARITIES[lens.kind][0]
    if granularity not in GRANULARITIES[lens.kind]:
        raise CliplensError(f"discovery on a {lens.kind} lists {' or '.join(GRANULARITIES[lens.kind])} pieces, "
                            f"not {granularity!r}")
    direction, pool = direction.double().to(images.device), pool.double().to(images.device)
    with torch.no_grad():
        if lens.kind == "vit":
            return vit_contributions(lens, images, direction, pool)
        return resnet_contributions(lens, images, direction, pool, granularity)


def discover(
    lens: Lens, image: Any, texts: Sequence[str], embeddings: torch.Tensor, *, text: str | None = None,
    text_embedding: torch.Tensor | None = None, top: int = 8, words: int = 3, granularity: str | None = None,
) -> Discovery:
    """The `top` pieces of `image` by |⟨p_i, t̂⟩| for `text` (default: the pool text the image scores highest), each
    with its `words` best pool texts and its patch map; the rest row makes the table sum to ⟨y, t̂⟩."""
    require_positive_int("top", top)
    require_positive_int("words", words)
    if (text is None) != (text_embedding is None):
        raise CliplensError("give a text together with its embedding, or neither (the pool's best text is used)")
    images = lens.images_to_tensor(image if isinstance(image, torch.Tensor) else [image])
    if len(images) != 1:
        raise CliplensError(f"discovery reads one image, got {len(images)}")
    pool = embeddings.double()
    if text is None:
        best = int((lens.encode_image(images)[0].double().cpu() @ pool.T).argmax())
        text, direction = texts[best], pool[best]
    else:
        direction = text_embedding.double() / text_embedding.double().norm()
    found = contributions(lens, images, direction, pool, granularity=granularity)
    score = float(found.embedding @ direction.to(found.embedding.device))
    order = found.total.abs().argsort(descending=True, stable=True)[:top].tolist()
    rows, maps = [], {}
    for rank, i in enumerate(order):
        value, label = float(found.total[i]), found.labels[i]
        best_words = found.words[i].argsort(descending=True, stable=True)[:words].tolist()
        row = {"rank": rank, "piece": label, "kind": found.kinds[i], "contribution": value, "share": value / score,
               "words": "; ".join(texts[w] for w in best_words), "peak_row": "", "peak_col": "",
               "at_pooled_token": float(found.tokens[i, 0])}
        if found.spatial[i]:
            grid = to_grid(found.tokens[i, 1:].cpu()[None, None])[0, 0]
            maps[label] = grid
            row["peak_row"], row["peak_col"] = divmod(int((grid * (1 if value >= 0 else -1)).argmax()), grid.shape[1])
        rows.append(row)
    rest = score - sum(row["contribution"] for row in rows)
    rows.append({"rank": len(rows), "piece": REST, "kind": REST, "contribution": rest, "share": rest / score,
                 "words": "", "peak_row": "", "peak_col": "", "at_pooled_token": ""})
    return Discovery(text, score, rows, maps)


def discovery_figure(discovery: Discovery, image: Image.Image, *, size: int = 160) -> Image.Image:
    """The image, then each listed piece's patch map over it (red where it writes most toward its sign) captioned
    with its contribution and words; pieces that act at the pooled token only are shown without a map."""
    square = ImageOps.fit(image.convert("RGB"), (size, size))
    tiles, captions = [square], [f"'{discovery.text}': {discovery.score:.3g}"]
    for row in discovery.rows[:-1]:
        grid = discovery.maps.get(row["piece"])
        if grid is None:
            tiles.append(square)
            captions.append(f"{row['piece']} {row['contribution']:+.3g} (pooled token)")
            continue
        signed = grid.double() * (1 if row["contribution"] >= 0 else -1)
        upsampled = F.interpolate(signed[None, None], size=(size, size), mode="bilinear", align_corners=False)
        tiles.append(heat_overlay(square, normalised(upsampled[0])[0]))
        captions.append(f"{row['piece']} {row['contribution']:+.3g}: {row['words']}")
    return image_grid(tiles, captions, columns=min(5, len(tiles)), size=size,
                      title=f"largest pieces for '{discovery.text}'; rest {discovery.rows[-1]['contribution']:+.3g}")

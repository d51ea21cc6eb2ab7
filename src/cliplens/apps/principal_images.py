"""Top and bottom images of the principal components of ViT heads (docs/methods/retrieval.md#principal).

An image's score along component j of head (l, h) is ⟨p_{l,h}(x) − μ_{l,h}, u_j⟩: its head piece, centred on the
statistics' mean, projected on the unit direction u_j. The directions are the ones `cliplens components` names
(explain/components.py, same rank rule), each oriented so that its dominant text pole is on the positive side: the
top images lie towards the dominant pole, the bottom ones towards the opposite pole. An eigenvector's sign is
arbitrary; this orientation is the poles' own, which do not depend on it.

`PrincipalImages` keeps, per head and component, the k most positive and the k most negative scores while streaming
(memory flat in the number of images). `cliplens analyze` fills one in its second fit pass and saves it as the part
`head-images`; `retrieve` fills one over its own data when no analysis holds the ranking. Both compute every score
with the same operations on tensors of the same shapes (a head's deviations times all of its kept directions), so
the scores agree bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from ..data.loader import LoadReport
from ..errors import CliplensError, require_positive_int
from ..explain.components import ComponentTexts
from ..io.artifacts import check_shapes, load_artifact
from ..io.compat import MODEL_KEY
from ..settings import Settings
from ..stats.collect import PieceStats
from ..stats.identity import data_record
from ..stats.top_rows import ranked

if TYPE_CHECKING:
    from ..lens import Lens

PART = KIND = "head-images"  # the analysis part and its kind
COMPONENTS, TOP_K = 4, 16  # what `analyze --ask head-images` keeps by default: components per head, images per end
POLE_TEXTS = 3  # texts of each pole recorded per component (the explorer shows them beside the images)
SCORE = "<p - mean, u>"
SHAPES = {"top_values": ("U", "r", "k"), "top_index": ("U", "r", "k"), "bottom_values": ("U", "r", "k"),
          "bottom_index": ("U", "r", "k"), "components": ("U",), "directions": ("U", "r", "d"), "means": ("U", "d")}


@dataclass(frozen=True)
class HeadDirections:
    """The principal components of some heads as `components` computes them, oriented towards their dominant poles."""

    heads: list[str]
    index: torch.Tensor  # [U]: each head's position among the statistics' pieces
    means: torch.Tensor  # [U, d] float64
    vectors: list[torch.Tensor]  # per head [r_h, d] float64, every kept component, dominant pole positive
    poles: list[list[tuple[list[str], list[str]]]]  # per head and component: (dominant texts, opposite texts)
    settings: Settings  # the pieces the statistics describe, whole (not per token)
    pool: dict[str, Any]  # which texts oriented them


def head_directions(stats: PieceStats, heads: Sequence[str], embeddings: torch.Tensor, texts: Sequence[str], *,
                    pool: dict[str, Any], spans: Mapping[str, torch.Tensor], mass: float = 0.99,
                    max_components: int = 80) -> HeadDirections:
    """Every kept component of each of `heads`, oriented so that the dominant pole's best text has a positive
    coordinate (docs/methods/retrieval.md#principal); `spans` are the heads' read-out rows
    (`decomposer.head_spans`), the components found in their span as `components` finds them."""
    explainer = ComponentTexts(min(POLE_TEXTS, len(texts)), max_components, mass)
    index = torch.tensor([stats.labels.index(head) for head in heads])
    means = stats.mean[index].to(torch.float64)
    covariances = stats.covariance_of(index).to(torch.float64)  # once, not per head (23 s per ViT-B-32 call)
    vectors, poles = [], []
    for i in range(len(index)):
        explainer.fit(stats.count, means[i], covariances[i], embeddings, texts, span=spans.get(heads[i]))
        dominant = [ends[0] for ends in explainer.poles_]
        signs = torch.tensor([1.0 if explainer.coordinates_[end.ids[0], j] >= 0 else -1.0
                              for j, end in enumerate(dominant)], dtype=torch.float64)
        vectors.append(explainer.components_ * signs[:, None].to(explainer.components_))
        poles.append([(list(a.texts), list(b.texts)) for a, b in explainer.poles_])
    return HeadDirections(list(heads), index, means, vectors, poles, replace(stats.settings, spatial=False), pool)


def pool_record(name: str | os.PathLike, size: int | None, templates: str) -> dict[str, Any]:
    """Which texts oriented the components (metadata)."""
    return {"pool": os.fspath(name), "pool_size": size, "pool_templates": templates}


class PrincipalImages:
    """Per head and component j < `components`, the `top_k` images of largest and of smallest score, streamed.

    Ties keep dataset order, as a stable sort of all the scores would (tests/test_principal_images.py).
    """

    def __init__(self, directions: HeadDirections, components: int = COMPONENTS, top_k: int = TOP_K):
        require_positive_int("--head-components", components)
        require_positive_int("--head-top", top_k)
        self.directions, self.components, self.top_k = directions, components, top_k
        self.counts = torch.tensor([min(components, len(v)) for v in directions.vectors])
        heads = len(directions.heads)
        self.top_values = torch.empty(heads, components, 0, dtype=torch.float64)
        self.top_index = torch.empty(heads, components, 0, dtype=torch.int64)
        self.bottom_values, self.bottom_index = self.top_values.clone(), self.top_index.clone()
        self.seen = 0

    def scores(self, lens: Lens, images: torch.Tensor) -> torch.Tensor:
        """[B, U, components] float64 on the CPU: ⟨p − μ, u_j⟩ per image, head and component (0 where a head has
        fewer components)."""
        result = lens.decomposer.decompose(images, self.directions.settings)
        pieces = result.components[:, self.directions.index.to(result.components.device)].to(torch.float64)
        deviations = pieces - self.directions.means.to(pieces.device)
        scores = torch.zeros(len(images), len(self.directions.heads), self.components, dtype=torch.float64)
        for u, vectors in enumerate(self.directions.vectors):  # all kept directions: the same product everywhere
            kept = (deviations[:, u].contiguous() @ vectors.to(deviations.device).T)[:, : self.components]
            scores[:, u, : kept.shape[1]] = kept.cpu()
        return scores

    def update(self, lens: Lens, images: torch.Tensor, indices: torch.Tensor) -> None:
        """Score a batch of the images at dataset positions `indices` and keep each end's extremes."""
        scores = self.scores(lens, images).permute(1, 2, 0)  # [U, r, B]
        positions = indices.to(torch.int64).cpu().expand(*scores.shape[:2], -1)
        self.top_values, self.top_index = extremes(self.top_values, self.top_index, scores, positions, self.top_k,
                                                   descending=True)
        self.bottom_values, self.bottom_index = extremes(self.bottom_values, self.bottom_index, scores, positions,
                                                         self.top_k, descending=False)
        self.seen += len(indices)

    def state(self) -> dict[str, torch.Tensor]:
        """The extremes kept so far, exactly (a checkpoint of the pass)."""
        return {"top_values": self.top_values, "top_index": self.top_index, "bottom_values": self.bottom_values,
                "bottom_index": self.bottom_index, "seen": torch.tensor([self.seen])}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from `state()`."""
        self.top_values, self.top_index = tensors["top_values"], tensors["top_index"]
        self.bottom_values, self.bottom_index = tensors["bottom_values"], tensors["bottom_index"]
        self.seen = int(tensors["seen"][0])

    def artifact(self, lens: Lens, source: Any, report: LoadReport) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, metadata) of the part `head-images`; components a head does not have hold NaN and index -1."""
        missing = torch.arange(self.components)[None, :, None] >= self.counts[:, None, None]
        directions = torch.full((len(self.directions.heads), self.components, self.directions.means.shape[1]),
                                float("nan"), dtype=torch.float64)
        for u, vectors in enumerate(self.directions.vectors):
            directions[u, : self.counts[u]] = vectors[: self.components].cpu()
        tensors = {"top_values": self.top_values.masked_fill(missing, float("nan")),
                   "top_index": self.top_index.masked_fill(missing, -1),
                   "bottom_values": self.bottom_values.masked_fill(missing, float("nan")),
                   "bottom_index": self.bottom_index.masked_fill(missing, -1),
                   "components": self.counts, "directions": directions, "means": self.directions.means.cpu()}
        poles = {head: [{"dominant": a, "opposite": b} for a, b in found[: self.components]]
                 for head, found in zip(self.directions.heads, self.directions.poles)}
        metadata = {"kind": KIND, **lens.describe(), "architecture": lens.kind, **self.directions.settings.metadata(),
                    **data_record(source, report), "count": self.seen, "heads": self.directions.heads,
                    "components": self.components, "top_k": self.top_k, "score": SCORE,
                    "orientation": "dominant text pole positive", "pool": self.directions.pool, "poles": poles}
        return tensors, metadata


def extremes(values: torch.Tensor, index: torch.Tensor, new: torch.Tensor, positions: torch.Tensor, k: int, *,
             descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest (or smallest) of kept and new values along the last dimension, ties in dataset order."""
    values, index = torch.cat([values, new], -1), torch.cat([index, positions], -1)
    order = ranked(values, index, descending=descending)[..., :k]
    return values.gather(-1, order), index.gather(-1, order)


def image_bytes(heads: int, components: int, top_k: int, width: int) -> int:
    """Size of the part on disk (tensors): fixed by the heads, components and k, not by the number of images."""
    return heads * (components * (4 * top_k + width) + width + 1) * 8


@dataclass(frozen=True)
class StoredImages:
    """The part `head-images` of the analysis at `path`, as saved."""

    path: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]

    def end(self, head: str, component: int, top: int, direction: torch.Tensor, mean: torch.Tensor,
            positive: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions, scores) of one end, best first, for the oriented `direction` and `mean` a command computed from
        its statistics; refused in one line unless the analysis ranked exactly that."""
        heads, stored = self.metadata["heads"], f"{self.path} keeps"
        if head not in heads:
            raise CliplensError(f"{stored} no images of {head}; run `cliplens analyze --ask head-images` again")
        u = heads.index(head)
        held = int(self.tensors["components"][u])
        if component >= held:
            raise CliplensError(f"{stored} the images of {head}'s first {held} components only, not pc{component}; "
                                "ask `cliplens analyze` for more with --head-components")
        if top > self.tensors["top_index"].shape[-1]:
            raise CliplensError(f"{stored} {self.tensors['top_index'].shape[-1]} images per end, not --top {top}; "
                                "ask for fewer, or ask `cliplens analyze` for more with --head-top")
        kept = self.tensors["directions"][u, component]
        if not torch.equal(self.tensors["means"][u], mean.cpu()) or not (
                torch.equal(kept, direction.cpu()) or torch.equal(kept, -direction.cpu())):
            raise CliplensError(f"{stored} images of {head}.pc{component} along another direction than these "
                                "statistics give; pass the analysis itself as --stats")
        flipped = not torch.equal(kept, direction.cpu())  # the other orientation: the ends swap and the scores negate
        name, sign = ("top" if positive != flipped else "bottom"), (-1.0 if flipped else 1.0)
        return self.tensors[f"{name}_index"][u, component, :top], sign * self.tensors[f"{name}_values"][u, component,
                                                                                                       :top]


def load_images(path: str | os.PathLike, lens: Lens) -> StoredImages:
    """The part `head-images` of the analysis at `path`, checked against the lens."""
    tensors, metadata = load_artifact(path, {MODEL_KEY: lens.fingerprint}, {"heads": list, "top_k": int},
                                      part=PART, hint="run `cliplens analyze --ask head-images` to keep them")
    check_shapes(path, tensors, SHAPES, U=len(metadata["heads"]))
    return StoredImages(str(path), tensors, metadata)

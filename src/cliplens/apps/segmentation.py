"""Zero-shot segmentation heatmaps from the exact per-token pieces, and the baselines they are measured against
(docs/methods/segmentation.md).

Lenses (each gives a patch-grid map per image, upsampled bilinearly to the image size as the papers do):
- `heads` (ViT): Σ over the chosen heads (default: every head of the last layers) of each token's piece, projected on
  each class's text direction; the token maps sum exactly (over tokens, CLS included) to the image-level projection
  of those heads.
- `second-order` (ViT): Σ over the neurons of the chosen MLP layers (all, or per image and class the `top` whose
  second-order effect adds most to the class) of each token's share of their second-order effect, projected likewise;
  the token maps sum to the image-level projection of those neurons' effects.
- `pairs` (ResNet): Σ over the neuron×head pairs of the attention pool (all, or per image and class the `top` pairs
  adding most to the class) at each spatial token, projected likewise; the mean token is not a place and is left out.
- `attention`: the last attention layer's CLS→patch row (ViT; the attention pool's mean-token row for a ResNet),
  head-averaged. `rollout` (ViT): Abnar & Zuidema's rollout of the head-averaged attention with the residual
  (½A + ½I, rows renormalised), CLS row. `gradcam`: Grad-CAM of each class's cosine similarity on the tokens entering
  the last block (ViT) or the last conv stage (ResNet). `maskclip` (ResNet): MaskCLIP's dense features, the pool's
  value and output projections applied to every spatial feature, cosine with the class text. `centre`: a Gaussian
  centred on the image (σ = a quarter of its side).

Token scores of `heads`, `second-order`, `pairs` and `maskclip` are centred over the classes (score − mean over
classes, TextSpan's recipe) when there are several. Per image, the foreground map (the predicted class's map for
single-object data, the per-pixel max over classes otherwise) has its negatives clipped to 0 and is min–max
normalised to [0, 1]; the hard mask is map > threshold (default: the map's mean). Multi-class labels: each foreground
pixel takes its argmax class (class-specific lenses) or the image's zero-shot class (class-agnostic ones); the rest is
background (where the truth has no background, PASCAL Context 59, every pixel takes a class).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from ..decompose.second_order import FLOAT, SecondOrderLens, check_layer
from ..errors import CliplensError
from ..settings import Settings

if TYPE_CHECKING:
    from ..decompose.resnet_pairs import PoolTrace
    from ..decompose.second_order import SecondOrderEffects
    from ..decompose.vit import Factorised
    from ..lens import Lens

LENSES = ("heads", "second-order", "pairs", "attention", "rollout", "gradcam", "maskclip", "centre")
CLASS_SPECIFIC = ("heads", "second-order", "pairs", "gradcam", "maskclip")
CENTRED = ("heads", "second-order", "pairs", "maskclip")  # token scores, centred over the classes
MODELS = {"heads": ("vit",), "second-order": ("vit",), "pairs": ("resnet",), "attention": ("vit", "resnet"),
          "rollout": ("vit",), "gradcam": ("vit", "resnet"), "maskclip": ("resnet",), "centre": ("vit", "resnet")}
SPATIAL_HEADS = Settings(granularity="head", spatial=True, convention="separate")


@dataclass
class Maps:
    """One batch's maps for one lens on the patch grid: [B, K, G, G] per class, or [B, 1, G, G] class-agnostic.

    Kept at grid resolution and upsampled only where a rule needs it, a few classes at a time, so a thousand class
    maps never exist at image resolution at once."""

    lens: str
    grid: torch.Tensor
    size: int  # the image side the maps are upsampled to

    @property
    def class_specific(self) -> bool:
        return self.lens in CLASS_SPECIFIC

    def upsampled(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, k, G, G] → [B, k, S, S], bilinear (align_corners=False) as the papers upsample."""
        batch, classes, side, _ = grid.shape
        flat = grid.reshape(batch * classes, 1, side, side)
        return F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False).view(
            batch, classes, self.size, self.size)

    def best(self, chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per pixel, the largest class value and its class [B, S, S], over classes upsampled `chunk` at a time."""
        top = index = None
        for start in range(0, self.grid.shape[1], chunk):
            values, found = self.upsampled(self.grid[:, start:start + chunk]).max(1)
            if top is None:
                top, index = values, found + start
            else:
                better = values > top
                top, index = torch.where(better, values, top), torch.where(better, found + start, index)
        return top, index


@dataclass(frozen=True)
class Selection:
    """Which pieces the cliplens lenses read: `heads` as (layer, head) pairs (heads lens), `mlp_layers` (second-order
    lens), and the per-image, per-class top counts of neurons (second-order) and pairs (pairs lens); None = all."""

    heads: tuple[tuple[int, int], ...] = ()
    mlp_layers: tuple[int, ...] = ()
    top_neurons: int | None = None
    top_pairs: int | None = None


def usable_lenses(lens: Lens) -> list[str]:
    """Every lens this model can give (`analyze --all` segments with all of them)."""
    return [name for name in LENSES
            if lens.kind in MODELS[name] and (lens.kind != "vit" or _reads_its_class_token(lens, name))]


def check_lenses(lens: Lens, names: Sequence[str]) -> list[str]:
    """The requested lens names, in order without repeats, refused by name where the model cannot give them."""
    names = list(dict.fromkeys(names))
    if not names:
        raise CliplensError(f"name at least one lens: {', '.join(LENSES)}")
    for name in names:
        if name not in MODELS:
            raise CliplensError(f"unknown lens {name!r}; choose from {', '.join(LENSES)}")
        if lens.kind not in MODELS[name]:
            raise CliplensError(f"lens {name!r} needs a {' or '.join(MODELS[name])} model but {lens.name} is a "
                                f"{lens.kind}; use {', '.join(usable_lenses(lens))}")
        if lens.kind == "vit" and not _reads_its_class_token(lens, name):
            raise CliplensError(f"lens {name!r} reads a class token the way CLIP pools it, and {lens.name} pools "
                                "otherwise (no class token, register tokens or another pooling); use heads or centre")
    return names


def check_selection(lens: Lens, names: Sequence[str], selection: Selection) -> None:
    """Refuse a selection that leaves an asked-for lens nothing to read, or names an MLP layer the model lacks."""
    if "heads" in names and not selection.heads:
        raise CliplensError("the heads lens needs at least one head")
    if "second-order" in names:
        if not selection.mlp_layers:
            raise CliplensError("the second-order lens needs at least one MLP layer")
        for layer in selection.mlp_layers:
            check_layer(lens.decomposer, layer)


def _reads_its_class_token(lens: Lens, name: str) -> bool:
    """attention and rollout read the class token's attention row; Grad-CAM differentiates the class token's
    embedding and reads the tokens after it: a model without that token (SigLIP's attention pool, mean pooling) or
    with register tokens would give maps of something else."""
    if name in ("attention", "rollout"):
        return lens.spec.class_embedding is not None
    if name == "gradcam":
        return lens.spec.pool == "token" and lens.spec.prefix_tokens == 1
    return True


def head_token_scores(factors: Factorised, directions: torch.Tensor, heads: Sequence[tuple[int, int]]) -> torch.Tensor:
    """ViT: per-token scores [B, K, N] (CLS first) of `heads` ((layer, head) pairs) on class directions [K, d], from
    spatial head factors. Projected in the heads' factor space, so no [B, L, H, N, d] tensor is built."""
    layer_index = torch.as_tensor([layer for layer, _ in heads], device=directions.device)
    head_index = torch.as_tensor([head for _, head in heads], device=directions.device)
    basis = torch.einsum("pkd,cd->pkc", factors.token_basis[layer_index, head_index],
                         directions.to(factors.token_basis.dtype))
    return torch.einsum("bpnk,pkc->bcn", factors.token_coefficients[:, layer_index, head_index], basis)


def top_mask(projections: torch.Tensor, top: int | None) -> torch.Tensor | None:
    """Per image and class, the `top` pieces with the largest projections [B, P, K] (bool), or None for all."""
    if top is None or top >= projections.shape[1]:
        return None
    chosen = torch.zeros_like(projections, dtype=torch.bool)
    return chosen.scatter_(1, projections.topk(top, dim=1).indices, True)


def pair_token_scores(trace: PoolTrace, projected: torch.Tensor, top: int | None) -> torch.Tensor:
    """ResNet: per-token scores [B, K, M] (mean token first) of the neuron×head pairs (all, or per image and class the
    `top` with the largest image-level projection) from a pool trace and ⟨u_hn, c_k⟩ [H, C, K] (separate convention).
    Token m's share of pair (h, n) is A_hm T_mn u_hn, so the tokens sum to the pair's piece."""
    tokens = trace.tokens.to(projected.dtype)
    attention = trace.attention.to(projected.dtype)  # [B, H, M]
    chosen = None
    if top is not None:  # image-level projection of pair (h, n): s_hn ⟨u_hn, c_k⟩ with s = A T
        chosen = top_mask((torch.einsum("bhm,bmn->bhn", attention, tokens)[..., None] * projected).flatten(1, 2), top)
    scores = 0
    for h in range(len(projected)):
        columns = projected[h] if chosen is None else projected[h] * chosen.unflatten(1, (len(projected), -1))[:, h]
        scores = scores + attention[:, h, :, None] * (tokens @ columns)  # [B, M, K]
    return scores.transpose(1, 2)


def second_order_token_scores(effects: Sequence[SecondOrderEffects], projected: Sequence[torch.Tensor],
                              top: int | None) -> torch.Tensor:
    """ViT: per-token scores [B, K, N] (CLS first) of the neurons of several MLP layers (their SecondOrderEffects and
    ⟨U, c⟩ [J, F, K] each): all neurons, or per image and class the `top` over all those layers whose effect adds most
    to the class."""
    widths = [p.shape[1] for p in projected]
    chosen = top_mask(torch.cat([e.projections(p) for e, p in zip(effects, projected)], 1), top)
    masks = [None] * len(effects) if chosen is None else chosen.split(widths, 1)
    return sum(e.token_scores(p, m) for e, p, m in zip(effects, projected, masks))


def gradcam(lens: Lens, images: torch.Tensor, directions: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Grad-CAM [B, c, G²] of the cosine similarity with each class of `classes` [B, c] (indices into directions):
    ReLU(Σ_channel mean-gradient × feature) on the tokens entering the last block (ViT, patches only) or on the last
    conv stage's map (ResNet). One backward pass per column of `classes`."""
    with torch.enable_grad():
        leaf = images.detach().requires_grad_(True)
        if lens.kind == "vit":
            for state in lens.decomposer.layers(leaf):
                pass
            features = state.residual
            embedding = lens.spec.ln_post(state.output[:, 0]) @ lens.spec.proj
        else:
            features = lens.spec.trunk(leaf)
            embedding = lens.decomposer.pool(features).embedding
        similarity = F.normalize(embedding, dim=-1) @ directions.to(embedding.dtype).T  # [B, K]
        maps = []
        for column in range(classes.shape[1]):
            target = similarity.gather(1, classes[:, column:column + 1]).sum()  # images are independent
            (gradient,) = torch.autograd.grad(target, features, retain_graph=column + 1 < classes.shape[1])
            if lens.kind == "vit":
                patches, weights = features[:, 1:], gradient[:, 1:].mean(1)  # [B, N-1, D], [B, D]
                maps.append(torch.einsum("bnd,bd->bn", patches, weights).relu())
            else:
                weights = gradient.mean((2, 3))  # [B, C]
                maps.append(torch.einsum("bchw,bc->bhw", features, weights).relu().flatten(1))
    return torch.stack(maps, 1).detach()


def maskclip_scores(lens: Lens, trace: PoolTrace, directions: torch.Tensor) -> torch.Tensor:
    """ResNet: MaskCLIP's dense features (value then output projection of every spatial feature, no attention, no
    positions), cosine with each class direction: [B, K, M - 1]."""
    spec = lens.spec
    features = trace.tokens[:, 1:] - spec.positional_embedding[1:]
    dense = F.linear(F.linear(features, spec.v_weight, spec.v_bias), spec.c_weight, spec.c_bias)
    return torch.einsum("bmo,ko->bkm", F.normalize(dense, dim=-1), directions.to(dense.dtype))


def attention_maps(lens: Lens, images: torch.Tensor, *, rollout: bool, trace: PoolTrace | None = None) -> torch.Tensor:
    """Head-averaged CLS→patch attention of the last layer, or its rollout through every layer [B, N - 1]."""
    if lens.kind == "resnet":
        return (lens.decomposer.trace(images) if trace is None else trace).attention.mean(1)[:, 1:]
    start = patch_start(lens)
    rolled = None
    for state in lens.decomposer.layers(images):
        if rollout:
            logits = state.queries @ state.keys.transpose(-1, -2) * state.queries.shape[-1] ** -0.5
            step = 0.5 * logits.softmax(-1).mean(1) + 0.5 * torch.eye(logits.shape[-1], dtype=logits.dtype,
                                                                        device=logits.device)
            step = step / step.sum(-1, keepdim=True)
            rolled = step if rolled is None else step @ rolled
        else:
            last = state
    return rolled[:, 0, start:] if rollout else last.cls_attention().mean(1)[:, start:]


def prediction_reader(kind: str, names: Sequence[str]) -> str:
    """Whose embedding gives the zero-shot class: the ResNet pool's trace, else the second-order or the heads lens's
    reading of the forward when asked for, else a plain encode. Equal in value; a segmentation an analysis stored is
    read only for lenses predicted the same way, so that it is the same computation
    (docs/methods/analysis.md#segmentation)."""
    if kind == "resnet":
        return "trace"
    return next((name for name in ("second-order", "heads") if name in names), "encode")


def patch_start(lens: Lens) -> int:
    """The first patch token: after the ResNet pool's mean token, or after a ViT's CLS and register tokens."""
    return 1 if lens.kind == "resnet" else lens.spec.prefix_tokens


def to_grid(token_values: torch.Tensor) -> torch.Tensor:
    """[B, K, G²] patch values → [B, K, G, G]."""
    batch, classes, patches = token_values.shape
    side = int(round(patches**0.5))
    if side * side != patches:
        raise CliplensError(f"{patches} patch tokens do not form a square grid; segmentation needs square inputs")
    return token_values.reshape(batch, classes, side, side)


def centre_prior(batch: int, size: int, dtype: torch.dtype) -> torch.Tensor:
    """A centred Gaussian, σ = size / 4, [B, 1, size, size]."""
    axis = torch.arange(size, dtype=dtype) + 0.5 - size / 2
    prior = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))
    return prior.expand(batch, 1, size, size)


@dataclass
class Segmenter:
    """Every requested lens's maps for one batch at a time, with the class directions [K, d] and the selection fixed
    for a study; what depends only on them (second-order directions projected on the classes, pair directions) is
    built once. One forward pass per batch serves the cliplens lens and the zero-shot prediction."""

    lens: Lens
    names: Sequence[str]
    directions: torch.Tensor
    selection: Selection = field(default_factory=Selection)

    def __post_init__(self) -> None:
        self.names = check_lenses(self.lens, self.names)
        check_selection(self.lens, self.names, self.selection)
        self.directions = self.directions.to(self.lens.device)
        unit = self.directions.to(FLOAT)
        self._orders, self._order_projected, self._pair_projected = [], [], None
        if "second-order" in self.names:
            self._orders = [SecondOrderLens(self.lens.decomposer, layer) for layer in self.selection.mlp_layers]
            self._order_projected = [torch.einsum("jfd,kd->jfk", order.basis.neurons, unit) for order in self._orders]
        if "pairs" in self.names:
            self._pair_projected = torch.einsum("hno,ko->hnk", self.lens.decomposer.directions().to(FLOAT), unit)

    def __call__(self, images: torch.Tensor, *, single_object: bool) -> tuple[torch.Tensor, list[Maps]]:
        """(zero-shot predicted class [B], maps per lens in the requested order) for one preprocessed batch. Every lens
        reads the batch's one shared forward (docs/methods/analysis.md#one-forward), except Grad-CAM, which runs its
        own forward and backward on the same batch."""
        with self.lens.decomposer.sharing(images):
            return self._maps(images, single_object)

    def _maps(self, images: torch.Tensor, single_object: bool) -> tuple[torch.Tensor, list[Maps]]:
        lens, directions, selection, size = self.lens, self.directions, self.selection, images.shape[-1]
        start = patch_start(lens)  # CLS (and any register tokens) or the pool's mean token are not places
        trace = None
        tokens: dict[str, torch.Tensor] = {}
        embeddings: dict[str, torch.Tensor] = {}
        if "heads" in self.names:
            factors = lens.decomposer.factorise(images, SPATIAL_HEADS)
            tokens["heads"] = head_token_scores(factors, directions, selection.heads)[..., start:]
            embeddings["heads"] = factors.embedding
        if "second-order" in self.names:
            effects = [order(images) for order in self._orders]
            tokens["second-order"] = second_order_token_scores(effects, self._order_projected,
                                                               selection.top_neurons)[..., start:]
            embeddings["second-order"] = effects[0].embedding
        if lens.kind == "resnet":
            trace = lens.decomposer.trace(images)
            embeddings["trace"] = trace.embedding
            if "pairs" in self.names:
                tokens["pairs"] = pair_token_scores(trace, self._pair_projected, selection.top_pairs)[..., start:]
            if "maskclip" in self.names:
                tokens["maskclip"] = maskclip_scores(lens, trace, directions)
        reader = prediction_reader(lens.kind, self.names)
        embedding = embeddings[reader] if reader in embeddings else lens.decomposer.encode(images)
        predicted = (embedding @ directions.to(embedding.dtype).T).argmax(1)
        maps = []
        for name in self.names:
            if name in tokens:  # patch tokens only: CLS and the mean token are not places
                values = tokens[name]
                if values.shape[1] > 1:
                    values = values - values.mean(1, keepdim=True)
                grid = to_grid(values)
            elif name == "gradcam":
                grid = to_grid(self._gradcam(images, predicted, single_object))
            elif name == "centre":
                grid = centre_prior(len(images), size, images.dtype).to(images.device)
            else:
                grid = to_grid(attention_maps(lens, images, rollout=name == "rollout", trace=trace)[:, None])
            maps.append(Maps(name, grid, size))
        return predicted, maps

    def _gradcam(self, images: torch.Tensor, predicted: torch.Tensor, single_object: bool) -> torch.Tensor:
        """[B, K, G²]: every class's Grad-CAM, or only the predicted class's (zeros elsewhere) for single-object data,
        where no other class's map is read."""
        classes = len(self.directions)
        if not single_object:
            every = torch.arange(classes, device=predicted.device).expand(len(predicted), classes)
            return gradcam(self.lens, images, self.directions, every)
        cams = gradcam(self.lens, images, self.directions, predicted[:, None])
        placed = cams.new_zeros(len(images), classes, cams.shape[-1])
        placed[torch.arange(len(images)), predicted] = cams[:, 0]
        return placed


def normalised(values: torch.Tensor) -> torch.Tensor:
    """Per image: negatives clipped to 0, then min–max to [0, 1] (a constant map becomes 0)."""
    flat = values.clamp_min(0).flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(torch.finfo(flat.dtype).tiny)).view_as(values)


def foreground(maps: Maps, predicted: torch.Tensor, *, single_object: bool, threshold: float | None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft map in [0, 1], hard mask) [B, S, S]: the predicted class's map for single-object data, else the
    per-pixel max over classes; threshold None means each map's mean."""
    grid = maps.grid
    if maps.class_specific and not single_object:
        values = maps.best()[0]
    else:
        chosen = grid[torch.arange(len(grid)), predicted] if maps.class_specific else grid[:, 0]
        values = maps.upsampled(chosen[:, None])[:, 0]
    soft = normalised(values)
    cut = soft.mean(dim=(1, 2), keepdim=True) if threshold is None else threshold
    return soft, soft > cut


def class_labels(maps: Maps, predicted: torch.Tensor, hard: torch.Tensor | None) -> torch.Tensor:
    """Multi-class label maps [B, S, S]: k + 1 for class k on the foreground `hard`, 0 elsewhere; with no `hard`
    (truth without background, PASCAL Context 59) every pixel takes a class."""
    if maps.class_specific:
        chosen = maps.best()[1]
    else:
        chosen = predicted[:, None, None].expand(len(predicted), maps.size, maps.size)
    return chosen + 1 if hard is None else torch.where(hard, chosen + 1, torch.zeros_like(chosen))

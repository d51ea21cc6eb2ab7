"""First-order decomposition of a CLS-pooled vision transformer (METHODS §1).

The pooled residual r = x_L[0] is an exact sum of the embedding token, every head's output at the CLS query and every
MLP's output at CLS. LN_post is affine once its statistics (μ, s) are frozen at the image's own values, so the image
embedding z is exactly the sum of the read-out of those terms. We run one ordinary forward pass from the spec's
weights, keep only the CLS row of each head's output, and push it through per-head read-out matrices folded once per
model (Φ = W_Oᵀ diag(γ) P); the [B, N, N, H, D] tensor of the reference code is never built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import CliplensError
from ..models.spec import BlockSpec, ViTSpec
from .result import Decomposition

CONVENTIONS = ("separate", "reference")
GRANULARITIES = ("layer", "head")


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)


@dataclass(frozen=True)
class ReadOut:
    """LN_post's affine part and `proj`, folded once per convention: everything except the per-image 1/s."""

    matrix: torch.Tensor  # R [D, d]: diag(γ) P, centred (C R) in the separate convention
    heads: torch.Tensor  # Φ [L, H, d_h, d]: per-head out-projection followed by R
    out_bias: torch.Tensor  # [L, d]: each layer's out-projection bias read out, b_O R
    gamma: torch.Tensor  # [d]: 1ᵀ diag(γ) P, what a unit shift of every residual coordinate reads out as
    beta: torch.Tensor  # [d]: β P, LN_post's bias read out


@dataclass
class LayerState:
    """One block's intermediate values for a batch (heads split, before the out-projection)."""

    layer: int
    block: BlockSpec
    residual: torch.Tensor  # x_l [B, N, D], the block's input
    queries: torch.Tensor  # [B, H, N, d_h]
    keys: torch.Tensor  # [B, H, N, d_h]
    values: torch.Tensor  # [B, H, N, d_h], value bias included
    attended: torch.Tensor  # [B, H, N, d_h]: Σ_m A_{·m} v_m per head
    middle: torch.Tensor  # x_{l+½} [B, N, D]
    hidden: torch.Tensor  # post-activation MLP neurons a_l [B, N, F]
    mlp: torch.Tensor  # MLP output [B, N, D], c_proj bias included

    @property
    def output(self) -> torch.Tensor:
        return self.middle + self.mlp

    def cls_attention(self) -> torch.Tensor:
        """The CLS query's attention row per head, A_{0,:} [B, H, N] (recomputed: fused attention hides it)."""
        logits = torch.einsum("bhe,bhne->bhn", self.queries[:, :, 0], self.keys) * self.queries.shape[-1] ** -0.5
        return logits.softmax(-1)


@dataclass
class Trace:
    """Raw read-outs (before dividing by s) of every additive term at the CLS query, from one forward pass."""

    residual: torch.Tensor  # r [B, D]
    embed: torch.Tensor  # [B, d]
    heads: torch.Tensor  # [B, L, H, d]
    mlps: torch.Tensor  # [B, L, d]
    tokens: torch.Tensor | None  # [B, L, H, N, d], heads split over source tokens


class ViTDecomposer:
    """Decomposes images for one ViT spec; folded read-outs are cached per convention."""

    def __init__(self, spec: ViTSpec):
        self.spec = spec
        self._readouts: dict[str, ReadOut] = {}

    def readout(self, convention: str) -> ReadOut:
        if convention not in self._readouts:
            spec = self.spec
            matrix = spec.ln_post.weight[:, None] * spec.proj
            gamma = matrix.sum(0)
            if convention == "separate":
                matrix = matrix - matrix.mean(0, keepdim=True)
            heads = torch.stack(
                [block.out_weight.T.reshape(spec.heads, spec.head_dim, spec.width) @ matrix for block in spec.blocks]
            )
            out_bias = torch.stack([block.out_bias @ matrix for block in spec.blocks])
            self._readouts[convention] = ReadOut(matrix, heads, out_bias, gamma, spec.ln_post.bias @ spec.proj)
        return self._readouts[convention]

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patchify, prepend CLS, add positions and apply ln_pre: x_0 [B, N, D]."""
        spec = self.spec
        patches = F.conv2d(images, spec.conv_weight, stride=spec.patch_size).flatten(2).transpose(1, 2)
        cls = spec.class_embedding.expand(images.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        if tokens.shape[1] != spec.tokens:
            raise CliplensError(
                f"images of size {tuple(images.shape[-2:])} give {tokens.shape[1]} tokens but the model expects "
                f"{spec.tokens} ({spec.image_size}px); preprocess images with lens.preprocess"
            )
        return spec.ln_pre(tokens + spec.positional_embedding)

    def layers(self, images: torch.Tensor) -> Iterator[LayerState]:
        """Run the transformer one block at a time, exposing what the decompositions read at each block."""
        spec = self.spec
        x = self.embed_tokens(images)
        batch, n = x.shape[:2]
        for layer, block in enumerate(spec.blocks):
            qkv = F.linear(block.ln1(x), block.qkv_weight, block.qkv_bias)
            q, k, v = qkv.view(batch, n, 3, spec.heads, spec.head_dim).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d_h]
            middle = x + F.linear(attended.transpose(1, 2).reshape(batch, n, spec.width), block.out_weight,
                                  block.out_bias)
            hidden = activation(block.activation, F.linear(block.ln2(middle), block.fc_weight, block.fc_bias))
            mlp = F.linear(hidden, block.proj_weight, block.proj_bias)
            state = LayerState(layer, block, x, q, k, v, attended, middle, hidden, mlp)
            yield state
            x = middle + mlp

    def trace(self, images: torch.Tensor, convention: str, *, tokens: bool = False) -> Trace:
        readout = self.readout(convention)
        heads, mlps, token_pieces = [], [], []
        for state in self.layers(images):
            if state.layer == 0:
                embed = state.residual[:, 0] @ readout.matrix
            phi = readout.heads[state.layer]
            heads.append(torch.einsum("bhe,hed->bhd", state.attended[:, :, 0], phi))
            mlps.append(state.mlp[:, 0] @ readout.matrix)
            if tokens:
                values = torch.einsum("bhne,hed->bhnd", state.values, phi)
                token_pieces.append(state.cls_attention()[..., None] * values)
        return Trace(
            residual=state.output[:, 0],
            embed=embed,
            heads=torch.stack(heads, 1),
            mlps=torch.stack(mlps, 1),
            tokens=torch.stack(token_pieces, 1) if tokens else None,
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The image embedding z, computed from the spec (parity with the backend is a tested invariant)."""
        trace = self.trace(images, "separate")
        spec = self.spec
        return spec.ln_post(trace.residual) @ spec.proj

    def decompose(
        self,
        images: torch.Tensor,
        *,
        granularity: str = "head",
        spatial: bool = False,
        convention: str = "separate",
        normalize: bool = False,
    ) -> Decomposition:
        check_options(granularity, convention, GRANULARITIES)
        spec, readout = self.spec, self.readout(convention)
        trace = self.trace(images, convention, tokens=spatial)
        r = trace.residual
        mean = r.mean(-1, keepdim=True)
        scale = (r.var(-1, unbiased=False, keepdim=True) + spec.ln_post.eps).rsqrt()  # 1/s
        embedding = spec.ln_post(r) @ spec.proj
        pieces = _assemble(trace, readout, mean, scale, convention, spec, spatial=spatial)
        result = _group(pieces, embedding, granularity, convention, spatial, normalize, spec)
        if normalize:  # ν = ‖z‖ divides every piece, biases and LN shares included
            norms = embedding.norm(dim=-1).view(-1, *([1] * (result.components.dim() - 1)))
            result.components = result.components / norms
        return result


def check_options(granularity: str, convention: str, granularities: tuple[str, ...]) -> None:
    if granularity not in granularities:
        raise CliplensError(f"granularity {granularity!r} is not available here; choose one of {granularities}")
    if convention not in CONVENTIONS:
        raise CliplensError(f"convention {convention!r} is unknown; choose one of {CONVENTIONS}")


def _assemble(
    trace: Trace, readout: ReadOut, mean: torch.Tensor, scale: torch.Tensor, convention: str, spec: ViTSpec,
    *, spatial: bool,
) -> dict[str, torch.Tensor]:
    """Apply the convention's bias and LN-share bookkeeping (METHODS §1.3) and the per-image 1/s."""
    layers, heads, tokens = spec.layers, spec.heads, spec.tokens
    s = scale[:, :, None]  # broadcasts over [B, L, d]
    if convention == "separate":
        pieces = {
            "embed": trace.embed * scale,
            "heads": trace.heads * s[..., None],
            "mlps": trace.mlps * s,
            "bias": readout.out_bias.sum(0) * scale + readout.beta,
        }
        if spatial:
            pieces["tokens"] = trace.tokens * scale[:, :, None, None, None]
        return pieces
    terms = 2 * layers + 1  # K top-level terms share LN_post's mean and bias uniformly

    def share(raw: torch.Tensor, weight: float, per_image_scale: torch.Tensor) -> torch.Tensor:
        shift = mean.view(-1, *([1] * (raw.dim() - 2)), 1) * readout.gamma
        return (raw - weight * shift) * per_image_scale + weight * readout.beta

    pieces = {
        "embed": share(trace.embed, 1 / terms, scale),
        "heads": share(trace.heads + readout.out_bias[None, :, None] / heads, 1 / (terms * heads), s[..., None]),
        "mlps": share(trace.mlps, 1 / terms, s),
    }
    if spatial:
        token_bias = readout.out_bias[None, :, None, None] / (heads * tokens)
        pieces["tokens"] = share(trace.tokens + token_bias, 1 / (terms * heads * tokens), scale[:, :, None, None, None])
    return pieces


def _group(
    pieces: dict[str, torch.Tensor], embedding: torch.Tensor, granularity: str, convention: str, spatial: bool,
    normalize: bool, spec: ViTSpec,
) -> Decomposition:
    """Lay the pieces out in residual order with their labels: embed, L0 heads (or L0.attn), L0.mlp, ..., bias."""
    batch, dim, tokens = embedding.shape[0], embedding.shape[1], spec.tokens
    per_layer_heads = pieces["tokens"] if spatial else pieces["heads"]  # [B, L, H, (N,) d]
    if granularity == "layer":
        per_layer_heads = per_layer_heads.sum(2, keepdim=True)

    def at_cls(piece: torch.Tensor) -> torch.Tensor:
        """A pooled-token-only piece [B, ..., d] laid out over tokens: all of it at token 0."""
        if not spatial:
            return piece
        placed = piece.new_zeros(*piece.shape[:-1], tokens, dim)
        placed[..., 0, :] = piece
        return placed

    blocks, labels = [at_cls(pieces["embed"])[:, None]], ["embed"]
    for layer in range(spec.layers):
        blocks.append(per_layer_heads[:, layer])
        if granularity == "layer":
            labels.append(f"L{layer}.attn")
        else:
            labels.extend(f"L{layer}H{h}" for h in range(spec.heads))
        blocks.append(at_cls(pieces["mlps"][:, layer])[:, None])
        labels.append(f"L{layer}.mlp")
    if "bias" in pieces:
        bias = pieces["bias"].expand(batch, dim)
        blocks.append(at_cls(bias)[:, None])
        labels.append("bias")
    return Decomposition(
        components=torch.cat(blocks, 1),
        labels=labels,
        embedding=embedding,
        granularity=granularity,
        convention=convention,
        spatial=spatial,
        normalize=normalize,
    )

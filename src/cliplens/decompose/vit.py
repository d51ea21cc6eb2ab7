"""First-order decomposition of a CLS-pooled vision transformer (docs/methods/decomposition.md).

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
from ..labels import BIAS, EMBED, POOL_MLP, attention_label, head_label, mlp_label
from ..models.spec import BlockSpec, ViTSpec
from ..settings import Settings
from .map_head import MapReadOut, map_factorise, map_readout
from .result import Decomposition
from .shared import SharedForward

GRANULARITIES = ("layer", "head")  # what a ViT's pieces can be


def pool_rows(x: torch.Tensor, spec: ViTSpec, dim: int) -> torch.Tensor:
    """The pooled query row of a per-token tensor along `dim`: the CLS row, or the mean of the patch rows (avg pool).
    Everything the residual at the pooled position holds is linear in these rows (docs/methods/families.md#pooling)."""
    if spec.pool == "avg":
        return x.narrow(dim, spec.prefix_tokens, x.shape[dim] - spec.prefix_tokens).mean(dim)
    return x.select(dim, 0)


@dataclass(frozen=True)
class ReadOut:
    """LN_post's affine part and `proj`, folded once per convention: everything except the per-image 1/s."""

    matrix: torch.Tensor  # R [D, d]: diag(γ) P, centred (C R) in the separate convention
    heads: torch.Tensor  # Φ [L, H, d_h, d]: per-head out-projection followed by R
    out_bias: torch.Tensor  # [L, d]: each layer's out-projection bias read out, b_O R
    gamma: torch.Tensor  # [d]: 1ᵀ diag(γ) P, what a unit shift of every residual coordinate reads out as
    beta: torch.Tensor  # [d]: β P (+ the head's bias), LN_post's bias read out


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
    attn_scale: torch.Tensor | None  # [B, N]: 1/s of the LayerNorm over the heads' output (EVA02), else None
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

    def attention(self) -> torch.Tensor:
        """Every query's attention row per head, A [B, H, N, N]."""
        logits = torch.einsum("bhqe,bhne->bhqn", self.queries, self.keys) * self.queries.shape[-1] ** -0.5
        return logits.softmax(-1)

    def pooled_attention(self, spec: ViTSpec) -> torch.Tensor:
        """The pooled query's attention row per head [B, H, N] (the mean of the patch rows for avg pooling), each query
        row times the frozen 1/s of the LayerNorm over the heads' output when the block has one."""
        if spec.pool == "token":
            weights = self.cls_attention()
            return weights if self.attn_scale is None else weights * self.attn_scale[:, None, :1]
        weights = self.attention()
        if self.attn_scale is not None:
            weights = weights * self.attn_scale[:, None, :, None]
        return pool_rows(weights, spec, 2)


@dataclass
class Trace:
    """What one forward pass leaves at the CLS query: raw read-outs of embed and MLPs, head outputs before W_O."""

    residual: torch.Tensor  # r [B, D]
    embed: torch.Tensor  # [B, d], read out with the convention's matrix but not yet divided by s
    mlps: torch.Tensor  # [B, L, d], likewise
    heads: torch.Tensor  # [B, L, H, d_h]: Σ_m A_0m v_m per head (value bias included)
    tokens: torch.Tensor | None  # [B, L, H, N, d_h]: A_0m v_m per source token


@dataclass
class Factorised:
    """All pieces of a batch, heads kept as per-image coefficients times fixed per-head bases.

    Head (l, h) of image b is `coefficients[b, l, h] @ basis[l, h]` (k = d_h coefficients in the separate
    convention, d_h + 3 in the reference one, whose LN shares and biases ride on three per-image scalars); its
    token-m piece is `token_coefficients[b, l, h, m] @ token_basis[l, h]`. Statistics of a head therefore live in a
    k-dimensional space and expand exactly to d dimensions, which is what makes streaming them cheap. `settings` are
    those the factors were made with; `ViTDecomposer.group` lays out exactly those pieces, so the two cannot disagree.
    """

    settings: Settings
    embed: torch.Tensor  # [B, d]
    mlps: torch.Tensor  # [B, L, d]
    bias: torch.Tensor | None  # [B, d] in the separate convention
    coefficients: torch.Tensor  # [B, L, H, k]
    basis: torch.Tensor  # [L, H, k, d]
    token_coefficients: torch.Tensor | None  # [B, L, H, N, k]
    token_basis: torch.Tensor | None  # [L, H, k, d]
    embedding: torch.Tensor  # z [B, d]
    pool: torch.Tensor | None = None  # [B, d]: the MLP of a MAP head after its pooling (SigLIP), one piece

    def dense(self) -> torch.Tensor:
        """The pieces that are not heads, in residual order [B, P, d]: embed, each MLP, pool.mlp, bias."""
        extra = [piece[:, None] for piece in (self.pool, self.bias) if piece is not None]
        return torch.cat([self.embed[:, None], self.mlps] + extra, 1)

    def heads(self) -> torch.Tensor:
        return torch.einsum("blhk,lhkd->blhd", self.coefficients, self.basis)

    def tokens(self) -> torch.Tensor:
        return torch.einsum("blhnk,lhkd->blhnd", self.token_coefficients, self.token_basis)


class ViTDecomposer(SharedForward):
    """Decomposes images for one ViT spec; folded read-outs are cached per convention, and a batch's block states
    while it is shared (decompose/shared.py)."""

    def __init__(self, spec: ViTSpec):
        self.spec = spec
        self._readouts: dict[str, ReadOut] = {}
        self._map_readout: MapReadOut | None = None

    def readout(self, convention: str) -> ReadOut:
        if convention not in self._readouts:
            spec = self.spec
            matrix = spec.ln_post.weight[:, None] * spec.proj
            beta = spec.ln_post.bias @ spec.proj + (0 if spec.head_bias is None else spec.head_bias)
            gamma = matrix.sum(0)
            if convention == "separate":
                matrix = matrix - matrix.mean(0, keepdim=True)
            heads = torch.stack(
                [block.out_weight.T.reshape(spec.heads, spec.head_dim, spec.width) @ matrix for block in spec.blocks]
            )
            out_bias = torch.stack([block.out_bias @ matrix for block in spec.blocks])
            self._readouts[convention] = ReadOut(matrix, heads, out_bias, gamma, beta)
        return self._readouts[convention]

    def embed_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patchify, prepend CLS and the registers, add positions and apply ln_pre: x_0 [B, N, D]."""
        spec = self.spec
        patches = F.conv2d(images, spec.conv_weight, spec.conv_bias, stride=spec.patch_size).flatten(2).transpose(1, 2)
        prefix = [token.view(-1, spec.width).expand(images.shape[0], -1, -1)
                  for token in (spec.class_embedding, spec.registers) if token is not None]
        tokens = torch.cat(prefix + [patches], dim=1)
        if tokens.shape[1] != spec.tokens:
            raise CliplensError(
                f"images of size {tuple(images.shape[-2:])} give {tokens.shape[1]} tokens but the model expects "
                f"{spec.tokens} ({spec.image_size}px); preprocess images with lens.preprocess"
            )
        tokens = tokens + spec.positional_embedding
        return tokens if spec.ln_pre is None else spec.ln_pre(tokens)

    def layers(self, images: torch.Tensor) -> Iterator[LayerState]:
        """Run the transformer one block at a time, exposing what the decompositions read at each block; a shared
        batch replays the states of its one run."""
        if self._shared is not None:
            return iter(self.once("layers", images, lambda: list(self._run(images))))
        return self._run(images)

    def _run(self, images: torch.Tensor) -> Iterator[LayerState]:
        spec = self.spec
        x = self.embed_tokens(images)
        batch, n = x.shape[:2]
        for layer, block in enumerate(spec.blocks):
            qkv = F.linear(block.ln1(x), block.qkv_weight, block.qkv_bias)
            q, k, v = qkv.view(batch, n, 3, spec.heads, spec.head_dim).permute(2, 0, 3, 1, 4)
            if block.rope is not None:  # rotary positions turn queries and keys only: values stay linear
                q, k = block.rope(q), block.rope(k)
            attended = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d_h]
            written, attn_scale = attended.transpose(1, 2).reshape(batch, n, spec.width), None
            if block.attn_norm_eps is not None:  # LN over the heads' output: affine part and centring folded into
                # out_weight, which leaves the centred output as it is; one fused op gives it and the 1/s (5x a var)
                written, _, inv_s = torch.native_layer_norm(written, (spec.width,), None, None, block.attn_norm_eps)
                attn_scale = inv_s[..., 0]
            middle = x + F.linear(written, block.out_weight, block.out_bias)
            hidden = block.hidden(block.ln2(middle))
            mlp = F.linear(hidden, block.proj_weight, block.proj_bias)
            state = LayerState(layer, block, x, q, k, v, attended, attn_scale, middle, hidden, mlp)
            yield state
            x = middle + mlp

    def trace(self, images: torch.Tensor, convention: str, *, tokens: bool = False) -> Trace:
        readout = self.readout(convention)
        heads, mlps, token_values = [], [], []
        spec = self.spec
        for state in self.layers(images):
            if state.layer == 0:
                embed = pool_rows(state.residual, spec, 1) @ readout.matrix
            # the LN over the heads' output (if any) is affine at its frozen 1/s, which rides on the coefficients
            scale = 1 if state.attn_scale is None else state.attn_scale[:, None, :, None]
            heads.append(pool_rows(state.attended * scale, spec, 2))
            mlps.append(pool_rows(state.mlp, spec, 1) @ readout.matrix)
            if tokens:
                token_values.append(state.pooled_attention(spec)[..., None] * state.values)
        return Trace(
            residual=pool_rows(state.output, spec, 1),
            embed=embed,
            mlps=torch.stack(mlps, 1),
            heads=torch.stack(heads, 1),
            tokens=torch.stack(token_values, 1) if tokens else None,
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The image embedding z, computed from the spec (parity with the backend is a tested invariant)."""
        if self.spec.pool == "map":
            return self.factorise(images, Settings()).embedding
        trace = self.trace(images, "separate")
        return self.read_out(trace.residual)

    def read_out(self, residual: torch.Tensor) -> torch.Tensor:
        """ln_post, proj and the head's bias applied to the pooled residual: the embedding z."""
        spec = self.spec
        z = spec.ln_post(residual) @ spec.proj
        return z if spec.head_bias is None else z + spec.head_bias

    def factorise(self, images: torch.Tensor, settings: Settings, *, tokens: bool = False) -> Factorised:
        """Every piece of the batch, heads in coefficient form (docs/methods/decomposition.md#conventions bookkeeping,
        #computation folding).

        The per-token factors are kept when `settings` are spatial, or when `tokens` asks for them (CLS cells).
        """
        settings.require_granularity(GRANULARITIES)
        if self.spec.pool == "map":
            if self._map_readout is None:
                self._map_readout = map_readout(self.spec)
            parts = map_factorise(self.spec, self._map_readout, self.layers(images), settings,
                                  tokens or settings.spatial)
            return Factorised(settings=settings, **parts)
        convention, normalize, tokens = settings.convention, settings.normalize, tokens or settings.spatial
        spec, readout = self.spec, self.readout(convention)
        trace = self.trace(images, convention, tokens=tokens)
        r = trace.residual
        mean = r.mean(-1)
        inv_s = (r.var(-1, unbiased=False) + spec.ln_post.eps).rsqrt()
        embedding = self.read_out(r)
        inv_nu = 1 / embedding.norm(dim=-1) if normalize else torch.ones_like(mean)
        scale = inv_s * inv_nu
        per_head, per_token = trace.heads * scale[:, None, None, None], None
        if tokens:
            per_token = trace.tokens * scale[:, None, None, None, None]
        if convention == "separate":
            return Factorised(
                settings=settings,
                embed=trace.embed * scale[:, None],
                mlps=trace.mlps * scale[:, None, None],
                bias=(readout.out_bias.sum(0) * inv_s[:, None] + readout.beta) * inv_nu[:, None],
                coefficients=per_head,
                basis=readout.heads,
                token_coefficients=per_token,
                token_basis=readout.heads if tokens else None,
                embedding=embedding,
            )
        # reference: K top-level terms share LN_post's mean and bias uniformly; heads split their layer's share and
        # b_O over H, tokens split a head's share over N. The shares ride on the scalars (1/sν, μ/sν, 1/ν).
        share = 1 / (2 * spec.layers + 1)
        scalars = torch.stack([scale, mean * scale, inv_nu], -1)  # [B, 3]

        def offsets(split: int) -> torch.Tensor:
            rows = [readout.out_bias[:, None, :] / split, -share / split * readout.gamma.expand(spec.layers, 1, -1),
                    share / split * readout.beta.expand(spec.layers, 1, -1)]
            extra = torch.cat(rows, 1)[:, None].expand(-1, spec.heads, -1, -1)  # [L, H, 3, d]
            return torch.cat([readout.heads, extra], 2)

        dense_shift = share * (scale * mean)[:, None] * readout.gamma - share * inv_nu[:, None] * readout.beta
        batch, layers, heads = per_head.shape[:3]
        coefficients = torch.cat([per_head, scalars[:, None, None].expand(batch, layers, heads, 3)], -1)
        token_coefficients = token_basis = None
        if tokens:
            token_scalars = scalars[:, None, None, None].expand(batch, layers, heads, spec.tokens, 3)
            token_coefficients = torch.cat([per_token, token_scalars], -1)
            token_basis = offsets(spec.heads * spec.tokens)
        return Factorised(
            settings=settings,
            embed=trace.embed * scale[:, None] - dense_shift,
            mlps=trace.mlps * scale[:, None, None] - dense_shift[:, None],
            bias=None,
            coefficients=coefficients,
            basis=offsets(spec.heads),
            token_coefficients=token_coefficients,
            token_basis=token_basis,
            embedding=embedding,
        )

    def decompose(self, images: torch.Tensor, settings: Settings) -> Decomposition:
        return self.group(self.factorise(images, settings))

    def labels(self, settings: Settings) -> list[str]:
        """The labels of the pieces `decompose` gives with these settings, without decomposing anything."""
        settings.require_granularity(GRANULARITIES)
        return piece_labels(self.spec, settings)

    def head_spans(self, settings: Settings) -> dict[str, torch.Tensor]:
        """Per head label, rows [k, d] whose combinations make that head's piece for every image: its read-out basis
        (`Factorised.basis`). A head's statistics live in their span, so its principal components are found there
        in k dimensions instead of d. Empty through a MAP pool, whose heads have no fewer than d such rows."""
        if self.spec.pool == "map":
            return {}
        spec, readout = self.spec, self.readout(settings.convention)
        rows = readout.heads  # [L, H, d_h, d]
        if settings.convention != "separate":  # the reference's per-image scalars ride on b_O, γ and β rows
            shares = torch.stack([readout.out_bias, readout.gamma.expand_as(readout.out_bias),
                                  readout.beta.expand_as(readout.out_bias)], 1)  # [L, 3, d]
            rows = torch.cat([rows, shares[:, None].expand(-1, spec.heads, -1, -1)], 2)
        return {head_label(layer, head): rows[layer, head] for layer in range(spec.layers)
                for head in range(spec.heads)}

    def group(self, factors: Factorised) -> Decomposition:
        """The pieces of `factors` in residual order, as the settings they were made with define them."""
        heads = factors.tokens() if factors.settings.spatial else factors.heads()
        pieces = {"embed": factors.embed, "mlps": factors.mlps, "heads": heads}
        if factors.pool is not None:
            pieces["pool"] = factors.pool
        if factors.bias is not None:
            pieces["bias"] = factors.bias
        return _group(pieces, factors.embedding, factors.settings, self.spec)

    @staticmethod
    def cls_cells(factors: Factorised) -> torch.Tensor:
        """The CLS→CLS cell of every attention piece [B, A, d] (A = L·H heads, or L layers, by the factors'
        granularity): the part of a head that reads the CLS token's own value, what TextSpan's CLS ablation replaces.
        Needs factors made with tokens=True."""
        if factors.token_coefficients is None:
            raise CliplensError("CLS cells need the per-token factors: call factorise(..., tokens=True)")
        cells = torch.einsum("blhk,lhkd->blhd", factors.token_coefficients[:, :, :, 0], factors.token_basis)
        return cells.sum(2) if factors.settings.granularity == "layer" else cells.flatten(1, 2)


def piece_labels(spec: ViTSpec, settings: Settings) -> list[str]:
    """Piece labels in residual order: embed, L0H0.. (or L0.attn), L0.mlp, ..., pool.mlp (MAP head), bias (separate
    convention)."""
    labels = [EMBED]
    for layer in range(spec.layers):
        if settings.granularity == "layer":
            labels.append(attention_label(layer))
        else:
            labels.extend(head_label(layer, h) for h in range(spec.heads))
        labels.append(mlp_label(layer))
    if spec.pool == "map":
        labels.append(POOL_MLP)
    return labels + ([BIAS] if settings.convention == "separate" else [])


def _group(
    pieces: dict[str, torch.Tensor], embedding: torch.Tensor, settings: Settings, spec: ViTSpec
) -> Decomposition:
    """Lay the pieces out in residual order (embed, L0 heads or L0.attn, L0.mlp, ..., bias)."""
    tokens, dim, spatial = spec.tokens, embedding.shape[1], settings.spatial
    heads = pieces["heads"]  # [B, L, H, (N,) d]
    if settings.granularity == "layer":
        heads = heads.sum(2, keepdim=True)

    def at_cls(piece: torch.Tensor) -> torch.Tensor:
        """A pooled-token-only piece [B, d] as one piece [B, 1, (N,) d]: in spatial form all of it at token 0."""
        if not spatial:
            return piece[:, None]
        placed = piece.new_zeros(piece.shape[0], 1, tokens, dim)
        placed[:, 0, 0] = piece
        return placed

    blocks = [at_cls(pieces["embed"])]
    for layer in range(spec.layers):
        blocks += [heads[:, layer], at_cls(pieces["mlps"][:, layer])]
    blocks += [at_cls(pieces[name]) for name in ("pool", "bias") if name in pieces]
    return Decomposition(torch.cat(blocks, 1), piece_labels(spec, settings), embedding, settings)

"""SigLIP's attention-pool (MAP) head, decomposed exactly (docs/methods/families.md#map-head).

The head normalises every final token (LN, frozen at each token's own 1/s_t), reads them with one attention whose
query is a learned probe, projects, then adds a residual MLP of the pooled vector. With the attention weights A_jt of
pool head j frozen at the image's own values, the pooled vector before the MLP is linear in every final token, so a
piece c_t of the residual stream reads out as Σ_j K_jᵀ Σ_t ω_jt c_t with ω_jt = A_jt / s_t and K_j folding LN's γ and
centring, pool head j's value rows, the out-projection and the final projection. Layer, head and token pieces pass
through exactly; the MLP after the pool is one piece (`pool.mlp`), and the constants go to `bias`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F

from ..errors import CliplensError
from ..models.spec import ViTSpec
from ..settings import Settings


@dataclass(frozen=True)
class MapReadOut:
    keys: torch.Tensor  # K [J, D, d]: a residual vector weighted into pool head j, read out
    heads: torch.Tensor  # Φ [L, H, J·d_h, d]: head h's value-space output weighted into pool head j, read out
    out_bias: torch.Tensor  # [L, J, d]: each layer's attention out-bias weighted into pool head j, read out
    constant: torch.Tensor  # [d]: LN's β and the pool's value, out and head biases, read out


def map_readout(spec: ViTSpec) -> MapReadOut:
    head, ln = spec.map_head, spec.ln_post
    width, pools = spec.width, spec.map_head.heads
    centring = torch.eye(width, dtype=ln.weight.dtype, device=ln.weight.device) - 1 / width
    value_weight, value_bias = head.kv_weight[width:], head.kv_bias[width:]
    values = (value_weight @ (ln.weight[:, None] * centring)).view(pools, width // pools, width)  # W_v diag(γ) C
    out = (head.out_weight.T @ spec.proj).view(pools, width // pools, -1)
    keys = torch.einsum("jeD,jed->jDd", values, out)
    heads = torch.stack([torch.einsum("Dhf,jDd->hjfd", block.out_weight.view(width, spec.heads, spec.head_dim), keys)
                         .flatten(1, 2) for block in spec.blocks])
    out_bias = torch.einsum("lD,jDd->ljd", torch.stack([block.out_bias for block in spec.blocks]), keys)
    constant = ((value_weight @ ln.bias + value_bias) @ head.out_weight.T + head.out_bias) @ spec.proj
    if spec.head_bias is not None:
        constant = constant + spec.head_bias
    return MapReadOut(keys, heads, out_bias, constant)


def pool_weights(spec: ViTSpec, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [B, J, N], the probe's attention per pool head; the pooled vector before the pool's MLP [B, D])."""
    head, width = spec.map_head, spec.width
    pools = head.heads
    normed = spec.ln_post(final)
    kv = F.linear(normed, head.kv_weight, head.kv_bias).view(*final.shape[:2], 2, pools, width // pools)
    logits = torch.einsum("je,bnje->bjn", head.q.view(pools, -1), kv[:, :, 0]) * (width // pools) ** -0.5
    attention = logits.softmax(-1)
    pooled = torch.einsum("bjn,bnje->bje", attention, kv[:, :, 1]).flatten(1)
    return attention, F.linear(pooled, head.out_weight, head.out_bias)


def map_factorise(spec: ViTSpec, readout: MapReadOut, states: Iterable, settings: Settings,
                  tokens: bool) -> dict[str, torch.Tensor]:
    """Every piece of a MAP-pooled ViT's embedding in coefficient form, as the fields of `vit.Factorised`: head
    (l, h) is its J·d_h coefficients (the head's output weighted into each pool head) times Φ[l, h]. `states` are
    the decomposer's per-layer states of one batch."""
    if settings.convention != "separate":
        raise CliplensError("the reference convention's shares are derived for a LayerNorm on one pooled token; this "
                            "model pools with an attention head (MAP): use convention='separate'")
    attended, mlps, rows, values = [], [], [], []
    for state in states:
        if state.layer == 0:
            embed_tokens = state.residual
        scale = 1 if state.attn_scale is None else state.attn_scale[:, None, :, None]
        attended.append(state.attended * scale)
        mlps.append(state.mlp)
        if tokens:
            rows.append(state.attention() * scale)
            values.append(state.values)
    final = state.output
    attention, pooled = pool_weights(spec, final)
    omega = attention * (final.var(-1, unbiased=False) + spec.ln_post.eps).rsqrt()[:, None]  # A_jt / s_t

    def through(residual: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bjD,jDd->bd", torch.einsum("bjn,bnD->bjD", omega, residual), readout.keys)

    mlp = spec.map_head.mlp
    pool_mlp = F.linear(mlp.hidden(mlp.ln2(pooled)), mlp.proj_weight, mlp.proj_bias)
    embedding = (pooled + pool_mlp) @ spec.proj
    if spec.head_bias is not None:
        embedding = embedding + spec.head_bias
    inv_nu = 1 / embedding.norm(dim=-1, keepdim=True) if settings.normalize else embedding.new_ones(len(final), 1)
    coefficients = torch.stack([torch.einsum("bjn,bhnf->bhjf", omega, a).flatten(2) for a in attended], 1)
    token_coefficients = None
    if tokens:
        token_coefficients = torch.stack([torch.einsum("bjt,bhtm,bhmf->bhmjf", omega, a, v).flatten(3)
                                          for a, v in zip(rows, values)], 1) * inv_nu[:, :, None, None, None]
    bias = readout.constant + torch.einsum("bj,ljd->bd", omega.sum(-1), readout.out_bias)
    return dict(
        embed=through(embed_tokens) * inv_nu,
        mlps=torch.stack([through(mlp) for mlp in mlps], 1) * inv_nu[:, :, None],
        bias=bias * inv_nu,
        coefficients=coefficients * inv_nu[:, :, None, None],
        basis=readout.heads,
        token_coefficients=token_coefficients,
        token_basis=readout.heads if tokens else None,
        embedding=embedding,
        pool=(pool_mlp @ spec.proj) * inv_nu,
    )

"""Plain, backend-free descriptions of CLIP image encoders.

Adapters turn an open_clip or Hugging Face module into one of these specs once; every decomposition then works from
the spec alone. Keeping the weights in plain tensors is what lets cliplens compute pieces exactly without forking or
patching the backend's forward code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class LayerNormSpec:
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "silu":
        return torch.nn.functional.silu(x)
    if name == "gelu_tanh":  # SigLIP's (transformers' gelu_pytorch_tanh)
        return torch.nn.functional.gelu(x, approximate="tanh")
    return torch.nn.functional.gelu(x)


@dataclass(frozen=True)
class BlockSpec:
    """One pre-LN transformer block; LayerScale, if the backend has it, is already folded into the out weights.

    The optional fields describe the variants of timm's ViTs and EVA02 (docs/methods/families.md): a LayerNorm over
    the concatenated head outputs before the out-projection (`attn_norm_eps`; its affine part and centring are folded
    into out_weight/out_bias, so only the per-token 1/s is left to apply), rotary position embeddings on queries and
    keys (`rope`), and SwiGLU MLPs (`gate_*`, with an optional LayerNorm on the hidden units, `mlp_norm`).
    """

    ln1: LayerNormSpec
    qkv_weight: torch.Tensor  # [3D, D], rows q | k | v
    qkv_bias: torch.Tensor  # [3D]
    out_weight: torch.Tensor  # [D, D]
    out_bias: torch.Tensor  # [D]
    ln2: LayerNormSpec
    fc_weight: torch.Tensor  # [F, D]
    fc_bias: torch.Tensor  # [F]
    proj_weight: torch.Tensor  # [D, F]; column n is neuron n's write direction
    proj_bias: torch.Tensor  # [D]
    activation: str  # "gelu" | "gelu_tanh" | "quick_gelu" | "silu"
    attn_norm_eps: float | None = None  # heads' concatenated output is divided by its std before out_weight
    rope: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)  # [B, H, N, d_h] -> same
    gate_weight: torch.Tensor | None = None  # [F, D]: SwiGLU hidden = act(gate) * fc
    gate_bias: torch.Tensor | None = None
    mlp_norm: LayerNormSpec | None = None  # on the hidden units, before proj

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP's hidden units (what its proj reads) from the normalised input: act(fc x), or SwiGLU's
        act(gate x) ⊙ (fc x), then the optional LayerNorm on the hidden units."""
        fc = torch.nn.functional.linear(x, self.fc_weight, self.fc_bias)
        if self.gate_weight is None:
            hidden = activation(self.activation, fc)
        else:
            hidden = activation(self.activation, torch.nn.functional.linear(x, self.gate_weight, self.gate_bias)) * fc
        return hidden if self.mlp_norm is None else self.mlp_norm(hidden)

    @property
    def standard(self) -> bool:
        """A CLIP block: what the second-order lens (which reads neurons and queries) is derived for."""
        return self.attn_norm_eps is None and self.rope is None and self.gate_weight is None and self.mlp_norm is None


@dataclass(frozen=True)
class MapHeadSpec:
    """SigLIP's attention-pool head (timm AttentionPoolLatent with one probe): LN on every final token, one attention
    read by a learned probe query, an out-projection, then a residual MLP on the pooled vector."""

    heads: int
    q: torch.Tensor  # [D]: the probe's query after its projection (a constant per model)
    kv_weight: torch.Tensor  # [2D, D], rows k | v
    kv_bias: torch.Tensor  # [2D]
    out_weight: torch.Tensor  # [D, D]
    out_bias: torch.Tensor  # [D]
    mlp: BlockSpec  # only ln2 / fc / proj / activation are read: x + mlp(ln2(x))


@dataclass(frozen=True)
class ViTSpec:
    """A vision transformer: patchify, prepend CLS (and register tokens), add positions, ln_pre, blocks, pool,
    ln_post, proj.

    `pool` is "token" (CLIP: ln_post on the CLS token), "avg" (mean of the patch tokens, then ln_post: timm's fc_norm)
    or "map" (ln_post on every token, then the `map_head`); `head_bias` is the bias of a final linear head, if any.
    """

    patch_size: int
    image_size: int
    heads: int
    conv_weight: torch.Tensor  # [D, 3, p, p]
    class_embedding: torch.Tensor | None  # [D]; None for a model without a CLS token (SigLIP)
    positional_embedding: torch.Tensor  # [N, D], rows for CLS and registers included (zero where the model has none)
    ln_pre: LayerNormSpec | None
    blocks: tuple[BlockSpec, ...]
    ln_post: LayerNormSpec
    proj: torch.Tensor  # [D, d]
    conv_bias: torch.Tensor | None = None  # [D]
    registers: torch.Tensor | None = None  # [R, D]: register tokens, after CLS and before the patches
    pool: str = "token"
    head_bias: torch.Tensor | None = None  # [d]
    map_head: MapHeadSpec | None = None

    kind = "vit"

    @property
    def prefix_tokens(self) -> int:
        """CLS (if any) plus register tokens: the tokens before the patches."""
        return (self.class_embedding is not None) + (0 if self.registers is None else self.registers.shape[0])

    @property
    def standard(self) -> bool:
        """A CLIP ViT (CLS pooling, standard blocks): what the second-order lens and the reference convention read."""
        return self.pool == "token" and self.prefix_tokens == 1 and all(block.standard for block in self.blocks)

    @property
    def width(self) -> int:
        return self.conv_weight.shape[0]

    @property
    def layers(self) -> int:
        return len(self.blocks)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_width(self) -> int:
        return self.blocks[0].fc_weight.shape[0]

    @property
    def tokens(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def output_dim(self) -> int:
        return self.proj.shape[1]


@dataclass(frozen=True)
class ResNetPoolSpec:
    """A ModifiedResNet: an opaque convolutional trunk followed by the attention pool we decompose.

    The trunk is the backend's own modules, called as they are (nothing to decompose there); the pool is described by
    its weights.
    """

    trunk: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)  # images -> final layer-4 map [B, C, h, w]
    image_size: int
    heads: int
    positional_embedding: torch.Tensor  # [M, C], row 0 belongs to the mean token
    q_weight: torch.Tensor  # [C, C]
    q_bias: torch.Tensor
    k_weight: torch.Tensor
    k_bias: torch.Tensor
    v_weight: torch.Tensor  # [C, C]
    v_bias: torch.Tensor  # [C]
    c_weight: torch.Tensor  # [O, C]
    c_bias: torch.Tensor  # [O]

    kind = "resnet"

    @property
    def channels(self) -> int:
        return self.v_weight.shape[1]

    @property
    def head_dim(self) -> int:
        return self.v_weight.shape[0] // self.heads

    @property
    def tokens(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def output_dim(self) -> int:
        return self.c_weight.shape[0]


Spec = ViTSpec | ResNetPoolSpec

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


@dataclass(frozen=True)
class BlockSpec:
    """One pre-LN transformer block; LayerScale, if the backend has it, is already folded into the out weights."""

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
    activation: str  # "gelu" | "quick_gelu"


@dataclass(frozen=True)
class ViTSpec:
    """A CLS-pooled vision transformer: patchify, add CLS and positions, ln_pre, blocks, ln_post on CLS, proj."""

    patch_size: int
    image_size: int
    heads: int
    conv_weight: torch.Tensor  # [D, 3, p, p], no bias
    class_embedding: torch.Tensor  # [D]
    positional_embedding: torch.Tensor  # [N, D]
    ln_pre: LayerNormSpec
    blocks: tuple[BlockSpec, ...]
    ln_post: LayerNormSpec
    proj: torch.Tensor  # [D, d]

    kind = "vit"

    @property
    def width(self) -> int:
        return self.class_embedding.shape[0]

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

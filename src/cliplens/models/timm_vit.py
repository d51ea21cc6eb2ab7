"""timm backend: timm vision transformers (plain ViT, DeiT, DINOv2 with or without registers, SigLIP, EVA02) as the
ViT spec, and `timm:<name>` ids (random init or a local weights file).

open_clip's SigLIP and EVA-CLIP towers are timm models inside open_clip's `TimmModel`; `tower_spec` reads them here
too, with open_clip's projection composed onto the spec's read-out. Every variant whose decomposition
docs/methods/families.md does not derive is refused by name.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import CliplensError
from ..extras import require
from .spec import BlockSpec, LayerNormSpec, MapHeadSpec, ViTSpec

SUPPORTED = ("timm VisionTransformer (plain ViT, DeiT, DINOv2, registers, SigLIP's MAP head) and Eva (EVA02) with CLS, "
             "mean or MAP pooling")
ACTIVATIONS = {nn.GELU: "gelu", nn.SiLU: "silu"}


def _refuse(what: str) -> CliplensError:
    return CliplensError(f"{what} is not supported; cliplens decomposes {SUPPORTED}")


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _layer_norm(module: nn.Module, where: str) -> LayerNormSpec:
    if type(module) is not nn.LayerNorm and type(module).__name__ != "LayerNorm":
        raise _refuse(f"{type(module).__name__} at {where} (cliplens reads LayerNorm)")
    if module.weight is None or module.bias is None:
        raise _refuse(f"a LayerNorm without affine weights at {where}")
    return LayerNormSpec(module.weight, module.bias, module.eps)


def _activation(module: nn.Module) -> str:
    for kind, name in ACTIVATIONS.items():
        if type(module) is kind and getattr(module, "approximate", "none") == "none":
            return name
    raise _refuse(f"MLP activation {module!r}")


def _mlp(mlp: nn.Module) -> dict:
    """fc / gate / proj weights of timm's Mlp, SwiGLU and GluMlp (packed SwiGLU)."""
    kind = type(mlp).__name__
    fields = {"proj_weight": mlp.fc2.weight, "proj_bias": mlp.fc2.bias, "activation": _activation(mlp.act),
              "mlp_norm": None if _is_identity(getattr(mlp, "norm", None)) else _layer_norm(mlp.norm, "mlp.norm")}
    if kind == "Mlp":
        fields.update(fc_weight=mlp.fc1.weight, fc_bias=mlp.fc1.bias)
    elif kind == "SwiGLU":
        fields.update(fc_weight=mlp.fc1_x.weight, fc_bias=mlp.fc1_x.bias, gate_weight=mlp.fc1_g.weight,
                      gate_bias=mlp.fc1_g.bias)
    elif kind == "GluMlp":
        weights, biases = mlp.fc1.weight.chunk(2), mlp.fc1.bias.chunk(2)
        fc, gate = (0, 1) if mlp.gate_last else (1, 0)  # gate_last: x1 * act(x2)
        fields.update(fc_weight=weights[fc], fc_bias=biases[fc], gate_weight=weights[gate], gate_bias=biases[gate])
    else:
        raise _refuse(f"MLP type {kind}")
    for name in ("fc_bias", "gate_bias", "proj_bias"):
        if name in fields and fields[name] is None:
            raise _refuse(f"an MLP without {name.split('_')[0]} bias")
    return fields


def _qkv(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused [3D, D] weights and [3D] bias from timm's fused qkv (with or without separate q/v biases) or q/k/v."""
    if getattr(attn, "qkv", None) is not None:
        weight = attn.qkv.weight
        if getattr(attn, "q_bias", None) is not None:
            bias = torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
        elif attn.qkv.bias is not None:
            bias = attn.qkv.bias
        else:
            bias = weight.new_zeros(weight.shape[0])
        return weight, bias
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    bias = [p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0]) for p in projections]
    return torch.cat([p.weight for p in projections]), torch.cat(bias)


def _rope(embedding: torch.Tensor, prefix: int, half: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rotary positions as EVA02 applies them: to the patch tokens' queries or keys, prefix tokens untouched."""
    from timm.layers import apply_rot_embed_cat

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :, :prefix], apply_rot_embed_cat(x[:, :, prefix:], embedding, half=half)], 2)

    return rotate


def _block(block: nn.Module, rope: Callable | None, where: str) -> BlockSpec:
    kind = type(block).__name__
    if kind not in ("Block", "EvaBlock"):
        raise _refuse(f"transformer block type {kind} ({where})")
    attn = block.attn
    if not (_is_identity(getattr(attn, "q_norm", None)) and _is_identity(getattr(attn, "k_norm", None))):
        raise _refuse(f"qk-norm attention ({where})")
    if getattr(attn, "gate", None) is not None:
        raise _refuse(f"gated attention ({where})")
    if abs(attn.scale - attn.head_dim ** -0.5) > 1e-12:
        raise _refuse(f"attention with a custom scale ({where})")
    qkv_weight, qkv_bias = _qkv(attn)
    out_weight, out_bias = attn.proj.weight, attn.proj.bias
    if out_bias is None:
        out_bias = out_weight.new_zeros(out_weight.shape[0])
    attn_norm_eps = None
    if not _is_identity(getattr(attn, "norm", None)):  # LN over the heads' output: fold γ, β and the centring
        norm = _layer_norm(attn.norm, f"{where}.attn.norm")
        centred = norm.weight[:, None] * (torch.eye(len(norm.weight), dtype=norm.weight.dtype,
                                                    device=norm.weight.device) - 1 / len(norm.weight))
        out_weight, out_bias, attn_norm_eps = out_weight @ centred, out_weight @ norm.bias + out_bias, norm.eps
    fields = _mlp(block.mlp)
    scales = (block.ls1, block.ls2) if kind == "Block" else (block.gamma_1, block.gamma_2)
    ls1, ls2 = (scale.gamma if isinstance(scale, nn.Module) and hasattr(scale, "gamma") else
                scale if isinstance(scale, torch.Tensor) else None for scale in scales)
    if ls1 is not None:  # LayerScale is a per-channel scale after the out-projection: fold it in
        out_weight, out_bias = ls1[:, None] * out_weight, ls1 * out_bias
    if ls2 is not None:
        fields.update(proj_weight=ls2[:, None] * fields["proj_weight"], proj_bias=ls2 * fields["proj_bias"])
    return BlockSpec(ln1=_layer_norm(block.norm1, f"{where}.norm1"), qkv_weight=qkv_weight, qkv_bias=qkv_bias,
                     out_weight=out_weight, out_bias=out_bias, ln2=_layer_norm(block.norm2, f"{where}.norm2"),
                     attn_norm_eps=attn_norm_eps, rope=rope, **fields)


def _map_head(pool: nn.Module) -> MapHeadSpec:
    if pool.latent_len != 1 or pool.pos_embed is not None or pool.pool != "token":
        raise _refuse("an attention-pool head with several probes or its own positions")
    if not (_is_identity(pool.q_norm) and _is_identity(pool.k_norm)) or pool.mlp is None:
        raise _refuse("an attention-pool head with qk-norm or without its MLP")
    query = pool.q(pool.latent)[0, 0]
    mlp = BlockSpec(ln1=None, qkv_weight=None, qkv_bias=None, out_weight=None, out_bias=None,
                    ln2=_layer_norm(pool.norm, "attn_pool.norm"), **_mlp(pool.mlp))
    return MapHeadSpec(heads=pool.num_heads, q=query, kv_weight=pool.kv.weight, kv_bias=pool.kv.bias,
                       out_weight=pool.proj.weight, out_bias=pool.proj.bias, mlp=mlp)


def _linear(module: nn.Module | None, what: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight [out, in], bias) of an optional final linear layer; (None, None) for none."""
    if _is_identity(module) or (isinstance(module, nn.Sequential) and len(module) == 0):
        return None, None
    if type(module) is not nn.Linear:
        raise _refuse(f"{what} of type {type(module).__name__}")
    return module.weight, module.bias


def vit_spec(model: nn.Module, after: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)) -> ViTSpec:
    """Describe a timm VisionTransformer or Eva; `after` is a linear layer applied to its output (open_clip's)."""
    kind = type(model).__name__
    if kind not in ("VisionTransformer", "Eva"):
        raise _refuse(f"timm model type {kind}")
    if getattr(model, "dist_token", None) is not None:
        raise _refuse("a distilled DeiT (two heads averaged)")
    if model.training and not _is_identity(getattr(model, "patch_drop", None)):
        raise CliplensError("patch dropout is active (model in train mode); call model.eval() first")
    embed = model.patch_embed
    if type(embed.proj) is not nn.Conv2d or not _is_identity(embed.norm) or embed.proj.stride != embed.proj.kernel_size:
        raise _refuse("a patch embedding other than one strided convolution")
    registers = getattr(model, "reg_token", None)
    prefix = model.num_prefix_tokens
    grid = embed.grid_size
    width = embed.proj.out_channels
    cls_token = getattr(model, "cls_token", None)
    pos = model.pos_embed
    if pos is None:
        pos = embed.proj.weight.new_zeros(1, prefix + grid[0] * grid[1], width)
    elif model.no_embed_class:  # positions for the patches only: prefix tokens get none
        pos = torch.cat([pos.new_zeros(1, prefix, width), pos], 1)
    rope = None
    if getattr(model, "rope", None) is not None:
        if getattr(model, "rope_mixed", False) or not hasattr(model.rope, "feat_shape"):
            raise _refuse("mixed or grid-free rotary position embeddings")
        rope = _rope(model.rope.get_embed(), prefix, getattr(model.blocks[0].attn, "rotate_half", False))
    blocks = tuple(_block(block, rope, f"blocks.{i}") for i, block in enumerate(model.blocks))
    pool, map_head = model.global_pool, None
    if getattr(model, "attn_pool", None) is not None:
        pool, map_head = "map", _map_head(model.attn_pool)
    if pool == "token" and cls_token is None:
        raise _refuse("token pooling without a class token")
    if pool in ("token", "map"):
        if not _is_identity(model.fc_norm):
            raise _refuse(f"{pool} pooling with an fc_norm")
        ln_post = _layer_norm(model.norm, "norm")
    elif pool == "avg":
        if not _is_identity(model.norm):
            raise _refuse("mean pooling of per-token normalised tokens (norm before the pool)")
        ln_post = _layer_norm(model.fc_norm, "fc_norm")
    else:
        raise _refuse(f"global_pool={pool!r}")
    proj, bias = torch.eye(width, dtype=pos.dtype, device=pos.device), None
    for weight, b in (_linear(model.head, "head"), after):
        if weight is None:
            continue
        proj, bias = proj @ weight.T, None if bias is None else bias @ weight.T
        if b is not None:
            bias = b if bias is None else bias + b
    return ViTSpec(
        patch_size=embed.proj.kernel_size[0],
        image_size=embed.img_size[0],
        heads=model.blocks[0].attn.num_heads,
        conv_weight=embed.proj.weight,
        conv_bias=embed.proj.bias,
        class_embedding=None if cls_token is None else cls_token[0, 0],
        registers=None if registers is None else registers[0],
        positional_embedding=pos[0],
        ln_pre=None if _is_identity(model.norm_pre) else _layer_norm(model.norm_pre, "norm_pre"),
        blocks=blocks,
        ln_post=ln_post,
        proj=proj,
        pool=pool,
        head_bias=bias,
        map_head=map_head,
    )


def tower_spec(visual: nn.Module) -> ViTSpec:
    """open_clip's TimmModel (SigLIP, EVA-CLIP towers): the trunk's spec with open_clip's projection composed on."""
    layers = dict(visual.head.named_children())
    if set(layers) - {"drop", "proj"}:
        raise _refuse(f"open_clip's timm head with {', '.join(sorted(set(layers) - {'drop', 'proj'}))}")
    return vit_spec(visual.trunk, _linear(layers.get("proj"), "open_clip projection"))


def create(name: str, pretrained: str | None, *, seed: int, read_state_dict: Callable) -> tuple[nn.Module, Callable]:
    """(model, preprocess) for `timm:<name>`: a seeded random init, or a local weights file (safetensors or a plain
    state dict; never a pickle). The pooled representation is the output: the classifier head is kept only when the
    weights file has one."""
    require("timm", "timm", user=f"model timm:{name}")
    import timm

    if not timm.list_models(name):
        raise CliplensError(f"unknown timm model {name!r}; timm.list_models('*vit*') lists them")
    state = None if pretrained is None else read_state_dict(pretrained)
    classes = state["head.weight"].shape[0] if state is not None and "head.weight" in state else 0
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=classes)
    if state is not None:
        from .weights import load_weights

        load_weights(model, state, f"weights file {pretrained}", f"timm:{name}", "check the timm model name")
    import timm.data

    return model, timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))

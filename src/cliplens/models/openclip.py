"""open_clip backend: build models, and describe their image towers as plain specs.

Only the variants whose decomposition docs/methods/decomposition.md derives are described; anything else is refused by
name, so a user never gets pieces that silently fail to add up.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CliplensError
from ..io.paths import is_file
from .spec import BlockSpec, LayerNormSpec, ResNetPoolSpec, ViTSpec
from .weights import load_weights

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
TOKENIZER_VARIABLE = "CLIPLENS_TOKENIZER"  # a local folder with the tokenizer files of a model whose tokenizer is on a hub


def _layer_norm(module: nn.Module) -> LayerNormSpec:
    return LayerNormSpec(module.weight, module.bias, module.eps)


def _activation_name(module: nn.Module) -> str:
    from open_clip.transformer import QuickGELU

    if isinstance(module, QuickGELU):
        return "quick_gelu"
    if isinstance(module, nn.GELU) and module.approximate == "none":
        return "gelu"
    raise CliplensError(f"MLP activation {module!r} is not supported; cliplens handles exact GELU and QuickGELU")


def _block_spec(block: nn.Module) -> BlockSpec:
    from open_clip.transformer import LayerScale, ResidualAttentionBlock

    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        raise CliplensError(
            f"transformer block type {type(block).__name__} (custom attention: scaled heads, qk-norm or cosine "
            "attention) is not supported; cliplens decomposes the standard ResidualAttentionBlock"
        )
    attn = block.attn
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.in_proj_bias is None:
        raise CliplensError("attention with separate q/k/v dimensions or extra k/v biases is not supported")

    def gamma(scale: nn.Module) -> torch.Tensor | None:
        return scale.gamma if isinstance(scale, LayerScale) else None

    ls1, ls2 = gamma(block.ls_1), gamma(block.ls_2)
    out_weight, out_bias = attn.out_proj.weight, attn.out_proj.bias
    proj_weight, proj_bias = block.mlp.c_proj.weight, block.mlp.c_proj.bias
    if ls1 is not None:  # LayerScale is a per-channel scale after the out-projection: fold it in
        out_weight, out_bias = ls1[:, None] * out_weight, ls1 * out_bias
    if ls2 is not None:
        proj_weight, proj_bias = ls2[:, None] * proj_weight, ls2 * proj_bias
    return BlockSpec(
        ln1=_layer_norm(block.ln_1),
        qkv_weight=attn.in_proj_weight,
        qkv_bias=attn.in_proj_bias,
        out_weight=out_weight,
        out_bias=out_bias,
        ln2=_layer_norm(block.ln_2),
        fc_weight=block.mlp.c_fc.weight,
        fc_bias=block.mlp.c_fc.bias,
        proj_weight=proj_weight,
        proj_bias=proj_bias,
        activation=_activation_name(block.mlp.gelu),
    )


def vit_spec(visual: nn.Module) -> ViTSpec:
    """Describe an open_clip VisionTransformer; refuse pooling variants whose decomposition is not derived."""
    if visual.attn_pool is not None:
        raise CliplensError("attentional pooler (CoCa-style attn_pool) is not supported; use a CLS-pooled CLIP ViT")
    if visual.pool_type != "tok":
        raise CliplensError(f"pool_type={visual.pool_type!r} is not supported; cliplens decomposes CLS ('tok') pooling")
    if isinstance(visual.ln_pre, nn.Identity):
        raise CliplensError("ViTs without ln_pre (no_ln_pre=True) are not supported")
    if visual.proj is None:
        raise CliplensError("this ViT has no output projection (pruned head); load the full CLIP model")
    if visual.training and not isinstance(visual.patch_dropout, nn.Identity):
        raise CliplensError("patch dropout is active (model in train mode); call model.eval() first")
    blocks = tuple(_block_spec(block) for block in visual.transformer.resblocks)
    return ViTSpec(
        patch_size=visual.conv1.kernel_size[0],
        image_size=visual.image_size[0],
        heads=visual.transformer.resblocks[0].attn.num_heads,
        conv_weight=visual.conv1.weight,
        class_embedding=visual.class_embedding,
        positional_embedding=visual.positional_embedding,
        ln_pre=_layer_norm(visual.ln_pre),
        blocks=blocks,
        ln_post=_layer_norm(visual.ln_post),
        proj=visual.proj,
    )


def resnet_spec(visual: nn.Module) -> ResNetPoolSpec:
    """Describe an open_clip ModifiedResNet: its own trunk modules plus the attention pool's weights."""
    pool = visual.attnpool

    def trunk(images: torch.Tensor) -> torch.Tensor:
        x = visual.stem(images)
        return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))

    return ResNetPoolSpec(
        trunk=trunk,
        image_size=visual.image_size,
        heads=pool.num_heads,
        positional_embedding=pool.positional_embedding,
        q_weight=pool.q_proj.weight,
        q_bias=pool.q_proj.bias,
        k_weight=pool.k_proj.weight,
        k_bias=pool.k_proj.bias,
        v_weight=pool.v_proj.weight,
        v_bias=pool.v_proj.bias,
        c_weight=pool.c_proj.weight,
        c_bias=pool.c_proj.bias,
    )


def spec_of(model: nn.Module) -> ViTSpec | ResNetPoolSpec:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer

    visual = model.visual
    if isinstance(visual, VisionTransformer):
        return vit_spec(visual)
    if isinstance(visual, ModifiedResNet):
        return resnet_spec(visual)
    if isinstance(visual, TimmModel):
        from .timm_vit import tower_spec

        return tower_spec(visual)
    raise CliplensError(f"image tower {type(visual).__name__} is not supported; cliplens handles CLIP ViTs and ResNets, "
                        "and timm-backed ViT towers (SigLIP, EVA-CLIP)")


def is_checkpoint_path(pretrained: str) -> bool:
    return pretrained.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in pretrained or is_file(pretrained)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file or a plain PyTorch state dict (never unpickling arbitrary objects)."""
    file = Path(path).expanduser()
    if not is_file(file):
        raise CliplensError(f"checkpoint {file} does not exist; pass the path of a .safetensors or .pt file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file)
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CliplensError(
            f"cannot read checkpoint {file} ({type(exc).__name__}); use a safetensors file or a plain state dict "
            "saved with torch.save (TorchScript archives are not read)"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CliplensError(f"checkpoint {file} is not a mapping of parameter names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def create(name: str, pretrained: str | None, *, seed: int) -> tuple[nn.Module, object, object]:
    """(model, preprocess, tokenizer) for an open_clip id: seeded random init, a pretrained tag, or a file."""
    import open_clip

    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "open_clip.list_models() lists them"
        raise CliplensError(f"unknown model id {name!r}; {hint}")
    tag = None
    if pretrained is not None and not is_checkpoint_path(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise CliplensError(
                f"{name} has no pretrained tag {pretrained!r}; valid tags: {', '.join(tags) or 'none'} "
                "(or pass the path of a checkpoint file)"
            )
        tag = pretrained
    torch.manual_seed(seed)
    logging.disable(logging.ERROR)  # open_clip logs its own download errors and random-init warnings; we say it once
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except (OSError, RuntimeError, ValueError) as exc:
        if tag is None:
            raise
        raise CliplensError(
            f"weights for {name}/{tag} are not in the local cache and cannot be downloaded here ({type(exc).__name__}); "
            f"download them on a connected machine and pass pretrained='/path/to/weights.safetensors'"
        ) from exc
    finally:
        logging.disable(logging.NOTSET)
    if pretrained is not None and tag is None:
        load_weights(model, read_state_dict(pretrained), f"checkpoint {pretrained}", name,
                     "check the model id (OpenAI weights need a '-quickgelu' id)")
    return model, preprocess, lazy_tokenizer(name)


def lazy_tokenizer(name: str) -> Callable[[list[str]], torch.Tensor]:
    """The model's tokenizer, built on the first text: SigLIP's and EVA-CLIP's live on a hub."""
    from .hf import deferred

    return deferred(lambda: _tokenizer(name))


def _tokenizer(name: str) -> Callable:
    """open_clip's tokenizer for `name`; a hub tokenizer from the $CLIPLENS_TOKENIZER folder when that is set, and a
    one-line error naming that variable when the hub cannot be reached."""
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    text = (open_clip.get_model_config(name) or {}).get("text_cfg", {})
    hub = text.get("hf_tokenizer_name") or ("SigLIP's sentencepiece files" if "siglip" in name.lower() else None)
    if hub is None:
        return open_clip.get_tokenizer(name)  # shipped inside open_clip
    remedy = (f"download the tokenizer on a connected machine (huggingface-cli download {hub} --local-dir DIR) and set "
              f"{TOKENIZER_VARIABLE}=DIR")
    folder = os.environ.get(TOKENIZER_VARIABLE)
    if folder:
        if not Path(folder).expanduser().is_dir():
            raise CliplensError(f"{TOKENIZER_VARIABLE}={folder!r} is not a folder; {remedy}")
        try:
            return HFTokenizer(str(Path(folder).expanduser()), context_length=text.get("context_length", 77),
                               tokenizer_mode=text.get("tokenizer_mode"), **text.get("tokenizer_kwargs", {}))
        except (OSError, ValueError) as exc:
            raise CliplensError(f"{TOKENIZER_VARIABLE}={folder!r} holds no tokenizer transformers reads "
                                f"({type(exc).__name__}); {remedy}") from exc
    from .hf import hub_unreachable

    why = hub_unreachable(text.get("hf_tokenizer_name", "timm/ViT-B-16-SigLIP"))
    if why is not None:
        raise CliplensError(f"{name}'s tokenizer is not shipped with open_clip and cannot be downloaded here ({why}); "
                            f"{remedy}")
    try:
        return open_clip.get_tokenizer(name)
    except (OSError, ValueError) as exc:
        raise CliplensError(f"{name}'s tokenizer could not be loaded ({type(exc).__name__}); {remedy}") from exc

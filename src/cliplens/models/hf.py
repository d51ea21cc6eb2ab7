"""Hugging Face backend: `CLIPModel` (or `CLIPVisionModelWithProjection`) described as the same ViT spec.

HF names map one-to-one onto the open_clip ones (docs/methods/decomposition.md#backends); only q/k/v are separate
linears here, so we concatenate them into the fused layout the decomposition uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CliplensError
from ..extras import require
from ..io.paths import is_dir
from .spec import BlockSpec, LayerNormSpec, ViTSpec

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def _layer_norm(module: nn.LayerNorm) -> LayerNormSpec:
    return LayerNormSpec(module.weight, module.bias, module.eps)


def vit_spec(model: nn.Module) -> ViTSpec:
    vision, projection = model.vision_model, model.visual_projection
    config = vision.config
    if config.hidden_act not in ACTIVATIONS:
        raise CliplensError(f"activation {config.hidden_act!r} is not supported; cliplens handles gelu and quick_gelu")
    if projection.bias is not None:
        raise CliplensError("a visual projection with a bias is not a CLIP model; cliplens cannot read it out")
    blocks = []
    for layer in vision.encoder.layers:
        attn, mlp = layer.self_attn, layer.mlp
        blocks.append(
            BlockSpec(
                ln1=_layer_norm(layer.layer_norm1),
                qkv_weight=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                qkv_bias=torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
                out_weight=attn.out_proj.weight,
                out_bias=attn.out_proj.bias,
                ln2=_layer_norm(layer.layer_norm2),
                fc_weight=mlp.fc1.weight,
                fc_bias=mlp.fc1.bias,
                proj_weight=mlp.fc2.weight,
                proj_bias=mlp.fc2.bias,
                activation=ACTIVATIONS[config.hidden_act],
            )
        )
    embeddings = vision.embeddings
    return ViTSpec(
        patch_size=config.patch_size,
        image_size=config.image_size,
        heads=config.num_attention_heads,
        conv_weight=embeddings.patch_embedding.weight,
        class_embedding=embeddings.class_embedding,
        positional_embedding=embeddings.position_embedding.weight,
        ln_pre=_layer_norm(vision.pre_layrnorm),
        blocks=tuple(blocks),
        ln_post=_layer_norm(vision.post_layernorm),
        proj=projection.weight.T,
    )


def pooled(output: object) -> torch.Tensor:
    """transformers >= 5 returns a model output from get_*_features; older versions return the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


PROBE_TIMEOUT_S = 5.0  # one request to the Hub; a connected machine answers in well under a second
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def create(ident: str) -> tuple[nn.Module, Callable, Callable | None]:
    """(model, preprocess, tokenizer) for a Hub repo id or a local folder.

    A folder or a cached id is read without the network. Otherwise the files are downloaded, unless Hugging Face's
    offline variables are set or one quick request finds the Hub unreachable: then it fails at once, instead of after
    the half minute of retries the Hub client spends on each file."""
    require("hf", "transformers", user=f"model hf:{ident}")
    remedy = "download it on a connected machine (huggingface-cli download) and pass hf:/path/to/folder"
    local = is_dir(Path(ident).expanduser())
    try:
        return _from_pretrained(ident, local_files_only=True)
    except (OSError, ValueError) as exc:
        if local:
            raise CliplensError(f"the folder {ident!r} holds no CLIP model that transformers reads "
                                f"({type(exc).__name__}); {remedy}") from exc
    offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")]
    why = f"{offline[0]} is set" if offline else hub_unreachable(ident)
    if why is not None:
        raise CliplensError(f"CLIP model {ident!r} is not in the local Hugging Face cache, and it cannot be downloaded "
                            f"here ({why}); {remedy}")
    try:
        return _from_pretrained(ident, local_files_only=False)
    except (OSError, ValueError) as exc:
        raise CliplensError(f"CLIP model {ident!r} could not be downloaded ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else ''}); {remedy}") from exc


def hub_unreachable(ident: str) -> str | None:
    """Why the Hugging Face Hub cannot be reached, in a few words, or None when it answered (whatever it said: a
    missing or gated repository is for the download to report)."""
    from huggingface_hub import model_info
    from huggingface_hub.utils import HfHubHTTPError

    try:
        model_info(ident, timeout=PROBE_TIMEOUT_S)
    except (HfHubHTTPError, ValueError):  # the Hub answered with an error, or the id is malformed: not a network issue
        return None
    except Exception as exc:  # deliberate: the HTTP client's connection and timeout errors differ between versions
        return f"the Hugging Face Hub is unreachable: {type(exc).__name__}"
    return None


def _from_pretrained(ident: str, *, local_files_only: bool) -> tuple[nn.Module, Callable, Callable]:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    model = CLIPModel.from_pretrained(ident, attn_implementation="eager", local_files_only=local_files_only)
    processor = CLIPImageProcessor.from_pretrained(ident, local_files_only=local_files_only)
    tokenizer = CLIPTokenizerFast.from_pretrained(ident, local_files_only=local_files_only)

    def preprocess(image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    return model, preprocess, tokenize


def standard_transform(size: int):
    """CLIP's eval transform (bicubic short-side resize, centre crop, CLIP mean/std), via open_clip."""
    from open_clip import image_transform

    return image_transform(size, is_train=False)

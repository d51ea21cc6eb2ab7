"""Hugging Face backend: CLIP (`CLIPModel`) and SigLIP (`SiglipModel`, or its vision tower `SiglipVisionModel`)
described as the same ViT spec, one adapter per family.

HF names map one-to-one onto the open_clip ones (docs/methods/decomposition.md#backends); only q/k/v are separate
linears here, so we concatenate them into the fused layout the decomposition uses. SigLIP's attention-pool head
becomes the spec's MAP head, decomposed by `decompose/map_head.py` (docs/methods/families.md#map-head).
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
from .spec import BlockSpec, LayerNormSpec, MapHeadSpec, ViTSpec

ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}
FAMILIES = {"clip": "CLIP", "siglip": "SigLIP", "siglip_vision_model": "SigLIP"}  # config.model_type -> family
SUPPORTED = "CLIP (CLIPModel) and SigLIP (SiglipModel, SiglipVisionModel) vision transformers"
# transformers' "eager" attention takes its softmax in float32 even in a float64 model, which would cap the backend's
# own forward (what `verify` checks Σ pieces against) at ~1e-8; "sdpa" computes in the model's precision
ATTENTION = "sdpa"


def family(config) -> str:
    """"CLIP" or "SigLIP" for a model's config; any other model type is refused by name."""
    if config.model_type not in FAMILIES:
        raise CliplensError(f"Hugging Face model type {config.model_type!r} is not supported; hf: reads {SUPPORTED}")
    return FAMILIES[config.model_type]


def _layer_norm(module: nn.LayerNorm) -> LayerNormSpec:
    return LayerNormSpec(module.weight, module.bias, module.eps)


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise CliplensError(f"activation {name!r} is not supported; cliplens handles {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _mlp(mlp: nn.Module, activation: str) -> dict:
    return dict(fc_weight=mlp.fc1.weight, fc_bias=mlp.fc1.bias, proj_weight=mlp.fc2.weight, proj_bias=mlp.fc2.bias,
                activation=activation)


def _blocks(vision: nn.Module) -> tuple[BlockSpec, ...]:
    """The encoder layers, which CLIP and SigLIP share: pre-LN attention with q/k/v linears, then a two-layer MLP."""
    activation = _activation(vision.config.hidden_act)
    blocks = []
    for layer in vision.encoder.layers:
        attn = layer.self_attn
        blocks.append(
            BlockSpec(
                ln1=_layer_norm(layer.layer_norm1),
                qkv_weight=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]),
                qkv_bias=torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]),
                out_weight=attn.out_proj.weight,
                out_bias=attn.out_proj.bias,
                ln2=_layer_norm(layer.layer_norm2),
                **_mlp(layer.mlp, activation),
            )
        )
    return tuple(blocks)


def vit_spec(model: nn.Module) -> ViTSpec:
    return _siglip_spec(model) if family(model.config) == "SigLIP" else _clip_spec(model)


def _clip_spec(model: nn.Module) -> ViTSpec:
    vision, projection = model.vision_model, model.visual_projection
    config = vision.config
    if projection.bias is not None:
        raise CliplensError("a visual projection with a bias is not a CLIP model; cliplens cannot read it out")
    embeddings = vision.embeddings
    return ViTSpec(
        patch_size=config.patch_size,
        image_size=config.image_size,
        heads=config.num_attention_heads,
        conv_weight=embeddings.patch_embedding.weight,
        class_embedding=embeddings.class_embedding,
        positional_embedding=embeddings.position_embedding.weight,
        ln_pre=_layer_norm(vision.pre_layrnorm),
        blocks=_blocks(vision),
        ln_post=_layer_norm(vision.post_layernorm),
        proj=projection.weight.T,
    )


def _vision(model: nn.Module) -> nn.Module:
    """The module holding SigLIP's embeddings, encoder and head (transformers 4 nests it once more than 5)."""
    return getattr(model, "vision_model", model)


def _siglip_spec(model: nn.Module) -> ViTSpec:
    """No CLS token and no pre-norm; `post_layernorm` on every token, then the attention-pool head (a learned probe
    query read through nn.MultiheadAttention, then a residual MLP); the pooled vector is the embedding."""
    vision = _vision(model)
    config, head = vision.config, getattr(vision, "head", None)
    if head is None:
        raise CliplensError("this SigLIP vision tower has no attention-pool head (vision_use_head=False), so no pooled "
                            f"embedding to decompose; hf: reads {SUPPORTED} with their head")
    attention, width = head.attention, config.hidden_size
    if attention.in_proj_weight is None or attention.in_proj_bias is None:
        raise CliplensError("a SigLIP pool head with separate or bias-free q/k/v projections is not supported")
    query = head.probe[0, 0] @ attention.in_proj_weight[:width].T + attention.in_proj_bias[:width]
    mlp = BlockSpec(ln1=None, qkv_weight=None, qkv_bias=None, out_weight=None, out_bias=None,
                    ln2=_layer_norm(head.layernorm), **_mlp(head.mlp, _activation(config.hidden_act)))
    map_head = MapHeadSpec(heads=attention.num_heads, q=query, kv_weight=attention.in_proj_weight[width:],
                           kv_bias=attention.in_proj_bias[width:], out_weight=attention.out_proj.weight,
                           out_bias=attention.out_proj.bias, mlp=mlp)
    embeddings = vision.embeddings
    weight = embeddings.patch_embedding.weight
    return ViTSpec(
        patch_size=config.patch_size,
        image_size=config.image_size,
        heads=config.num_attention_heads,
        conv_weight=weight,
        conv_bias=embeddings.patch_embedding.bias,
        class_embedding=None,
        positional_embedding=embeddings.position_embedding.weight,
        ln_pre=None,
        blocks=_blocks(vision),
        ln_post=_layer_norm(vision.post_layernorm),
        proj=torch.eye(width, dtype=weight.dtype, device=weight.device),
        pool="map",
        map_head=map_head,
    )


def encoders(model: nn.Module, device: torch.device) -> tuple[Callable, Callable | None]:
    """(pixel values -> image embeddings, tokens -> text embeddings); no text encoder for a vision tower alone, whose
    pooled output is the embedding."""
    if not hasattr(model, "get_image_features"):
        return (lambda images: model(pixel_values=images).pooler_output), None
    return (lambda images: pooled(model.get_image_features(pixel_values=images)),
            lambda tokens: pooled(model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})))


def vision_config(model: nn.Module):
    return getattr(model.config, "vision_config", model.config)


def default_preprocess(model: nn.Module) -> Callable:
    """The family's standard eval transform at the model's size, for a model given without its processor."""
    size = vision_config(model).image_size
    if family(model.config) == "SigLIP":
        from transformers import SiglipImageProcessor

        return _preprocess(SiglipImageProcessor(size={"height": size, "width": size}))
    return standard_transform(size)


def pooled(output: object) -> torch.Tensor:
    """transformers >= 5 returns a model output from get_*_features; older versions return the tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


PROBE_TIMEOUT_S = 5.0  # one request to the Hub; a connected machine answers in well under a second
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def create(ident: str) -> tuple[nn.Module, Callable, Callable | None]:
    """(model, preprocess, tokenizer or None) for a Hub repo id or a local folder of a CLIP or SigLIP model.

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
            raise CliplensError(f"the folder {ident!r} holds no CLIP or SigLIP model that transformers reads "
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


def _from_pretrained(ident: str, *, local_files_only: bool) -> tuple[nn.Module, Callable, Callable | None]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ident, local_files_only=local_files_only)
    load = _siglip if family(config) == "SigLIP" else _clip
    return load(ident, config, local_files_only=local_files_only)


def _clip(ident: str, config, *, local_files_only: bool) -> tuple[nn.Module, Callable, Callable]:
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    model = CLIPModel.from_pretrained(ident, attn_implementation=ATTENTION, local_files_only=local_files_only)
    processor = CLIPImageProcessor.from_pretrained(ident, local_files_only=local_files_only)
    tokenizer = CLIPTokenizerFast.from_pretrained(ident, local_files_only=local_files_only)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return tokenizer(texts, padding=True, truncation=True, return_tensors="pt")

    return model, _preprocess(processor), tokenize


def _siglip(ident: str, config, *, local_files_only: bool) -> tuple[nn.Module, Callable, Callable | None]:
    """A SigLIP model or vision tower. Without a preprocessor_config.json (a model saved alone) the processing is
    SigLIP's default (resize to the model's size, scale to [-1, 1]); the tokenizer is read on the first text only."""
    from transformers import SiglipImageProcessor, SiglipModel, SiglipVisionModel

    kind = SiglipModel if config.model_type == "siglip" else SiglipVisionModel
    model = kind.from_pretrained(ident, attn_implementation=ATTENTION, local_files_only=local_files_only)
    try:
        preprocess = _preprocess(SiglipImageProcessor.from_pretrained(ident, local_files_only=local_files_only))
    except OSError:
        preprocess = default_preprocess(model)
    if kind is SiglipVisionModel:
        return model, preprocess, None
    length = config.text_config.max_position_embeddings
    return model, preprocess, deferred(lambda: _siglip_tokenizer(ident, length, local_files_only=local_files_only))


def _siglip_tokenizer(ident: str, length: int, *, local_files_only: bool) -> Callable:
    """SigLIP's tokenizer pads every text to the text tower's full length, as SigLIP was trained."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ident, local_files_only=local_files_only)
    except (OSError, ValueError, ImportError) as exc:
        raise CliplensError(f"SigLIP model {ident!r} has no tokenizer transformers reads here ({type(exc).__name__}); "
                            f"text needs it: put the tokenizer files (huggingface-cli download) in the model's folder "
                            f"and pip install sentencepiece") from exc

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")

    return tokenize


def deferred(build: Callable[[], Callable]) -> Callable:
    """A tokenizer built on the first text: image-side work must never wait for (or fail on) text files it does not
    need."""
    built: list[Callable] = []

    def tokenize(texts: list[str]):
        if not built:
            built.append(build())
        return built[0](texts)

    return tokenize


def _preprocess(processor) -> Callable:
    def preprocess(image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    return preprocess


def standard_transform(size: int):
    """CLIP's eval transform (bicubic short-side resize, centre crop, CLIP mean/std), via open_clip."""
    from open_clip import image_transform

    return image_transform(size, is_train=False)

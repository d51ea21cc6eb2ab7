"""`cliplens.load`: model ids → a Lens, for open_clip, Hugging Face, local checkpoints and the shipped toys.

The factory sits above `lens.py` (it builds Lens objects from the adapters in `models/`), so no floor below it needs
to know which backends exist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from .errors import CliplensError, require_seed
from .io.paths import is_dir
from .lens import DTYPES, Lens


def _check_precision(precision: str) -> None:
    if precision not in DTYPES:
        raise CliplensError(f"precision {precision!r} is unknown; choose one of {', '.join(DTYPES)}")


def _check_device(device: str | torch.device) -> torch.device:
    """The device, if this machine has it and cliplens can compute on it: cpu, an existing CUDA GPU, or Apple's mps.
    Anything else (meta tensors hold no values, other backends are untested) is refused before a model is built."""
    if not isinstance(device, (str, torch.device)):  # torch.device(1) would quietly mean cuda:1
        raise CliplensError(f"device must be a string such as 'cpu' or 'cuda:1', got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise CliplensError(f"device {device!r} is not a valid torch device (e.g. cpu, cuda, cuda:1)") from exc
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CliplensError(f"device {device!r} was requested but no CUDA GPU is available; use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise CliplensError(f"device {device!r} does not exist: this machine has {count} CUDA GPU(s), "
                                f"cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise CliplensError(f"device {device!r} (Apple GPU) is not available here; use --device cpu")
    elif parsed.type != "cpu":
        raise CliplensError(f"device type {parsed.type!r} is not supported; use cpu, cuda or mps")
    return parsed


def _ready(model: nn.Module, device: str, precision: str) -> nn.Module:
    _check_precision(precision)
    return model.to(device=_check_device(device), dtype=DTYPES[precision]).eval().requires_grad_(False)


def from_openclip(
    model: nn.Module, preprocess, tokenizer, *, name: str, pretrained: str | None, device="cpu", precision="fp32",
    backend: str = "open_clip",
) -> Lens:
    """Wrap an open_clip CLIP model (built elsewhere) as a Lens."""
    from .models.openclip import spec_of

    model = _ready(model, device, precision)
    dev = torch.device(device)
    return Lens(
        model,
        name=name,
        pretrained=pretrained,
        backend=backend,
        preprocess=preprocess,
        tokenize=tokenizer,
        encode_image=model.encode_image,
        encode_text=lambda tokens: model.encode_text(tokens.to(dev)),
        spec=lambda: spec_of(model),
        precision=precision,
        device=device,
    )


def from_hf(
    model: nn.Module, preprocess=None, tokenizer=None, *, name: str, pretrained: str | None = None, device="cpu",
    precision="fp32",
) -> Lens:
    """Wrap a Hugging Face `CLIPModel`, `SiglipModel` or `SiglipVisionModel` as a Lens; without a processor, the
    family's standard eval transform is used. A vision tower alone has no text."""
    from .models import hf

    model = _ready(model, device, precision)
    encode_image, encode_text = hf.encoders(model, torch.device(device))
    return Lens(
        model,
        name=name,
        pretrained=pretrained,
        backend="hf",
        preprocess=hf.default_preprocess(model) if preprocess is None else preprocess,
        tokenize=tokenizer,
        encode_image=encode_image,
        encode_text=encode_text,
        spec=lambda: hf.vit_spec(model),
        precision=precision,
        device=device,
    )


def from_timm(model: nn.Module, preprocess, *, name: str, pretrained: str | None = None, device="cpu",
              precision="fp32") -> Lens:
    """Wrap a timm vision transformer as a Lens: its pooled representation (after the final norm, and the classifier
    head when it has one) is the embedding; it has no text tower (docs/methods/families.md#alignment)."""
    from .models.timm_vit import vit_spec

    model = _ready(model, device, precision)
    return Lens(model, name=name, pretrained=pretrained, backend="timm", preprocess=preprocess, tokenize=None,
                encode_image=model, encode_text=None, spec=lambda: vit_spec(model), precision=precision,
                device=device)


class AlignedTower(nn.Module):
    """A textless model plus its linear map into a CLIP's space, one module: the fingerprint then covers both."""

    def __init__(self, tower: nn.Module, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.tower = tower
        self.register_buffer("alignment_weight", weight)
        self.register_buffer("alignment_bias", bias)


def align(lens: Lens, clip: Lens, alignment) -> Lens:
    """`lens` read out in `clip`'s space through a fitted `cliplens.stats.alignment.Alignment`, with `clip`'s text:
    every piece is mapped by W (the map's constant joins `bias`), so TextSpan, OMP, SVD poles and ablations run on
    the mapped pieces unchanged (docs/methods/families.md#alignment)."""
    if lens.kind != "vit":
        raise CliplensError(f"alignment maps a vision transformer's pieces; {lens.name} is a {lens.kind}")
    weight = alignment.weight.to(lens.device, lens.dtype)
    bias = alignment.bias.to(lens.device, lens.dtype)
    spec = lens.spec
    head_bias = bias if spec.head_bias is None else spec.head_bias @ weight + bias
    mapped = dataclasses.replace(spec, proj=spec.proj @ weight, head_bias=head_bias)
    encode = lens._encode_image
    return Lens(AlignedTower(lens.model, weight, bias), name=f"{lens.name}~{clip.name}", pretrained=lens.pretrained,
                backend=f"{lens.backend}+aligned", preprocess=lens.preprocess, tokenize=lambda texts: texts,
                encode_image=lambda images: encode(images) @ weight + bias, encode_text=clip.encode_text,
                spec=lambda: mapped, precision=lens.precision, device=lens.device)


def load(
    model: str, pretrained: str | None = None, *, device: str = "cpu", precision: str = "fp32", seed: int = 0
) -> Lens:
    """Load a CLIP model as a Lens.

    `model` names the architecture and `pretrained` the weights; what `pretrained` may be depends on the family:

    - an open_clip id ("ViT-B-32", "RN50"): an open_clip tag ("openai"), a checkpoint file (.safetensors or a plain
      .pt state dict), or None for a random initialisation seeded by `seed`;
    - "toy:vit" / "toy:rn": None for the shipped weights, or a folder written by `cliplens train-toy`;
    - "hf:<repo id or local folder>": the id names the weights already, so `pretrained` must be None;
    - "timm:<name>" (a timm vision transformer, no text tower): None for a random initialisation seeded by `seed`, or
      a local weights file (.safetensors or a plain .pt state dict).

    `seed` only matters for a random initialisation. The model fingerprint that artifacts record depends on the model
    id and the weights alone, so the same weights reached two ways are recognised as the same model.
    """
    if not isinstance(model, str) or not model.strip():
        raise CliplensError("model must be an id such as 'ViT-B-32', 'hf:openai/clip-vit-base-patch32' or 'toy:vit'")
    _check_precision(precision)  # before any slow model construction
    _check_device(device)
    require_seed("seed", seed)
    if model.startswith("toy:"):
        from .models.toy import load_toy

        directory = _toy_directory(model, pretrained)
        toy, preprocess, tokenizer, _ = load_toy(model.removeprefix("toy:"), directory=directory)
        return from_openclip(toy, preprocess, tokenizer, name=model, pretrained=pretrained, device=device,
                             precision=precision, backend="toy")
    if model.startswith("hf:"):
        from .models import hf

        if pretrained is not None:
            raise CliplensError(f"{model} names its weights itself; drop pretrained={pretrained!r} (--pretrained)")
        hf_model, preprocess, tokenizer = hf.create(model.removeprefix("hf:"))
        return from_hf(hf_model, preprocess, tokenizer, name=model, device=device, precision=precision)
    if model.startswith("timm:"):
        from .models.openclip import read_state_dict
        from .models.timm_vit import create as create_timm

        timm_model, preprocess = create_timm(model.removeprefix("timm:"), pretrained, seed=seed,
                                             read_state_dict=read_state_dict)
        return from_timm(timm_model, preprocess, name=model, pretrained=pretrained, device=device, precision=precision)
    from .models.openclip import create

    oc_model, preprocess, tokenizer = create(model, pretrained, seed=seed)
    return from_openclip(oc_model, preprocess, tokenizer, name=model, pretrained=pretrained, device=device,
                         precision=precision)


def _toy_directory(model: str, pretrained: str | None) -> Path | None:
    """Where a toy's weights come from: the shipped ones (None), or a `cliplens train-toy` output folder."""
    if pretrained is None:
        return None
    if not is_dir(pretrained):
        raise CliplensError(
            f"{model} takes no pretrained tag or checkpoint file; omit --pretrained for the shipped weights, or pass "
            f"the folder that `cliplens train-toy` wrote (got {pretrained!r})"
        )
    return Path(pretrained)

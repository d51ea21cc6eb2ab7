"""Target networks for CLIP-Dissect: any torch module with its preprocessing, layers named by module path.

Activations are recorded by forward hooks that reduce each neuron's output to one number per image as the batch
passes (docs/methods/dissect.md#pipeline) and are removed when the pass ends, also when it fails, so a dissected
model is left exactly as it was handed in.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from torch import nn

from ..errors import CliplensError

if TYPE_CHECKING:
    from ..lens import Lens

POOLS = ("avg", "max")  # conv maps [B, C, H, W]
TOKENS = ("cls", "mean", "max")  # token sequences [B, T, D]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Target:
    """A network to dissect: `module(images)` runs it on a batch made by `preprocess` (PIL image -> [3, H, W]).

    `sequence_first`: its 3-D outputs are [T, B, D] (open_clip transformers built with batch_first=False)."""

    name: str
    module: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    sequence_first: bool = False
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    weights_digest: str | None = None  # when the weights are hashed already (a Lens)
    aliases: dict[str, str] = field(default_factory=dict)  # short layer names (L3) -> module paths

    @property
    def fingerprint(self) -> str:
        """A digest of the name, every weight and the preprocessing: cached activations follow it."""
        digest = hashlib.sha256(f"{self.name}|{self.preprocess!r}|{self.sequence_first}|{self.dtype}".encode())
        if self.weights_digest is not None:
            digest.update(self.weights_digest.encode())
        else:
            for key, tensor in sorted(self.module.state_dict().items()):
                digest.update(key.encode())
                digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def layer_names(self) -> list[str]:
        return list(self.aliases) + [name for name, _ in self.module.named_modules() if name]

    def layers(self, names: list[str]) -> dict[str, nn.Module]:
        """The modules at these paths, or one line listing the valid ones."""
        modules = dict(self.module.named_modules())
        modules.update({alias: modules[path] for alias, path in self.aliases.items()})
        missing = [name for name in names if not name or name not in modules]
        if missing:
            valid = self.layer_names()
            shown = ", ".join(valid[:40]) + (f" ... ({len(valid)} in all)" if len(valid) > 40 else "")
            raise CliplensError(f"{self.name} has no layer {missing[0]!r}; layers are module paths: {shown}")
        if not names:
            raise CliplensError("name at least one layer to dissect (a module path such as layer4 or fc)")
        return {name: modules[name] for name in names}


def reduce_output(output: Any, pool: str = "avg", tokens: str = "cls", sequence_first: bool = False) -> torch.Tensor:
    """One value per image and neuron [B, K]: conv maps by spatial mean or max, token sequences by their CLS token,
    mean or max over tokens, flat outputs as they are (METHODS §8.1)."""
    if isinstance(output, (tuple, list)):  # attention modules return (output, weights)
        output = output[0]
    output = output.detach().float()
    if output.dim() == 4:
        return output.mean((2, 3)) if pool == "avg" else output.amax((2, 3))
    if output.dim() == 3:
        output = output.transpose(0, 1) if sequence_first else output  # [B, T, D]
        return {"cls": lambda x: x[:, 0], "mean": lambda x: x.mean(1), "max": lambda x: x.amax(1)}[tokens](output)
    if output.dim() == 2:
        return output
    raise CliplensError(f"cannot reduce a layer output of shape {tuple(output.shape)} to one value per neuron")


@contextlib.contextmanager
def hooked(modules: dict[str, nn.Module], reduce: Callable[[Any], torch.Tensor]) -> Iterator[dict[str, list]]:
    """Forward hooks that append `reduce(output)` per batch to a list per layer; removed on exit, whatever happens."""
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(
                lambda _module, _inputs, output, name=name: recorded[name].append(reduce(output).cpu())))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def check_reduction(pool: str, tokens: str) -> None:
    if pool not in POOLS:
        raise CliplensError(f"--conv-reduction must be one of {', '.join(POOLS)}, got {pool!r}")
    if tokens not in TOKENS:
        raise CliplensError(f"--tokens must be one of {', '.join(TOKENS)}, got {tokens!r}")


def imagenet_preprocess(size: int = 224) -> Callable:
    """torchvision's ImageNet evaluation transform: resize to 256/224 of `size`, centre crop, ImageNet mean/std."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(size * 256 // 224), transforms.CenterCrop(size), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a .safetensors file or a plain state dict read with weights_only=True (never a pickle of code)."""
    path = Path(path)
    if not path.is_file():
        raise CliplensError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # deliberate: a damaged or foreign file fails in many ways
        raise CliplensError(f"cannot read weights from {path} ({type(exc).__name__}); pass a .safetensors file or "
                            "a torch state dict saved with torch.save(model.state_dict(), ...)") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CliplensError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict(), ...)")
    return state


def torchvision_target(name: str, weights: str | Path | None = None, *, seed: int = 0) -> Target:
    """A torchvision classification model by name: random initialisation from `seed`, or a local weights file."""
    import torchvision

    from ..models.weights import load_weights

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise CliplensError(f"torchvision has no classification model {name!r}; e.g. {', '.join(known[:8])} ...")
    torch.manual_seed(seed)
    module = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        load_weights(module, read_state_dict(weights), str(weights), f"torchvision {name}",
                     f"pass weights saved from torchvision's {name}")
    return Target(f"torchvision:{name}", module.eval().requires_grad_(False), imagenet_preprocess())


def toy_cnn_target(directory: str | Path | None = None) -> Target:
    from ..models.toy_cnn import load_cnn

    module, preprocess, _ = load_cnn(None if directory is None else Path(directory))
    return Target("toy:cnn", module, preprocess)


def lens_target(lens: Lens) -> Target:
    """A CLIP image tower: module paths below the visual tower (layer4, attnpool, transformer.resblocks.3); for ViTs
    also `L<l>` (block l's output) and `L<l>.mlp` (its MLP neurons after the activation, the second-order lens's
    L<l>N<n>)."""
    visual = lens.model.visual
    transformer = getattr(visual, "transformer", None)
    sequence_first = transformer is not None and not getattr(transformer, "batch_first", True)
    aliases = {}
    modules = dict(visual.named_modules())
    for layer in range(len(getattr(transformer, "resblocks", ()))):
        block = f"transformer.resblocks.{layer}"
        aliases[f"L{layer}"] = block
        activation = next((f"{block}.mlp.{name}" for name in ("gelu", "act") if f"{block}.mlp.{name}" in modules), None)
        if activation is not None:
            aliases[f"L{layer}.mlp"] = activation
    return Target(lens.name, visual, lens.preprocess, sequence_first=sequence_first, dtype=lens.dtype,
                  device=lens.device, weights_digest=str(lens.fingerprint), aliases=aliases)


def python_target(path: str) -> Target:
    """`package.module:factory`: factory() returns a module, or (module, preprocess); without one, the ImageNet
    evaluation transform is used."""
    module_name, _, attribute = path.partition(":")
    try:
        made = getattr(importlib.import_module(module_name), attribute)()
    except (ImportError, AttributeError) as exc:
        raise CliplensError(f"cannot import the target factory {path!r} ({exc}); write package.module:function"
                            ) from exc
    module, preprocess = made if isinstance(made, tuple) else (made, imagenet_preprocess())
    if not isinstance(module, nn.Module):
        raise CliplensError(f"{path} returned {type(module).__name__}, not a torch.nn.Module")
    return Target(path, module.eval().requires_grad_(False), preprocess)


def is_python_path(spec: str) -> bool:
    module, _, attribute = spec.partition(":")
    return bool(attribute) and "." in module and attribute.isidentifier()


TORCHVISION = "torchvision:"


def target_from_spec(spec: str, *, weights: str | Path | None = None, seed: int = 0,
                     load_clip: Callable[[str], Lens] | None = None) -> Target:
    """`toy:cnn`, `torchvision:<name>` (or a bare torchvision model name), `package.module:factory`, or else a CLIP
    id whose image tower `load_clip` loads (toy:vit, an open_clip id, hf:...)."""
    import torchvision

    if spec == "toy:cnn":
        return toy_cnn_target(weights)
    name = spec.removeprefix(TORCHVISION)
    if spec.startswith(TORCHVISION) or name in torchvision.models.list_models(module=torchvision.models):
        return torchvision_target(name, weights, seed=seed)
    if weights is not None:
        raise CliplensError("--target-weights is for torchvision models and toy:cnn; a CLIP target takes "
                            "--target-pretrained")
    if is_python_path(spec):
        return python_target(spec)
    if load_clip is None:
        raise CliplensError(f"cannot load {spec!r} as a target here; pass a Target")
    return lens_target(load_clip(spec))


def default_layers(target: Target) -> list[str]:
    """The reference's ResNet layers (conv1, layer1..layer4) where they exist; toy:cnn's four stages and fc."""
    names = set(target.layer_names())
    wanted = ["conv1", "layer1", "layer2", "layer3", "layer4"] if "conv1" in names else [
        "layer1", "layer2", "layer3", "layer4", "fc"]
    found = [name for name in wanted if name in names]
    if not found:
        raise CliplensError(f"{target.name} has none of the default layers; pass --layers (module paths)")
    return found

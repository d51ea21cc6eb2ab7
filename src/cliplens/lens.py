"""`Lens`: one loaded CLIP model plus everything cliplens computes from it.

The backend module stays untouched; the Lens reads its weights into a spec once and routes every decomposition
through the spec, so open_clip, Hugging Face and toy models share one code path.
"""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence, Union

import torch
from PIL import Image
from torch import nn

from .data.folders import Unreadable, open_image, printable
from .decompose.finite import require_finite
from .decompose.resnet_pairs import PairDecomposition, ResNetDecomposer
from .decompose.result import Decomposition
from .decompose.vit import ViTDecomposer
from .errors import CliplensError
from .io.compat import ModelFingerprint
from .models.spec import ResNetPoolSpec, ViTSpec
from .settings import Settings

DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "fp16": torch.float16, "bf16": torch.bfloat16}
TEXT_BATCH = 256


Images = Union[torch.Tensor, Image.Image, str, os.PathLike, Iterable[Union[Image.Image, str, os.PathLike]]]


def _as_image(image: Any) -> Image.Image | torch.Tensor:
    """An image file read as 8-bit RGB (as a pass over a folder reads it); PIL images and tensors as they are, for
    `preprocess`."""
    if isinstance(image, (Image.Image, torch.Tensor)):
        return image
    if isinstance(image, (str, os.PathLike)):
        try:
            return open_image(image)
        except Unreadable as exc:
            raise CliplensError(f"cannot read the image {printable(os.fspath(image))}: {exc}") from None
    raise CliplensError(f"an image in the list is of type {type(image).__name__}; pass PIL images or image paths, "
                        "or one tensor [B, 3, H, W]")


class Lens:
    """A CLIP model ready for decomposition.

    Build one with `cliplens.load`. `model` is the backend's own module; `preprocess` maps a PIL image to the
    tensor the model expects; `encode_text` returns unnormalised text embeddings [T, d].
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str,
        pretrained: str | None,
        backend: str,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenize: Callable[[list[str]], Any] | None,
        encode_image: Callable[[torch.Tensor], torch.Tensor],
        encode_text: Callable[[Any], torch.Tensor] | None,
        spec: Callable[[], ViTSpec | ResNetPoolSpec],
        precision: str = "fp32",
        device: str | torch.device = "cpu",
    ):
        self.model = model
        self.name, self.pretrained, self.backend = name, pretrained, backend
        self.preprocess = preprocess
        self._tokenize, self._encode_image, self._encode_text, self._spec = tokenize, encode_image, encode_text, spec
        self.precision, self.device = precision, torch.device(device)

    def __repr__(self) -> str:
        return f"Lens({self.name!r}, pretrained={self.pretrained!r}, backend={self.backend!r}, {self.precision})"

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @cached_property
    def spec(self) -> ViTSpec | ResNetPoolSpec:
        return self._spec()

    @property
    def kind(self) -> str:
        return self.spec.kind

    @cached_property
    def decomposer(self) -> ViTDecomposer | ResNetDecomposer:
        return ViTDecomposer(self.spec) if self.kind == "vit" else ResNetDecomposer(self.spec)

    @cached_property
    def fingerprint(self) -> ModelFingerprint:
        """A digest of the model id and every weight: artifacts made for another model are refused by it (and the
        refusal names this model, which the digest carries along).

        `pretrained` is left out on purpose: it only says where the weights came from, and the weights are hashed.
        """
        digest = hashlib.sha256(f"{self.backend}:{self.name}".encode())
        for key, tensor in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        return ModelFingerprint(digest.hexdigest()[:16], self.name, self.pretrained)

    # text side -----------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> Any:
        if self._tokenize is None:
            raise CliplensError(f"{self.name} was loaded without a tokenizer; load it from a folder that has one")
        return self._tokenize(list(texts))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Unnormalised text embeddings [T, d], in batches."""
        texts = list(texts)
        if not texts:
            raise CliplensError("encode_text needs at least one text")
        if self._encode_text is None:
            raise CliplensError(f"{self.name} has no text tower loaded; text explanations need a full CLIP model")
        chunks = [self._encode_text(self.tokenize(texts[i : i + TEXT_BATCH])) for i in range(0, len(texts), TEXT_BATCH)]
        return torch.cat(chunks)

    # image side ----------------------------------------------------------------------------------------------------
    def images_to_tensor(self, images: Images) -> torch.Tensor:
        """A batch [B, 3, H, W] on the lens's device and dtype: PIL images and image files (paths) are preprocessed with
        `preprocess`, tensors are taken as preprocessed already."""
        if isinstance(images, (Image.Image, str, os.PathLike)):
            images = [images]
        if not isinstance(images, torch.Tensor):
            if not isinstance(images, Iterable):
                raise CliplensError(f"images must be a tensor [B, 3, H, W], a PIL image, an image path, or a list of "
                                    f"those; got {type(images).__name__}")
            images = [self.preprocess(_as_image(image)) for image in images]
            if not images:
                raise CliplensError("no images given: pass at least one PIL image, image path or tensor")
            images = torch.stack(images)
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise CliplensError(f"expected images [B, 3, H, W], got a tensor of shape {tuple(images.shape)}")
        if len(images) == 0:
            raise CliplensError("the image batch is empty: pass at least one image")
        images = images.to(self.device, self.dtype)
        if not torch.isfinite(images).all():
            raise CliplensError("the image batch contains NaN or infinite values; check the input images")
        return images

    @torch.no_grad()
    def encode_image(self, images: Images) -> torch.Tensor:
        """The backend's own unnormalised image embedding [B, d]."""
        return self._encode_image(self.images_to_tensor(images))

    @torch.no_grad()
    def decompose(
        self,
        images: Images,
        *,
        granularity: str = "head",
        spatial: bool = False,
        convention: str = "separate",
        normalize: bool = False,
    ) -> Decomposition | PairDecomposition:
        """Pieces of the image embedding that sum to it exactly (docs/methods/decomposition.md for ViTs,
        docs/methods/resnet-pairs.md for ResNets)."""
        images = self.images_to_tensor(images)
        result = self.decomposer.decompose(images, Settings(granularity, spatial, convention, normalize))
        pieces = result.coefficients if isinstance(result, PairDecomposition) else result.components
        require_finite(images, result.embedding, pieces)
        return result

    def collect(self, data: Any, **options: Any):
        """Streaming statistics of the pieces over a dataset, in one pass (see `cliplens.stats.collect`)."""
        from .stats.collect import collect

        return collect(self, data, **options)

    def describe(self) -> dict[str, Any]:
        """What an artifact records about the model that made it."""
        return {
            "model": self.name,
            "pretrained": self.pretrained,
            "backend": self.backend,
            "fingerprint": self.fingerprint,
            "precision": self.precision,
            "preprocess": repr(self.preprocess),
        }

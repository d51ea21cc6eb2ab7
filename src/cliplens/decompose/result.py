"""The result of decomposing a batch of images: named pieces that sum exactly to the embedding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..labels import token_label
from ..settings import CarriesSettings, Settings


@dataclass
class Decomposition(CarriesSettings):
    """Pieces [B, C, d], or [B, C, T, d] when spatial, with one label per piece along C.

    Invariant: `components` summed over pieces (and tokens) equals `embedding`, or `embedding / ‖embedding‖` when
    `normalize` is set. In spatial form, pieces that are not attention heads (embed, MLPs, bias) are computed at the
    pooled token only, so they sit entirely at token 0.
    """

    components: torch.Tensor
    labels: list[str]
    embedding: torch.Tensor  # [B, d]: the model's own unnormalised image embedding
    settings: Settings  # what the pieces are: granularity, spatial, convention, normalize

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"no piece labelled {label!r}; labels look like {self.labels[:4]}") from None

    def __getitem__(self, label: str) -> torch.Tensor:
        """The piece with this label, [B, d] (or [B, T, d] when spatial)."""
        return self.components[:, self.index(label)]

    def token_labels(self) -> list[list[str]]:
        """Per piece, the labels of its parts at each source token of the spatial form (`L{l}H{h}T{t}`)."""
        tokens = self.components.shape[2] if self.spatial else 1
        return [[token_label(label, t) for t in range(tokens)] for label in self.labels]

    def target(self) -> torch.Tensor:
        """What the pieces sum to: the embedding, normalised if the decomposition was."""
        if self.normalize:
            return self.embedding / self.embedding.norm(dim=-1, keepdim=True)
        return self.embedding

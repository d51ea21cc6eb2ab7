"""The settings that define a decomposition, as one frozen record carried by every result, statistic and artifact.

- `granularity`: which pieces. A ViT has "layer" (one attention piece per layer) and "head"; a ResNet's attention pool
  has "head", "neuron" (a channel summed over heads) and "pair" (neuron × head); the second-order lens explains a ViT
  MLP layer's "neuron"s.
- `spatial`: head pieces are also split over the source tokens they read.
- `convention`: where LayerNorm's shares and the biases go: "separate" keeps them out of the pieces (a `bias` piece,
  centred read-outs), "reference" spreads them over the pieces as the papers' code does.
- `normalize`: the pieces sum to the unit embedding instead of the embedding.

This module is the only one that spells these names as artifact metadata keys (`metadata`, `from_metadata`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .errors import CliplensError

GRANULARITIES = ("layer", "head", "neuron", "pair")
CONVENTIONS = ("separate", "reference")


@dataclass(frozen=True)
class Settings:
    granularity: str = "head"
    spatial: bool = False
    convention: str = "separate"
    normalize: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("granularity", GRANULARITIES), ("convention", CONVENTIONS)):
            value = getattr(self, name)
            if value not in allowed:
                raise CliplensError(f"{name} {value!r} is unknown; choose one of {', '.join(allowed)}")
        for name in ("spatial", "normalize"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise CliplensError(f"{name} must be True or False, got {value!r}")

    def require_granularity(self, granularities: tuple[str, ...]) -> None:
        """Refuse a granularity the model does not have (not one of `granularities`), naming those it has."""
        if self.granularity not in granularities:
            raise CliplensError(f"granularity {self.granularity!r} is not available for this model; choose one of "
                                f"{', '.join(granularities)}")

    def metadata(self) -> dict[str, Any]:
        """The artifact metadata entries that record these settings."""
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Settings:
        """The settings an artifact's metadata records; an error when it records none (not a decomposition's)."""
        missing = [key for key in KEYS if key not in metadata]
        if missing:
            raise CliplensError(f"the artifact's metadata records no {', '.join(missing)}: it does not hold "
                                "decomposition statistics, or was written by another tool; recompute it")
        return cls(**{key: metadata[key] for key in KEYS})


KEYS = tuple(field.name for field in fields(Settings))  # the metadata keys, in the record's order


class CarriesSettings:
    """Read-only `granularity`, `spatial`, `convention` and `normalize` of a result that carries its `settings`."""

    settings: Settings

    @property
    def granularity(self) -> str:
        return self.settings.granularity

    @property
    def spatial(self) -> bool:
        return self.settings.spatial

    @property
    def convention(self) -> str:
        return self.settings.convention

    @property
    def normalize(self) -> bool:
        return self.settings.normalize

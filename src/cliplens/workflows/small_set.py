"""The pieces of every image of a small set, kept whole (not reduced to statistics): the call behind
`cliplens decompose`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..data.loader import LoadReport, as_source, describe_item, fingerprint, stream
from ..errors import CliplensError
from ..settings import Settings

if TYPE_CHECKING:
    from ..lens import Lens

MAX_BYTES = 2 * 1024**3


@dataclass
class DecomposedSet:
    """Pieces [N, C, d] (or pair coefficients [N, H, C]) and embeddings [N, d] in float32, with their metadata."""

    name: str  # "components", or "coefficients" for ResNet pairs
    values: torch.Tensor
    embedding: torch.Tensor
    report: LoadReport
    metadata: dict[str, Any]
    images: list[dict[str, Any]]  # which image each row is (docs/outputs.md#images): unreadable images have no row


def decompose_set(
    lens: Lens, data_path: Any, *, granularity: str = "head", spatial: bool = False, convention: str = "separate",
    normalize: bool = False, max_images: int = 64, batch_size: int = 32, num_workers: int = 0,
    progress: bool = False,
) -> DecomposedSet:
    """Decompose every image of `data_path` (at most `max_images`; `lens.collect` is for datasets)."""
    source = as_source(data_path)
    if len(source) > max_images:
        raise CliplensError(f"{len(source)} images is more than --max-images {max_images}; decompose is for small "
                            "sets: use `cliplens collect` for statistics over a dataset")
    settings = Settings(granularity, spatial, convention, normalize)
    report, parts, embeddings, labels, positions = LoadReport(), [], [], None, []
    for batch in stream(lens, source, batch_size=batch_size, num_workers=num_workers, progress=progress,
                        description="decompose", report=report):
        result = lens.decompose(batch.images, granularity=granularity, spatial=spatial, convention=convention,
                                normalize=normalize)
        parts.append(result.scaled_coefficients if granularity == "pair" else result.components)
        embeddings.append(result.embedding)
        labels = result.labels
        positions.extend(int(position) for position in batch.indices)
    values = torch.cat(parts).float()
    if values.numel() * 4 > MAX_BYTES:
        raise CliplensError(f"the pieces need {values.numel() * 4 / 1e9:.1f} GB; use fewer images or "
                            "`cliplens collect`")
    metadata = {**lens.describe(), **settings.metadata(), "labels": labels, "shape": list(values.shape),
                "data_path": str(data_path), "data_fingerprint": fingerprint(source), "skipped": report.skipped}
    name = "coefficients" if granularity == "pair" else "components"
    images = [{"index": position, "item": describe_item(source, position)} for position in positions]
    return DecomposedSet(name, values, torch.cat(embeddings).float(), report, metadata, images)

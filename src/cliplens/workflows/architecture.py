"""What a model is and what decomposing it costs: the call behind `cliplens info`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .verify import granularity_names

if TYPE_CHECKING:
    from ..lens import Lens


POOLING = {"token": "CLS pooling", "avg": "mean pooling", "map": "attention-pool (MAP) head"}


def describe_architecture(lens: Lens, images: int) -> list[tuple[str, str]]:
    """(name, value) rows: the model, its shapes, pieces per granularity, and memory to materialise them for `images`
    images."""
    spec = lens.spec
    gib = 1024**3
    bytes_per = 4  # fp32 pieces
    if lens.kind == "vit":
        d, layers, heads, n = spec.output_dim, spec.layers, spec.heads, spec.tokens
        extra = 1 + (spec.pool == "map")  # bias, and the MAP head's pool.mlp
        head_pieces = 1 + layers * (heads + 1) + extra
        registers = spec.prefix_tokens - (spec.class_embedding is not None)
        rows = [("architecture", f"vision transformer ({POOLING[spec.pool]}"
                                 f"{f', {registers} register tokens' if registers else ''})"), ("layers", str(layers)),
                ("heads per layer", str(heads)), ("width / head dim / MLP width", f"{spec.width} / {spec.head_dim} / "
                                                                                   f"{spec.mlp_width}"),
                ("tokens", f"{n} ({spec.image_size}px, patch {spec.patch_size})"), ("embedding dim", str(d)),
                ("pieces: layer", str(2 * layers + 1 + extra)), ("pieces: head", str(head_pieces)),
                ("pieces: head-token", f"{layers * heads} heads x {n} tokens")]
        sizes = [("head", images * head_pieces * d), ("spatial", images * head_pieces * n * d)]
        stats_bytes = head_pieces * d * d * 8
    else:
        d, heads, c, m = spec.output_dim, spec.heads, spec.channels, spec.tokens
        rows = [("architecture", "ModifiedResNet with attention pool"), ("pool heads", str(heads)),
                ("channels (neurons) / head dim", f"{c} / {spec.head_dim}"),
                ("pool tokens", f"{m} ({spec.image_size}px)"),
                ("embedding dim", str(d)), ("pieces: head", str(heads + 1)), ("pieces: neuron", str(c + 1)),
                ("pieces: pair", f"{heads * c} (kept factorised: {heads * c} scalars per image)")]
        sizes = [("pairs materialised", images * heads * c * d), ("pair coefficients", images * heads * c)]
        stats_bytes = heads * c * (2 + 4 * 50) * 8
    rows.insert(0, ("granularities", ", ".join(granularity_names(lens.kind))))
    rows += [(f"memory for {images} images: {name}", f"{count * bytes_per / gib:.3f} GiB") for name, count in sizes]
    rows.append(("statistics artifact (float64)", f"{stats_bytes / gib:.3f} GiB, independent of the number of images"))
    return [("model", f"{lens.name} ({lens.backend}, pretrained={lens.pretrained})")] + rows

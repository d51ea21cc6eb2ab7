"""Naming sets of pieces: the small pattern language that ablations and reconstructions use to say what they touch.

A pattern is one of
- a label, exactly as the decomposition writes it: `L3H7`, `L3.mlp`, `embed`, `bias`, `H2` (ResNet heads);
- a shell-style glob over labels: `L3H*`, `L*.mlp`, `L1?H0`;
- `L{l}.attn`, which also names every head of layer l when the pieces are heads;
- a named set: `mlps` (every `L{l}.mlp` plus `embed`, the MLP ablation of docs/methods/mean-ablation.md#definition) or
  `attn` (every attention piece);
- a slice over layers, with Python's rules: `attn[:8]` (attention of layers 0..7, "earlier than layer 8"),
  `attn[-4:]` (the heads of the last 4 layers), `attn[3]`, `mlp[2:5]`.
Every pattern must name at least one piece: a typo is an error, never an empty ablation.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Iterable, Sequence

from ..errors import CliplensError
from ..labels import EMBED, match_label, padding_hint

_LAYER_SLICE = re.compile(r"(attn|mlp)\[(-?\d*)(:?)(-?\d*)\]")
GLOB_CHARACTERS = "*?["

PATTERN_HELP = (
    "labels (L3H7, L3.mlp, embed), globs (L3H*), L{l}.attn (all heads of layer l), the sets mlps (all MLPs + embed) "
    "and attn, or layer slices attn[:8] (layers 0-7), attn[-4:] (last 4 layers), mlp[2:5]"
)


def split_patterns(text: str) -> list[str]:
    """Comma-separated patterns as a list (commas inside brackets do not occur in the language)."""
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    if not patterns:
        raise CliplensError(f"no component patterns in {text!r}; pass e.g. 'L3H*,mlps'")
    return patterns


def _by_layer(labels: Sequence[str], kinds: tuple[str, ...]) -> dict[int, list[str]]:
    """The labels of transformer-layer pieces of these kinds (not split over tokens), by layer in increasing order."""
    layers: dict[int, list[str]] = {}
    for label in labels:
        piece = match_label(label)
        if piece is not None and piece.kind in kinds and piece.layer is not None and piece.token is None:
            layers.setdefault(piece.layer, []).append(label)
    return dict(sorted(layers.items()))


def attention_layers(labels: Sequence[str]) -> dict[int, list[str]]:
    """The attention pieces of each layer (heads `L{l}H{h}` or `L{l}.attn`), layers in increasing order."""
    return _by_layer(labels, ("head", "attn"))


def attention_pieces(labels: Sequence[str]) -> list[str]:
    """Every attention piece, layer by layer (the order of `ViTDecomposer.cls_cells`)."""
    return [label for members in attention_layers(labels).values() for label in members]


def mlp_layers(labels: Sequence[str]) -> dict[int, list[str]]:
    return _by_layer(labels, ("mlp",))


def layer_count(labels: Sequence[str]) -> int:
    """L, the number of transformer layers the labels describe (0 when they have no layers, e.g. ResNet heads)."""
    layers = set(attention_layers(labels)) | set(mlp_layers(labels))
    return max(layers) + 1 if layers else 0


def mlp_set(labels: Sequence[str]) -> list[str]:
    """Every MLP piece plus `embed`: the reference's "MLPs" ablation (its `mlp` array holds embed as entry 0)."""
    mlps = {label for members in mlp_layers(labels).values() for label in members}
    return [label for label in labels if label == EMBED or label in mlps]


def heads_of_layers(labels: Sequence[str], layers: Iterable[int]) -> list[str]:
    """The attention pieces of the given layers, in label order."""
    wanted = set(layers)
    by_layer = attention_layers(labels)
    return [label for layer, members in by_layer.items() if layer in wanted for label in members]


def _sliced_layers(labels: Sequence[str], kind: str, start: str, colon: str, stop: str, pattern: str) -> list[int]:
    count = layer_count(labels)
    if count == 0:
        raise CliplensError(f"{pattern!r} selects layers, but these pieces have none (labels like {list(labels)[:3]})")
    layers = list(range(count))
    if not colon:
        if not start:
            raise CliplensError(f"{pattern!r} needs a layer number or a slice, e.g. {kind}[3] or {kind}[:8]")
        index = int(start)
        if not -count <= index < count:
            raise CliplensError(f"{pattern!r}: layer {index} does not exist; the model has layers 0..{count - 1}")
        return [layers[index]]
    return layers[slice(int(start) if start else None, int(stop) if stop else None)]


def _match(labels: Sequence[str], pattern: str) -> list[str]:
    if pattern in labels:
        return [pattern]
    if pattern == "mlps":
        return mlp_set(labels)
    if pattern == "attn":
        return attention_pieces(labels)
    sliced = _LAYER_SLICE.fullmatch(pattern)
    if sliced:
        kind, start, colon, stop = sliced.groups()
        layers = set(_sliced_layers(labels, kind, start, colon, stop, pattern))
        by_layer = attention_layers(labels) if kind == "attn" else mlp_layers(labels)
        return [label for layer, members in by_layer.items() if layer in layers for label in members]
    named = match_label(pattern)
    if named is not None and named.kind == "attn" and named.token is None:
        return heads_of_layers(labels, [named.layer])
    if any(character in pattern for character in GLOB_CHARACTERS):
        return [label for label in labels if fnmatchcase(label, pattern)]
    return []


def select(labels: Sequence[str], patterns: Iterable[str]) -> list[str]:
    """The labels named by any of the patterns, in the decomposition's order, each once."""
    patterns = list(patterns)
    chosen: set[str] = set()
    for pattern in patterns:
        matched = _match(labels, pattern)
        if not matched:
            raise CliplensError(
                f"component pattern {pattern!r} matches no piece{padding_hint(pattern)}; the labels look like "
                f"{list(labels)[:6]}. Use {PATTERN_HELP}"
            )
        chosen.update(matched)
    return [label for label in labels if label in chosen]

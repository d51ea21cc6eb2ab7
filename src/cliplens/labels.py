"""Piece labels: the one module that writes and reads the names of decomposition pieces.

Every label has one of these forms (numbers in decimal without leading zeros, so each piece has exactly one name):

- `embed`: the path of the embedding token (ViT);
- `L{l}.attn`, `L{l}.mlp`: layer l's whole attention or MLP sub-layer (ViT);
- `L{l}H{h}`: head h of layer l (ViT);
- `L{l}N{n}`: neuron n of layer l's MLP (ViT, second-order lens);
- `H{h}`: head h of the ResNet attention pool;
- `H{h}N{n}`: input channel ("neuron") n through pool head h, a ResNet pair;
- `N{n}`: ResNet neuron n summed over every pool head;
- `pool.mlp`: the MLP of an attention-pool (MAP) head after its pooling (SigLIP);
- `bias`: everything the separate convention moves out of the pieces;

optionally followed by `T{t}`: the part of the piece that reads source token t (spatial pieces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CliplensError

EMBED = "embed"
BIAS = "bias"
POOL_MLP = "pool.mlp"
ATTENTION = "L{layer}.attn"
MLP = "L{layer}.mlp"
HEAD = "L{layer}H{head}"
NEURON = "L{layer}N{neuron}"
POOL_HEAD = "H{head}"
PAIR = "H{head}N{neuron}"
POOL_NEURON = "N{neuron}"
TOKEN = "{label}T{token}"
COMPONENT = "{label}.pc{index}"  # principal component `index` of a piece (decreasing variance)

# (kind, form) for every form above: `Piece.kind` names what a label is, `Piece.layer is None` tells the ResNet pool's
# heads and neurons from a ViT's.
_FORMS = (("embed", EMBED), ("bias", BIAS), ("pool", POOL_MLP), ("attn", ATTENTION), ("mlp", MLP), ("head", HEAD), ("neuron", NEURON),
          ("head", POOL_HEAD), ("pair", PAIR), ("neuron", POOL_NEURON))
KINDS = tuple(dict.fromkeys(kind for kind, _ in _FORMS))
READABLE = "embed, bias, pool.mlp, L<l>.attn, L<l>.mlp, L<l>H<h>, L<l>N<n>, H<h>, H<h>N<n> or N<n>, optionally followed by T<t>"

_NUMBER = "0|[1-9][0-9]*"


def _regex(form: str) -> re.Pattern[str]:
    """The form as a regular expression whose named groups are its numbers."""
    return re.compile(re.sub(r"\\\{(\w+)\\\}", rf"(?P<\1>{_NUMBER})", re.escape(form)))


_READERS = tuple((kind, _regex(form)) for kind, form in _FORMS)
_WITH_TOKEN = re.compile(rf"(?P<label>.+?)(?:T(?P<token>{_NUMBER}))?")
_WRITERS = {(kind, "{layer}" in form): form for kind, form in _FORMS}


def attention_label(layer: int) -> str:
    return ATTENTION.format(layer=layer)


def mlp_label(layer: int) -> str:
    return MLP.format(layer=layer)


def head_label(layer: int, head: int) -> str:
    return HEAD.format(layer=layer, head=head)


def neuron_label(layer: int, neuron: int) -> str:
    return NEURON.format(layer=layer, neuron=neuron)


def pool_head_label(head: int) -> str:
    return POOL_HEAD.format(head=head)


def pair_label(head: int, neuron: int) -> str:
    return PAIR.format(head=head, neuron=neuron)


def pool_neuron_label(neuron: int) -> str:
    return POOL_NEURON.format(neuron=neuron)


def token_label(label: str, token: int) -> str:
    """The part of piece `label` that reads source token `token`."""
    return TOKEN.format(label=label, token=token)


def component_label(label: str, index: int) -> str:
    """Principal component `index` (0 = largest variance) of piece `label`: `L3H7.pc0`, `H2.pc4`."""
    return COMPONENT.format(label=label, index=index)


@dataclass(frozen=True)
class Piece:
    """What a label names. `layer` is None outside the transformer layers (embed, bias, the ResNet pool): a `head`
    without a layer is a ResNet pool head, a `neuron` without one a ResNet neuron."""

    kind: str  # one of KINDS
    layer: int | None = None
    head: int | None = None
    neuron: int | None = None
    token: int | None = None

    @property
    def label(self) -> str:
        """The label that names this piece: `parse_label(piece.label) == piece`."""
        form = _WRITERS.get((self.kind, self.layer is not None))
        if form is None:
            raise CliplensError(f"no label names a {self.kind!r} piece with layer={self.layer}; the kinds are "
                                f"{', '.join(KINDS)}")
        label = form.format(layer=self.layer, head=self.head, neuron=self.neuron)
        return label if self.token is None else token_label(label, self.token)


def match_label(text: str) -> Piece | None:
    """The piece `text` names, or None when it is not a label (e.g. a glob or a named set of pieces)."""
    split = _WITH_TOKEN.fullmatch(text)
    if split is None:
        return None
    token = None if split["token"] is None else int(split["token"])
    for kind, reader in _READERS:
        match = reader.fullmatch(split["label"])
        if match is not None:
            return Piece(kind, token=token, **{name: int(value) for name, value in match.groupdict().items()})
    return None


_COMPONENT = re.compile(rf"(?P<label>.+)\.pc(?P<index>{_NUMBER})")


def match_component(text: str) -> tuple[Piece, int] | None:
    """(the piece, the index) a principal-component label (`L3H7.pc0`, see `component_label`) names, or None."""
    split = _COMPONENT.fullmatch(text)
    piece = None if split is None else match_label(split["label"])
    return None if piece is None else (piece, int(split["index"]))


def padding_hint(text: str) -> str:
    """For an error message: " (did you mean 'L3H1'? ...)" when `text` is a label written with zero-padded numbers
    (L03H1), which never name a piece (each piece has exactly one label); else ""."""
    unpadded = re.sub(r"\d+", lambda number: str(int(number.group())), text)
    if unpadded == text or match_label(unpadded) is None:
        return ""
    return f" (did you mean {unpadded!r}? labels write numbers without leading zeros)"


def parse_label(text: str) -> Piece:
    """The piece `text` names; a CliplensError when it is not a label."""
    piece = match_label(text)
    if piece is None:
        raise CliplensError(f"cannot read the piece label {text!r}{padding_hint(text)}; write {READABLE} (numbers "
                            "without leading zeros)")
    return piece

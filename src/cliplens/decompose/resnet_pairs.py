"""ResNet CLIP's attention pool as neuron×head pairs, kept factorised (docs/methods/resnet-pairs.md).

The pool's query is the mean token and its attention row sums to one, so pair (h, n) contributes
r = s·u + c with a per-image scalar s = Σ_m a_hm t_mn, a fixed direction u = W_o^h W_v^h[:, n] and a per-head constant
c. Storing s [B, H, C] instead of the pieces [B, H·C, O] is what removes the reference's hundreds of gigabytes; pieces
are materialised only for the pairs someone asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CliplensError
from ..labels import BIAS, pair_label, pool_head_label, pool_neuron_label
from ..models.spec import ResNetPoolSpec
from ..settings import CarriesSettings, Settings
from .result import Decomposition
from .shared import SharedForward

GRANULARITIES = ("head", "neuron", "pair")  # what a ResNet's attention-pool pieces can be
PAIRS = Settings(granularity="pair")
MAX_MATERIALISED_BYTES = 2 * 1024**3


@dataclass
class PoolTrace:
    tokens: torch.Tensor  # T [B, M, C]: mean token then the spatial tokens, positions added
    attention: torch.Tensor  # A [B, H, M]: the mean-token query's attention row per head
    embedding: torch.Tensor  # y [B, O]


@dataclass
class PairDecomposition(CarriesSettings):
    """Pairs r[b, h, n] = (coefficients[b, h, n]·u[h, n] + offsets[h]) / norm[b], plus `bias` / norm[b]."""

    coefficients: torch.Tensor  # s [B, H, C]
    out_weight: torch.Tensor  # W_o per head [H, O, d_h]
    value_weight: torch.Tensor  # W_v per head [H, d_h, C]
    offsets: torch.Tensor  # c^h [H, O]: shared by every neuron of head h (zero in the separate convention)
    bias: torch.Tensor  # [O]: everything moved out of the pairs (zero in the reference convention)
    embedding: torch.Tensor  # y [B, O], unnormalised
    norm: torch.Tensor  # [B, 1]: 1, or ‖y‖ when normalised
    settings: Settings  # granularity "pair", never spatial

    @property
    def heads(self) -> int:
        return self.coefficients.shape[1]

    @property
    def neurons(self) -> int:
        return self.coefficients.shape[2]

    @property
    def labels(self) -> list[str]:
        return [pair_label(h, n) for h in range(self.heads) for n in range(self.neurons)]

    @property
    def scaled_coefficients(self) -> torch.Tensor:
        """s / norm [B, H, C]: each pair's coefficient on u in the embedding the pairs sum to (the unit embedding
        when normalised; `coefficients` are always those of the unnormalised one)."""
        return self.coefficients / self.norm[..., None]

    def directions(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """u for the listed pairs: [k, O]."""
        return pair_directions(self.out_weight, self.value_weight, heads, neurons)

    def pieces(self, heads: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
        """The listed pairs materialised: [B, k, O]."""
        heads, neurons = torch.as_tensor(heads), torch.as_tensor(neurons)
        s = self.coefficients[:, heads, neurons]
        return (s[..., None] * self.directions(heads, neurons) + self.offsets[heads]) / self.norm[..., None]

    @property
    def components(self) -> torch.Tensor:
        """All pairs [B, H·C, O] in label order; refused when it would not fit comfortably in memory."""
        batch, size = self.coefficients.shape[0], self.coefficients[0].numel() * self.embedding.shape[1]
        needed = batch * size * self.coefficients.element_size()
        if needed > MAX_MATERIALISED_BYTES:
            raise CliplensError(
                f"materialising all {self.heads * self.neurons} pairs for {batch} images needs {needed / 1e9:.1f} GB; "
                "use .pieces(heads, neurons) for the pairs you need, or fewer images"
            )
        grid = torch.cartesian_prod(torch.arange(self.heads), torch.arange(self.neurons))
        return self.pieces(grid[:, 0], grid[:, 1])

    def total(self) -> torch.Tensor:
        """Σ of all pairs plus bias, computed in factorised form: [B, O]."""
        per_head = torch.einsum("bhn,hen->bhe", self.coefficients, self.value_weight)
        summed = torch.einsum("bhe,hoe->bo", per_head, self.out_weight)
        return (summed + self.offsets.sum(0) * self.neurons + self.bias) / self.norm

    def target(self) -> torch.Tensor:
        return self.embedding / self.norm


def pair_directions(out_weight: torch.Tensor, value_weight: torch.Tensor, heads: torch.Tensor,
                    neurons: torch.Tensor) -> torch.Tensor:
    """u^{n,h} = W_o^h W_v^h[:, n] for listed pairs [k, O], one head at a time.

    Gathering W_o per pair would build [k, O, d_h] (tens of GB for every pair of RN50x16); per head the work is one
    [O, d_h] × [d_h, k_h] product.
    """
    heads, neurons = torch.as_tensor(heads).reshape(-1), torch.as_tensor(neurons).reshape(-1)
    result = out_weight.new_empty(len(heads), out_weight.shape[1])
    for head in heads.unique().tolist():
        rows = (heads == head).nonzero().squeeze(1)
        result[rows] = (out_weight[head] @ value_weight[head][:, neurons[rows]]).T
    return result


class ResNetDecomposer(SharedForward):
    """Decomposes images for one ModifiedResNet spec; a shared batch runs its trunk once (decompose/shared.py)."""

    def __init__(self, spec: ResNetPoolSpec):
        self.spec = spec
        heads, dh, out = spec.heads, spec.head_dim, spec.output_dim
        self.out_weight = spec.c_weight.view(out, heads, dh).permute(1, 0, 2)  # [H, O, d_h]
        self.value_weight = spec.v_weight.view(heads, dh, spec.channels)  # [H, d_h, C]
        self.value_bias = spec.v_bias.view(heads, dh)
        self._directions: torch.Tensor | None = None

    def trace(self, images: torch.Tensor) -> PoolTrace:
        return self.once("trace", images, lambda: self.pool(self.spec.trunk(images)))

    def pool(self, feature_map: torch.Tensor) -> PoolTrace:
        """The attention pool on the trunk's final layer-4 map [B, C, h, w] (what Grad-CAM differentiates)."""
        spec = self.spec
        features = feature_map.flatten(2).transpose(1, 2)  # [B, K, C]
        tokens = torch.cat([features.mean(1, keepdim=True), features], 1)
        if tokens.shape[1] != spec.tokens:
            raise CliplensError(
                f"images give {tokens.shape[1]} pool tokens but the model expects {spec.tokens} "
                f"({spec.image_size}px); preprocess images with lens.preprocess"
            )
        tokens = tokens + spec.positional_embedding
        batch, m = tokens.shape[:2]
        query = F.linear(tokens[:, 0], spec.q_weight, spec.q_bias).view(batch, spec.heads, spec.head_dim)
        keys = F.linear(tokens, spec.k_weight, spec.k_bias).view(batch, m, spec.heads, spec.head_dim)
        attention = (torch.einsum("bhe,bmhe->bhm", query, keys) * spec.head_dim**-0.5).softmax(-1)
        values = F.linear(tokens, spec.v_weight, spec.v_bias).view(batch, m, spec.heads, spec.head_dim)
        attended = torch.einsum("bhm,bmhe->bhe", attention, values).reshape(batch, -1)
        return PoolTrace(tokens, attention, F.linear(attended, spec.c_weight, spec.c_bias))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.trace(images).embedding

    def _split_bias(self, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-head offset c^h summed over its neurons [H, O], separate bias [O]) for a convention."""
        spec = self.spec
        value_bias_out = torch.einsum("hoe,he->ho", self.out_weight, self.value_bias)  # W_o^h b_v^h
        if convention == "reference":
            return value_bias_out + spec.c_bias / spec.heads, torch.zeros_like(spec.c_bias)
        return torch.zeros_like(value_bias_out), value_bias_out.sum(0) + spec.c_bias

    def pairs(self, images: torch.Tensor, settings: Settings = PAIRS) -> PairDecomposition:
        if settings.granularity != "pair":
            raise CliplensError(f"pairs need settings with granularity 'pair', got {settings.granularity!r}; call "
                                "decompose for other pieces")
        if settings.spatial:
            raise CliplensError("pairs are not split over tokens; use granularity='head' with spatial=True")
        trace = self.trace(images)
        head_offsets, bias = self._split_bias(settings.convention)
        norm = (trace.embedding.norm(dim=-1, keepdim=True) if settings.normalize
                else trace.embedding.new_ones(len(images), 1))
        return PairDecomposition(
            coefficients=torch.einsum("bhm,bmc->bhc", trace.attention, trace.tokens),
            out_weight=self.out_weight,
            value_weight=self.value_weight,
            offsets=head_offsets / self.spec.channels,
            bias=bias,
            embedding=trace.embedding,
            norm=norm,
            settings=settings,
        )

    def directions(self) -> torch.Tensor:
        """Every pair's u materialised once, [H, C, O]: what the neuron granularity contracts with."""
        if self._directions is None:
            self._directions = torch.einsum("hoe,hen->hno", self.out_weight, self.value_weight)
        return self._directions

    def labels(self, settings: Settings) -> list[str]:
        """The labels of the pieces `decompose` gives with these settings, without decomposing anything."""
        settings.require_granularity(GRANULARITIES)
        spec = self.spec
        if settings.granularity == "pair":
            return [pair_label(h, n) for h in range(spec.heads) for n in range(spec.channels)]
        if settings.granularity == "neuron":
            labels = [pool_neuron_label(n) for n in range(spec.channels)]
        else:
            labels = [pool_head_label(h) for h in range(spec.heads)]
        return labels + ([BIAS] if settings.convention == "separate" else [])

    def head_spans(self, settings: Settings) -> dict[str, torch.Tensor]:
        """Per pool head, rows [k, O] whose combinations make its piece for every image: W_o^h's columns, and in the
        reference convention the head's share of c_bias. Principal components are found in their span."""
        rows = self.out_weight.transpose(1, 2)  # [H, d_h, O]
        if settings.convention == "reference":
            rows = torch.cat([rows, self.spec.c_bias.expand(self.spec.heads, 1, -1)], 1)
        return {pool_head_label(h): rows[h] for h in range(self.spec.heads)}

    def decompose(self, images: torch.Tensor, settings: Settings) -> Decomposition | PairDecomposition:
        settings.require_granularity(GRANULARITIES)
        granularity, spatial, convention = settings.granularity, settings.spatial, settings.convention
        if granularity == "pair":
            return self.pairs(images, settings)
        if spatial and granularity != "head":
            raise CliplensError("spatial pieces exist per head and token; use granularity='head' with spatial=True")
        spec = self.spec
        trace = self.trace(images)
        head_offsets, bias = self._split_bias(convention)
        if granularity == "neuron":
            s = torch.einsum("bhm,bmc->bhc", trace.attention, trace.tokens)
            pieces = torch.einsum("bhn,hno->bno", s, self.directions()) + head_offsets.sum(0) / spec.channels
        else:
            values = torch.einsum("bmc,hec->bhme", trace.tokens, self.value_weight)
            if convention == "reference":  # the value bias stays in its head, weighted by attention
                values = values + self.value_bias[None, :, None]
            weighted = trace.attention[..., None] * values  # [B, H, M, d_h]
            if spatial:
                pieces = torch.einsum("bhme,hoe->bhmo", weighted, self.out_weight)
            else:
                pieces = torch.einsum("bhe,hoe->bho", weighted.sum(2), self.out_weight)
            if convention == "reference":
                pieces = pieces + spec.c_bias / (spec.heads * (spec.tokens if spatial else 1))
        if convention == "separate":
            bias_piece = bias.expand(len(images), *pieces.shape[2:]) if not spatial else _at_first_token(bias, pieces)
            pieces = torch.cat([pieces, bias_piece[:, None]], 1)
        result = Decomposition(pieces, self.labels(settings), trace.embedding, settings)
        if settings.normalize:
            norms = trace.embedding.norm(dim=-1).view(-1, *([1] * (pieces.dim() - 1)))
            result.components = pieces / norms
        return result


def _at_first_token(bias: torch.Tensor, pieces: torch.Tensor) -> torch.Tensor:
    placed = pieces.new_zeros(pieces.shape[0], *pieces.shape[2:])
    placed[:, 0] = bias
    return placed

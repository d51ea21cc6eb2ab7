"""Second-order effects of one MLP layer's neurons through every later attention head, factorised
(docs/methods/second-order.md#definition).

With attention patterns and every LayerNorm frozen, neuron n's effect through head h of a later block l' is linear in
its activations: one per-image scalar s = Σ_t A_{0t} a_{t,n} / σ1_t (the CLS attention row weighted by that block's
inverse LN1 scale, contracted with the activation column) times a direction u that depends on the weights alone. The
per-image [F, d] effects of a layer are therefore carried as s [J, F] plus a few scalars, and the directions U [J, F, d]
are built once per (model, layer, convention); the reference's per-neuron [N, F, D] passes are never needed.

Coordinates. A neuron's effect is φ_n(I) = x_n(I) · B_n with B_n = [U[:, n]; V] and x_n = [κ s_{:,n}; g]: J head
coefficients scaled by κ = scale/(σ_p ν), followed by K offset coefficients g shared by all neurons. The offset c(I) =
g·V collects the shares of the reference convention (c_proj bias / F, LN1 mean and bias, value and out-projection
biases, LN_post mean and bias); it is one per-image vector for every neuron. The separate convention centres instead
(C w_n and C W_O W_V), so K = 0 and the c_proj bias's path becomes a per-image `bias` outside the neurons.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import CliplensError
from ..labels import head_label
from ..settings import Settings
from .vit import ViTDecomposer

FLOAT = torch.float64


@dataclass
class SecondOrderBasis:
    """The input-independent half of the factorisation, for one (model, MLP layer, convention)."""

    layer: int
    convention: str
    heads: list[str]  # labels of the J later heads "L{l'}H{h}", in coefficient order
    neurons: torch.Tensor  # U [J, F, d]: head j's direction for each neuron
    offsets: torch.Tensor  # V [K, d]: reference offset directions (K = 2J + 3); empty [0, d] when separate
    bias: torch.Tensor  # [J, d]: separate convention, the c_proj bias through head j per unit coefficient p_j

    @property
    def num_heads(self) -> int:
        return self.neurons.shape[0]

    @property
    def num_neurons(self) -> int:
        return self.neurons.shape[1]

    @property
    def dim(self) -> int:
        """Length of a neuron's coordinate vector x_n: J + K."""
        return self.num_heads + self.offsets.shape[0]

    def combine(self, coordinates: torch.Tensor, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """x_n · B_n for coordinates [..., n, J + K] of the listed neurons (all by default): [..., n, d]."""
        u = self.neurons if neurons is None else self.neurons[:, neurons]
        coordinates = coordinates.to(FLOAT)
        heads = torch.einsum("...fj,jfd->...fd", coordinates[..., : self.num_heads], u)
        return heads + coordinates[..., self.num_heads :] @ self.offsets

    @cached_property
    def gram(self) -> torch.Tensor:
        """G_n = B_n B_nᵀ [F, J + K, J + K]: the squared norm of any combination of a neuron's directions."""
        u, v = self.neurons, self.offsets
        top = torch.cat([torch.einsum("jfd,kfd->fjk", u, u), torch.einsum("jfd,kd->fjk", u, v)], 2)
        bottom = torch.cat([top[:, :, self.num_heads :].transpose(1, 2), (v @ v.T).expand(len(top), -1, -1)], 2)
        return torch.cat([top, bottom], 1)


@dataclass
class SecondOrderEffects:
    """Per-image factors of every neuron's second-order effect for a batch; `effects()` materialises them."""

    basis: SecondOrderBasis
    coefficients: torch.Tensor  # s [B, J, F]
    kappa: torch.Tensor  # κ [B] = scale / (σ_p ν)
    offset_coefficients: torch.Tensor  # g [B, K]
    bias: torch.Tensor  # [B, d]: separate convention, the c_proj bias's path; zero in the reference convention
    representation: torch.Tensor  # [B, d]: scale · z / ν, the vector these effects are parts of
    embedding: torch.Tensor  # z [B, d], the model's own image embedding
    scale: float
    normalize: bool
    token_weights: torch.Tensor  # [B, J, N]: A_{0t}/σ1_t per later head, so s = token_weights @ activations
    activations: torch.Tensor  # a^l [B, N, F]: the layer's post-activation neurons at every token

    def coordinates(self) -> torch.Tensor:
        """x [B, F, J + K] float64: each neuron's κ-scaled head coefficients followed by the shared offsets."""
        heads = (self.kappa[:, None, None] * self.coefficients).transpose(1, 2).to(FLOAT)
        shared = self.offset_coefficients.to(FLOAT)[:, None].expand(-1, heads.shape[1], -1)
        return torch.cat([heads, shared], 2)

    def offset(self) -> torch.Tensor:
        """c(I) [B, d]: the part of every neuron's effect that does not depend on the neuron (zero when separate)."""
        return self.offset_coefficients.to(FLOAT) @ self.basis.offsets

    def effects(self, neurons: torch.Tensor | None = None) -> torch.Tensor:
        """φ_n(I) [B, n, d] float64 for the listed neurons (all by default); costs B·n·d memory, so select."""
        coordinates = self.coordinates()
        return self.basis.combine(coordinates if neurons is None else coordinates[:, neurons], neurons)

    def token_scores(self, projected: torch.Tensor, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token second-order effects on K directions, [B, K, N] float64: token t's share
        κ Σ_j (A_{0t}/σ1_t)_j Σ_n a_{t,n} ⟨u_{j,n}, c_k⟩ of the neurons `chosen` [B, F, K] (bool; all by default), from
        `projected` = ⟨U, c⟩ [J, F, K]. Summed over tokens it is Σ_n ⟨φ_n, c_k⟩ over those neurons in the separate
        convention (docs/methods/segmentation.md#lenses); no [B, N, F, d] tensor is built."""
        activations = self.activations.to(FLOAT)
        weights = (self.kappa[:, None, None] * self.token_weights).to(FLOAT)
        scores = 0
        for j in range(self.basis.num_heads):
            columns = projected[j] if chosen is None else projected[j] * chosen  # [F, K] or [B, F, K]
            scores = scores + weights[:, j, :, None] * (activations @ columns)  # [B, N, K]
        return scores.transpose(1, 2)

    def projections(self, projected: torch.Tensor) -> torch.Tensor:
        """⟨φ_n, c_k⟩ [B, F, K] float64 of every neuron on K directions (separate convention: no offset)."""
        return torch.einsum("bjf,jfk->bfk", (self.kappa[:, None, None] * self.coefficients).to(FLOAT), projected)

    def total(self) -> torch.Tensor:
        """Σ_n φ_n + bias [B, d]: the whole MLP-l → later-heads path (docs/methods/second-order.md#invariants), without
        materialising φ."""
        heads = torch.einsum("bjf,jfd->bd", (self.kappa[:, None, None] * self.coefficients).to(FLOAT),
                             self.basis.neurons)
        return heads + self.basis.num_neurons * self.offset() + self.bias.to(FLOAT)


class SecondOrderLens:
    """Second-order effects of MLP layer `layer`: directions built once, one forward pass per batch."""

    def __init__(self, decomposer: ViTDecomposer, layer: int, convention: str = "separate", *,
                 basis: SecondOrderBasis | None = None):
        """`basis`: directions already built for this model, layer and convention (e.g. by loaded statistics)."""
        check_layer(decomposer, layer)
        Settings(granularity="neuron", convention=convention)  # refuses an unknown convention
        if basis is not None and (basis.layer, basis.convention) != (layer, convention):
            raise CliplensError(f"directions for layer {basis.layer} ({basis.convention}) cannot serve layer {layer} "
                                f"({convention})")
        self.decomposer, self.layer, self.convention = decomposer, layer, convention
        self.basis = build_basis(decomposer, layer, convention) if basis is None else basis

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, *, scale: float = 1.0, normalize: bool = False) -> SecondOrderEffects:
        spec = self.decomposer.spec
        weights, mean_weights = [], []
        for state in self.decomposer.layers(images):
            if state.layer == self.layer:
                hidden = state.hidden  # a^l [B, N, F]
            elif state.layer > self.layer:
                x, ln = state.residual, state.block.ln1
                inverse_sigma = (x.var(-1, unbiased=False) + ln.eps).rsqrt()  # 1/σ1_t [B, N]
                weighted = state.cls_attention() * inverse_sigma[:, None]  # A_{0t}/σ1_t [B, H, N]
                weights.append(weighted)
                mean_weights.append((weighted * x.mean(-1)[:, None]).sum(-1))  # Σ_t A_{0t} μ1_t/σ1_t [B, H]
        residual = state.output[:, 0]
        weights = torch.cat(weights, 1)  # [B, J, N]
        coefficients = weights @ hidden  # s [B, J, F]
        post_mean = residual.mean(-1)
        post_sigma = (residual.var(-1, unbiased=False) + spec.ln_post.eps).sqrt()
        embedding = spec.ln_post(residual) @ spec.proj
        nu = embedding.norm(dim=-1) if normalize else torch.ones_like(post_sigma)
        kappa = scale / (post_sigma * nu)
        per_unit = kappa[:, None] * weights.sum(-1)  # κ p_j: the coefficient of an activation ≡ 1
        if self.convention == "reference":
            offset_coefficients = torch.cat(
                [per_unit, kappa[:, None] * torch.cat(mean_weights, 1), kappa[:, None], (kappa * post_mean)[:, None],
                 (scale / nu)[:, None]], 1).to(FLOAT)
            bias = torch.zeros_like(embedding)
        else:
            offset_coefficients = embedding.new_zeros(len(embedding), 0, dtype=FLOAT)
            bias = per_unit.to(FLOAT) @ self.basis.bias
        return SecondOrderEffects(self.basis, coefficients, kappa, offset_coefficients, bias,
                                  scale * embedding / nu[:, None], embedding, float(scale), bool(normalize), weights,
                                  hidden)


def check_layer(decomposer: ViTDecomposer, layer: int) -> None:
    """MLP layers with at least one later block; ResNets have no MLP neurons of this kind."""
    if not isinstance(decomposer, ViTDecomposer):
        raise CliplensError("the second-order lens explains ViT MLP neurons; for ResNet CLIP use neuron×head pairs "
                            "(`cliplens pairs`)")
    if not decomposer.spec.standard:
        raise CliplensError("the second-order lens is derived for CLIP ViTs (CLS pooling, GELU MLPs, no rotary "
                            "positions or registers); first-order pieces (`cliplens decompose`) work on this model")
    last = decomposer.spec.layers - 2
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= last:
        raise CliplensError(f"--mlp-layer {layer!r} is out of range: this model's MLP layers with later heads are "
                            f"0..{last} (the last layer has no later heads to act through)")


def build_basis(decomposer: ViTDecomposer, layer: int, convention: str) -> SecondOrderBasis:
    """U, V and the separate convention's bias directions, in float64 from the spec's weights
    (docs/methods/second-order.md#factorisation)."""
    spec = decomposer.spec
    readout = decomposer.readout(convention)
    width, heads, head_dim, neurons = spec.width, spec.heads, spec.head_dim, spec.mlp_width
    block = spec.blocks[layer]
    writes, out_bias = block.proj_weight.T.to(FLOAT), block.proj_bias.to(FLOAT)  # rows w_n [F, D]; b_out [D]
    if convention == "separate":  # LN1 sees each write centred: C w_n, C b_out
        writes, out_bias = writes - writes.mean(1, keepdim=True), out_bias - out_bias.mean()
    matrix, phi = readout.matrix.to(FLOAT), readout.heads.to(FLOAT)
    terms = 2 * spec.layers + 1  # top-level terms sharing LN_post's mean and bias
    labels, directions, bias_rows, out_rows, mean_rows = [], [], [], [], []
    constant = torch.zeros(spec.output_dim, dtype=FLOAT, device=matrix.device)
    post_share = 0.0
    for later in range(layer + 1, spec.layers):
        ln1, qkv_weight, qkv_bias = spec.blocks[later].ln1, spec.blocks[later].qkv_weight, spec.blocks[later].qkv_bias
        gamma1, beta1 = ln1.weight.to(FLOAT), ln1.bias.to(FLOAT)
        value_weight = qkv_weight[2 * width :].to(FLOAT)  # [H·d_h, D]
        value_bias = qkv_bias[2 * width :].to(FLOAT).view(heads, head_dim)

        def through(rows: torch.Tensor) -> torch.Tensor:
            """Vectors [..., D] entering this block's LN1 output, through every head's OV circuit and the read-out."""
            values = (rows @ value_weight.T).unflatten(-1, (heads, head_dim))
            return torch.einsum("...hc,hcd->h...d", values, phi[later])

        labels.extend(head_label(later, h) for h in range(heads))
        directions.append(through(writes * gamma1))  # [H, F, d]
        if convention == "separate":
            bias_rows.append(through(out_bias * gamma1))
            continue
        share = 1.0 / ((2 * later + 1) * neurons)  # ω': one neuron's share of this block's LN1 mean and bias
        out_rows.append(through(out_bias * gamma1 / neurons))
        mean_rows.append(-share * through(gamma1))
        constant += share * (through(beta1).sum(0) + torch.einsum("hc,hcd->d", value_bias, phi[later])
                             + spec.blocks[later].out_bias.to(FLOAT) @ matrix)
        post_share += heads / (terms * heads * (2 * later + 1) * neurons)  # Σ_h 1/N_sh
    directions = torch.cat(directions)
    if convention == "separate":
        offsets = directions.new_zeros(0, spec.output_dim)
        bias = torch.cat(bias_rows)
    else:
        offsets = torch.cat([torch.cat(out_rows), torch.cat(mean_rows), constant[None],
                             -post_share * readout.gamma.to(FLOAT)[None], post_share * readout.beta.to(FLOAT)[None]])
        bias = directions.new_zeros(len(labels), spec.output_dim)
    return SecondOrderBasis(layer, convention, labels, directions, offsets, bias)

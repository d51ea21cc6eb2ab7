"""A linear map from a model's representation to a CLIP image embedding, for models without text
(docs/methods/families.md#alignment).

Ridge least squares fitted from the streamed joint moments of (representation, CLIP embedding) on the same images,
so nothing per image is kept; the held-out explained variance comes from the held-out images' own moments, also
streamed, evaluated for the fitted map in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..data.loader import stream
from ..errors import CliplensError
from .moments import Moments

DEFAULT_RIDGE = 1e-3  # relative to the mean variance of the representation: scale-free


@dataclass(frozen=True)
class Alignment:
    """ŷ = r W + c maps the representation r [d_model] to the CLIP image embedding [d_clip]."""

    weight: torch.Tensor  # W [d_model, d_clip], float64
    bias: torch.Tensor  # c [d_clip]
    ridge: float
    fitted_images: int
    held_out_images: int
    explained_variance: float  # on the held-out images: 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖²
    fit_explained_variance: float  # the same on the fitting images


def joint_moments(lens: Any, clip: Any, data: Any, *, batch_size: int = 32) -> Moments:
    """Count, mean and scatter of [r, y] over `data`: both models read the same images, each with its preprocess."""
    moments = None
    for ours, theirs in zip(stream(lens, data, batch_size=batch_size), stream(clip, data, batch_size=batch_size),
                            strict=True):
        if not torch.equal(ours.indices, theirs.indices):
            raise CliplensError("the two models read different images from the data; pass a fixed image set")
        joint = torch.cat([lens.encode_image(ours.images).double().cpu(), clip.encode_image(theirs.images).double()
                           .cpu()], -1)
        if moments is None:
            moments = Moments(1, joint.shape[1])
        moments.update(joint[:, None])
    return moments


def explained_variance(moments: Moments, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """1 − Σ‖y − rW − c‖² / Σ‖y − ȳ‖² over the images `moments` summarise (exact, from their mean and scatter)."""
    split = weight.shape[0]
    scatter, mean, count = moments.scatter[0], moments.mean[0], moments.count
    s_rr, s_ry, s_yy = scatter[:split, :split], scatter[:split, split:], scatter[split:, split:]
    offset = mean[split:] - mean[:split] @ weight - bias
    residual = (s_yy.trace() - 2 * (weight * s_ry).sum() + (weight * (s_rr @ weight)).sum()
                + count * offset.square().sum())
    return float(1 - residual / s_yy.trace())


def fit_alignment(lens: Any, clip: Any, data: Any, held_out: Any, *, ridge: float = DEFAULT_RIDGE,
                  batch_size: int = 32) -> Alignment:
    """Fit ŷ = r W + c from `lens`'s embedding to `clip`'s on `data`; score it on the disjoint `held_out` images.

    W = (S_rr + λ I)⁻¹ S_ry with centred scatters S and λ = ridge · tr(S_rr) / d_model; c = ȳ − r̄ W."""
    if not ridge >= 0:
        raise CliplensError(f"ridge must be >= 0, got {ridge!r}")
    fit = joint_moments(lens, clip, data, batch_size=batch_size)
    test = joint_moments(lens, clip, held_out, batch_size=batch_size)
    split = lens.spec.output_dim
    scatter, mean = fit.scatter[0], fit.mean[0]
    s_rr = scatter[:split, :split]
    penalty = ridge * s_rr.trace() / split
    weight = torch.linalg.solve(s_rr + penalty * torch.eye(split, dtype=s_rr.dtype), scatter[:split, split:])
    bias = mean[split:] - mean[:split] @ weight
    return Alignment(weight, bias, float(ridge), fit.count, test.count, explained_variance(test, weight, bias),
                     explained_variance(fit, weight, bias))

"""The one guard against NaN or infinite pieces, shared by `lens.decompose` and every streaming pass.

Images are checked finite on the way in (`Lens.images_to_tensor`), so non-finite pieces come from the computation:
weights that hold NaN, fp16 overflow, or finite inputs so large that a layer overflows (a LayerNorm variance squares
them). The message names the likely cause, so the fix is clear.
"""

from __future__ import annotations

import torch

from ..errors import CliplensError

LARGE_INPUT = 1e4  # preprocessed pixels lie within a few units; raw 0..255 pixels are far below this as well


def require_finite(images: torch.Tensor, *values: torch.Tensor) -> None:
    """Refuse results with NaN or infinite entries computed from `images`."""
    if all(torch.isfinite(value).all() for value in values):
        return
    largest = float(images.abs().max()) if images.numel() else 0.0
    if largest > LARGE_INPUT:
        raise CliplensError(f"the model produced NaN or infinite pieces because the images reach |x| = {largest:.3g}, "
                            "which overflows its layers; pass images through lens.preprocess")
    raise CliplensError("the model produced NaN or infinite pieces from ordinary images; check the weights for NaN and "
                        "use --precision fp32 (fp16 overflows)")

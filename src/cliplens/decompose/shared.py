"""One forward pass per batch, however many readers it has (docs/methods/analysis.md#one-forward).

Head statistics, second-order effects, pair coefficients and evaluation variants all read the same blocks of the
same batch. Inside `sharing(images)` a decomposer runs its forward once for that batch and hands every later reader
of the same tensor the states it kept; outside it, nothing is kept and every call runs its own forward, as before.
What is kept lives for one batch only, so memory does not grow with the number of images.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch


class SharedForward:
    """A decomposer mixin: `sharing(images)` makes `once(name, images, compute)` compute at most once per batch."""

    _shared: tuple[torch.Tensor, dict[str, Any]] | None = None

    @contextmanager
    def sharing(self, images: torch.Tensor) -> Iterator[None]:
        self._shared = (images, {})
        try:
            yield
        finally:
            self._shared = None

    def once(self, name: str, images: torch.Tensor, compute: Callable[[], Any]) -> Any:
        """`compute()`, kept for later readers of the same batch while sharing it, else computed afresh."""
        if self._shared is None or self._shared[0] is not images:
            return compute()
        kept = self._shared[1]
        if name not in kept:
            kept[name] = compute()
        return kept[name]

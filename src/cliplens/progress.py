"""Progress bars in one place: drawn only when the caller asks (commands do; library calls do not by default) and
only on a terminal, so that logs and pipes get no bar characters."""

from __future__ import annotations

from typing import Any, Iterator, Sequence, TypeVar

T = TypeVar("T")


def progress_bar(total: int, description: str, unit: str, enabled: bool, initial: int = 0) -> Any:
    """A tqdm bar over `total` units; a no-op bar when not `enabled` or when stderr is not a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit=unit, leave=False,
                disable=True if not enabled else None)  # None: tqdm draws only on a terminal


def progress_over(items: Sequence[T], description: str, unit: str, enabled: bool) -> Iterator[T]:
    """`items` in order, with a `progress_bar` that advances as each one is done."""
    bar = progress_bar(len(items), description, unit, enabled)
    for item in items:
        yield item
        bar.update(1)
    bar.close()

"""The one exception type users see, a single actionable line, and the one check every count and size goes through."""

from __future__ import annotations

from numbers import Integral
from typing import Any


class CliplensError(Exception):
    """A problem with the user's input or environment, explained in one line that says what to do."""


def require_positive_int(name: str, value: Any) -> int:
    """`value` if it is an integer ≥ 1 (booleans are not counts), else a CliplensError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise CliplensError(f"{name} must be a positive integer, got {value!r}")
    return value

"""The one exception type users see, a single actionable line, and the one check every count and size goes through."""

from __future__ import annotations

from numbers import Integral
from typing import Any


class CliplensError(Exception):
    """A problem with the user's input or environment, explained in one line that says what to do."""


def require_positive_int(name: str, value: Any, *, maximum: int | None = None) -> int:
    """`value` if it is an integer ≥ 1 (booleans are not counts) and at most `maximum`, else a CliplensError naming
    `name`. The cap turns an absurd size into one line before any work, instead of an overflow deep inside torch."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise CliplensError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise CliplensError(f"{name} must be at most {maximum}, got {value!r}")
    return value


def require_seed(name: str, value: Any) -> int:
    """`value` if it is an integer torch can seed with (from -2**63 to 2**64 - 1), else a CliplensError naming `name`
    (torch's own refusal is an overflow error from deep inside a pass)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or not -2**63 <= value < 2**64:
        raise CliplensError(f"{name} must be an integer from -2**63 to 2**64 - 1, got {value!r}")
    return value

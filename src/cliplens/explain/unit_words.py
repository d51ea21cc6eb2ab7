"""Units (MLP neurons, ResNet pairs) named by the OMP text atoms of their principal directions (docs/methods/omp.md).

How many atoms k to ask for, and the description rows (docs/outputs.md#descriptions) of chosen units.
"""

from __future__ import annotations

from typing import Any

from ..errors import CliplensError
from .omp import SparseTextDecomposition, require_fewer_atoms
from .tables import description_row


def atom_count(requested: int | None, default: int, pool_size: int, width: int) -> int:
    """k for OMP: the request if given (refused above the pool size, and unless below the embedding `width`, see
    `require_fewer_atoms`), else `default` capped at half the pool and below the width, so that the default works on
    small pools such as the shapes vocabulary and on narrow models such as the toys."""
    require_fewer_atoms(requested, width)
    if requested is None:
        return min(default, max(1, pool_size // 2), width - 1)
    if requested > pool_size:
        raise CliplensError(f"--omp-atoms {requested} exceeds the text pool ({pool_size} texts); ask for fewer")
    return requested


def word_rows(omp: SparseTextDecomposition, labels: list[str], targets: list[int], texts_per_unit: int,
              method: str) -> list[dict[str, Any]]:
    """Description rows (docs/outputs.md#descriptions: the unit, its principal direction 0 written as signed atoms,
    largest |coefficient| first) of the units `labels`, whose directions are OMP's `targets`."""
    return [description_row(label, {"method": method, "direction": 0, "rank": rank, "description": text,
                                    "coefficient": coef})
            for label, target in zip(labels, targets)
            for rank, (text, coef) in enumerate(omp.texts_[target][:texts_per_unit])]

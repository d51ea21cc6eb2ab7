"""Principal components of heads as units: which answer a text query, and what keeping, removing or amplifying one
does to zero-shot accuracy (docs/methods/components.md#edits).

Every number here is built from v vᵀ and λ, so none depends on the signs of the components.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import CliplensError
from ..explain.components import concept_basis
from ..report.figures import png_figure
from .piece_edits import ComponentFamily, Edit

EDITS = ("keep", "remove", "amplify")


def query_rows(family: ComponentFamily, query: str, embedding: torch.Tensor, top: int) -> list[dict[str, Any]]:
    """The `top` heads and the `top` components with the most variance along the query's direction, with the
    fraction of their own variance that it is."""
    basis = concept_basis(embedding[None])
    inside, total = family.variances(basis), family.variances()
    fraction = inside / total.clamp_min(torch.finfo(total.dtype).tiny)
    rows = []
    for level, units in (("head", range(family.component_count, len(family.labels))),
                         ("component", range(family.component_count))):
        units = torch.tensor(list(units))
        order = units[inside[units].argsort(descending=True, stable=True)][:top]
        rows += [{"query": query, "level": level, "rank": rank, "piece": family.labels[u],
                  "query_variance": float(inside[u]), "variance": float(total[u]), "query_fraction": float(fraction[u])}
                 for rank, u in enumerate(order.tolist())]
    return rows


def check_amplify(amplify: float) -> None:
    if amplify == 1:
        raise CliplensError("amplify=1 changes nothing; pass a factor such as 2 (or 0.5 to damp)")


def component_edits(family: ComponentFamily, components: Sequence[int], amplify: float) -> list[Edit]:
    """The full model, then per component: keep only it in its head (the rest of the head at its mean), remove it,
    and scale its deviation by `amplify`."""
    check_amplify(amplify)
    size = len(family.labels)
    edits = [Edit("full model", torch.zeros(size, dtype=torch.float64), (("piece", ""), ("component", "")))]
    for unit in components:
        head = family.component_count + int(family.owner[unit])
        piece, _, index = family.labels[unit].rpartition(".pc")
        details = (("piece", piece), ("component", int(index)))
        keep, remove, scale = (torch.zeros(size, dtype=torch.float64) for _ in EDITS)
        keep[head], keep[unit] = -1.0, 1.0
        remove[unit] = -1.0
        scale[unit] = amplify - 1.0
        edits += [Edit(name, coefficients, details) for name, coefficients in zip(EDITS, (keep, remove, scale))]
    return edits


def with_deltas(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Edit rows with each accuracy's change from the full model (the first row)."""
    base = rows[0]["average"]
    return [{**row, "delta": row["average"] - base} for row in rows]


def plot_edits(path: str | os.PathLike, rows: Sequence[dict[str, Any]], title: str) -> Path:
    """Change in accuracy (points) of each component under keep / remove / amplify, one bar group per component."""
    units = list(dict.fromkeys(f"{row['piece']}.pc{row['component']}" for row in rows[1:]))
    with png_figure(path, "the components plot", figsize=(max(6.0, 0.5 * len(units) + 2), 4.2)) as (_, axes):
        width = 0.8 / len(EDITS)
        for i, edit in enumerate(EDITS):
            values = [100 * row["delta"] for row in rows[1:] if row["edit"] == edit]
            axes.bar([x + i * width for x in range(len(units))], values, width, label=edit)
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xticks([x + 0.4 - width / 2 for x in range(len(units))], units, rotation=60, fontsize=7)
        axes.set_ylabel(f"accuracy change (points; full model {100 * rows[0]['average']:.1f}%)")
        axes.set_title(title, fontsize=9)
        axes.legend(fontsize=8)
    return Path(path)

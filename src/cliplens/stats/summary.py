"""Human-readable summaries of statistics: which pieces carry the most signal over the data."""

from __future__ import annotations

import torch

from ..labels import pair_label
from .collect import PieceStats
from .pairs import PairStats


def largest_pieces(stats: PieceStats, top: int = 10) -> list[dict[str, object]]:
    """Pieces ranked by variance (trace of the covariance), with their share of the total and mean norm.

    Variance, not mean size, is what a piece contributes to telling images apart; the mean is what mean-ablation
    keeps, so both are shown.
    """
    variance = torch.diagonal(stats.covariance, dim1=-2, dim2=-1).sum(-1)
    total = variance.sum().clamp_min(torch.finfo(variance.dtype).tiny)
    order = variance.argsort(descending=True)[:top]
    return [
        {"piece": stats.labels[i], "variance": variance[i].item(), "share": (variance[i] / total).item(),
         "mean_norm": stats.mean[i].norm().item()}
        for i in order.tolist()
    ]


def largest_pairs(stats: PairStats, top: int = 10) -> list[dict[str, object]]:
    """Neuron×head pairs ranked by their score (mean of the top-k centred norms,
    docs/methods/resnet-pairs.md#ablation)."""
    scores = stats.scores()
    flat = scores.flatten().argsort(descending=True)[:top]
    signs = stats.principal_signs()
    rows = []
    for index in flat.tolist():
        h, n = divmod(index, stats.neurons)
        rows.append({"piece": pair_label(h, n), "score": scores[h, n].item(), "coef_mean": stats.coef_mean[h, n].item(),
                     "coef_std": stats.coef_variance[h, n].sqrt().item(), "sign": int(signs[h, n].item())})
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """A plain fixed-width table for the terminal."""
    if not rows:
        return "(nothing to show)"
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

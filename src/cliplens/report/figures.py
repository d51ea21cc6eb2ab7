"""Matplotlib figures written atomically as PNG, without a display."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from ..extras import require
from ..io.atomic import replacing


@contextlib.contextmanager
def png_figure(path: str | os.PathLike, user: str, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) of `plt.subplots(**subplots)`; on leaving, laid out and saved to `path` (120 dpi), and always
    closed. `user` names what needs matplotlib in the one-line error when it is missing."""
    require("explain", "matplotlib", user=user)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        with replacing(Path(path)) as staging:
            figure.savefig(staging, dpi=120, format="png")
    finally:
        plt.close(figure)

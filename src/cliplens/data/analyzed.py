"""An analysis folder where data is expected (docs/methods/analysis.md#reading): the evaluation data's identity and
labels, without its images.

Commands given an analysis in place of `--data-path` take their statistics and scores from it. They still need to
know what the evaluation data was (its classes for the zero-shot classifier, its fingerprint to tell in-sample from
held-out), so the analysis records the data's spec and this rebuilds the source from it, which lists files but reads
no image. Reading an image through it is refused: anything that needs pixels was not served by the analysis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import CliplensError


class AnalyzedData:
    """The evaluation data of the analysis at `path`, as `data` (rebuilt from the recorded spec) describes it."""

    def __init__(self, path: str | os.PathLike, data: Any, fingerprint: str):
        if getattr(data, "fingerprint", None) != fingerprint:
            raise CliplensError(f"the evaluation data of {path} changed since it was analysed (fingerprint differs); "
                                "run `cliplens analyze` again")
        self.path, self.evaluated = Path(path), data

    def over(self, data: Any) -> "AnalyzedData":
        """The same analysis read with its data re-labelled (a shapes split by another attribute): same images."""
        relabelled = object.__new__(AnalyzedData)
        relabelled.path, relabelled.evaluated = self.path, data
        return relabelled

    def __len__(self) -> int:
        return len(self.evaluated)

    def __getitem__(self, index: int) -> Any:
        raise CliplensError(f"{self.path} is an analysis: it holds statistics and scores, not images; pass the "
                            "image data itself to commands that read pixels")

    def __getattr__(self, name: str) -> Any:  # fingerprint, label, classnames, describe, ... of the evaluated data
        if name in ("path", "evaluated"):
            raise AttributeError(name)
        return getattr(self.evaluated, name)

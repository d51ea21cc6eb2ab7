"""The explorer: a static report in the browser that joins the outputs of the commands run on one model.

`build_report` reads output folders (`sources`) and writes a folder that opens from the file system (`site`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .site import write_site
from .sources import Findings, gather


@dataclass(frozen=True)
class Report:
    path: Path  # the folder; open path / "index.html"
    findings: Findings


def build_report(runs: list[Path], output_dir: Path) -> Report:
    """Read the output folders `runs` (one model's) and write the explorer to `output_dir` atomically."""
    findings = gather([Path(run) for run in runs])
    return Report(write_site(findings, Path(output_dir)), findings)


__all__ = ["Report", "build_report"]

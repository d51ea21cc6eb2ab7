"""`cliplens report RUN_DIRS...`: one folder that explores the outputs of the commands run on one model, in a browser
opened from the file system (docs/commands/report.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..explorer import build_report
from .options import output_option


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@output_option("cliplens-out/report")
def command(run_dirs: tuple[Path, ...], output_dir: Path) -> None:
    """Join the output folders RUN_DIRS of one model's commands into a static explorer: OUTPUT_DIR/index.html."""
    report = build_report(list(run_dirs), output_dir)
    findings = report.findings
    click.echo(f"{findings.model['model']}: {len(findings.units)} units from {len(run_dirs)} output folders")
    click.echo(f"wrote {report.path}; open {(report.path / 'index.html').resolve().as_uri()}")

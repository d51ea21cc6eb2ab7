"""The floors of the package (pyproject's import-linter contracts): data flows one way and no import cycle exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the project's contracts on the package found under `source_root`."""
    script = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1]))"
    return subprocess.run([sys.executable, "-c", script, str(ROOT / "pyproject.toml")], capture_output=True,
                          text=True, env={"PYTHONPATH": str(source_root), "PATH": ""}, cwd=source_root)


def test_the_package_keeps_its_floors():
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_back_edge_breaks_the_build(tmp_path):
    """The contract is not vacuous: a decomposer importing the CLI (a floor far above it) is caught and named."""
    shutil.copytree(ROOT / "src" / "cliplens", tmp_path / "cliplens", ignore=shutil.ignore_patterns("assets"))
    vit = tmp_path / "cliplens" / "decompose" / "vit.py"
    vit.write_text(vit.read_text() + "\nfrom ..cli import main  # a back-edge\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "cliplens.decompose is not allowed to import cliplens.cli" in result.stdout


def test_every_module_sits_on_a_floor():
    """A new package or top-level module must be placed in the contract, or the floors would not constrain it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    named = {name.strip() for floor in config["layers"] for name in floor.split("|")}
    package = ROOT / "src" / "cliplens"
    present = {path.stem for path in package.glob("*.py") if not path.stem.startswith("__")}
    present |= {path.parent.name for path in package.glob("*/__init__.py")}
    assert present == named


def test_command_modules_do_not_import_each_other():
    """A command parses, calls the library, prints and writes; what two commands share lives in cli/options.py (or
    below), never in a command module another one imports."""
    import ast

    commands = {path.stem for path in (ROOT / "src" / "cliplens" / "cli").glob("*.py")} - {"__init__", "options"}
    for name in sorted(commands):
        tree = ast.parse((ROOT / "src" / "cliplens" / "cli" / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert not imported & commands, f"cli/{name}.py imports the command module(s) {imported & commands}"

"""The documentation site builds with `mkdocs build --strict`: no broken page link or anchor, no unresolved API
reference, every page in the navigation, and every registered command documented by its own page.

The build imports the command modules (mkdocs-click) and reads the sources (mkdocstrings), so the checkout's `src`
goes first on the path: the site documents this code, not another installed copy.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cliplens.cli import cli

ROOT = Path(__file__).resolve().parents[1]
COMMAND_PAGES = ROOT / "docs" / "commands"
CLICK_BLOCK = re.compile(r"^::: mkdocs-click\n    :module: (?P<module>\S+)\n    :command: (?P<command>\S+)$", re.M)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(output)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return output


def test_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in ("index.html", "architecture/index.html", "methods/textspan/index.html", "commands/index.html",
                 "api/evaluate/index.html"):
        assert (site / page).is_file(), page
    textspan = (site / "methods" / "textspan" / "index.html").read_text()
    assert 'id="cls-ablation"' in textspan  # an anchor code comments cite


def test_site_needs_no_network(site: Path) -> None:
    remote = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["']https?://""")
    offenders = [str(page.relative_to(site)) for page in site.rglob("*.html") if remote.search(page.read_text())]
    assert not offenders, f"pages load scripts or styles from the network: {offenders[:5]}"


def test_api_reference_is_generated_from_docstrings(site: Path) -> None:
    api = (site / "api" / "index.html").read_text()
    assert "cliplens.load" in api and "Load a CLIP model as a Lens" in api


def test_every_command_has_a_page_generated_from_its_click_definition() -> None:
    pages = {path.stem: path for path in COMMAND_PAGES.glob("*.md") if path.stem != "index"}
    assert set(pages) == set(cli.commands), "add docs/commands/<name>.md (and a nav entry) for every command"
    for name, path in pages.items():
        block = CLICK_BLOCK.search(path.read_text())
        assert block, f"{path.name} has no mkdocs-click block"
        documented = getattr(importlib.import_module(block["module"]), block["command"])
        assert documented is cli.commands[name], f"{path.name} documents {block['module']}, not `cliplens {name}`"

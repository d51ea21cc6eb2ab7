"""What the commands write, against docs/outputs.md: the demo's commands (at 64 images) and the commands it does not
run write only documented files, every CSV has its kind's documented columns, and the columns mean what the page
says (no head or `layer4` in `layer`, ranks counted inside their group, rows by rank, a similarity in [-1, 1], every
retrieval and decomposition row naming its image). The demo's summary.md explains its notation and indexes every file.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cliplens.cli import cli, demo
from cliplens.explain.tables import unit_columns
from cliplens.io.tables import GROUPS, SCHEMAS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "outputs.md"
# the folders of the commands the demo does not run, with their arguments
EXTRA = {
    "decompose": ["decompose", "--model", "toy:rn", "--data-path", "shapes:test:6", "--granularity", "pair"],
    "explain-svd": ["explain", "--model", "toy:vit", "--method", "svd", "--data-path", "shapes:test:64:0",
                    "--texts-per-head", "3", "--num-last-layers", "2"],
    "explain-omp": ["explain", "--model", "toy:vit", "--method", "omp", "--data-path", "shapes:test:64:0",
                    "--texts-per-head", "3", "--num-last-layers", "1", "--num-directions", "2"],
    "segment": ["segment", "--model", "toy:vit", "--data-path", "shapes:segmentation:4", "--lens", "heads",
                "--lens", "centre", "--examples", "2"],
}


def documented_kinds() -> dict[str, tuple[str, ...]]:
    """kind -> its columns, from the page's "Table kinds" tables."""
    text = PAGE.read_text(encoding="utf-8").split("## Table kinds", 1)[1]
    kinds = {}
    for section in re.split(r"\n### ", text)[1:]:
        name = section.split(" ", 1)[0]
        kinds[name] = tuple(re.findall(r"^\| `([a-z0-9_<>]+)` \|", section, flags=re.M))
    return kinds


def documented_files() -> dict[str, list[tuple[str, str]]]:
    """command -> [(file name pattern, kind)], from the page's per-command tables."""
    text = PAGE.read_text(encoding="utf-8").split("## Per command", 1)[1].split("## Table kinds", 1)[0]
    files = {}
    for section in re.split(r"\n### ", text)[1:]:
        names = section.split("\n", 1)[0].split(" and ")
        rows = re.findall(r"^\| (.+?) \| (.+?) \|", section, flags=re.M)[1:]  # after the header
        entries = [(pattern, kind.split("](")[0].strip("[")) for cell, kind in rows
                   for pattern in re.findall(r"`([^`]+)`", cell)]
        for name in names:
            files[name.strip()] = entries
    return files


@pytest.fixture(scope="module")
def written(small_demo, monkeypatch_module):
    """The demo at 64 images per set (shared with test_cli_foundation), and the commands it does not run, each in its
    own folder beside it."""
    root, _ = small_demo
    monkeypatch_module.setenv("CLIPLENS_CACHE", str(root / "cache"))
    runner = CliRunner()
    for folder, arguments in EXTRA.items():
        result = runner.invoke(cli, arguments + ["--output-dir", str(root / folder)])
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def command_of(root: Path, path: Path) -> tuple[str, Path]:
    """(the command that wrote `path`, its output folder)."""
    first = path.relative_to(root).parts[0]
    if first == "demo":
        folder = root / "demo" / path.relative_to(root / "demo").parts[0]
        steps = demo.vit_steps(root / "demo") + demo.rn_steps(root / "demo")
        steps += demo.dissect_steps(root / "demo") + demo.report_steps(root / "demo", steps)
        return next(name for _, name, arguments in steps if Path(arguments[-1]) == folder), folder
    return EXTRA[first][0], root / first


def documented_kind(root: Path, path: Path) -> str:
    command, folder = command_of(root, path)
    name = path.relative_to(folder).as_posix()
    for pattern, kind in documented_files()[command]:
        glob = re.sub(r"\{[a-z]+\}", "*", pattern)
        if fnmatch.fnmatch(name, glob) or fnmatch.fnmatch(name, glob.rstrip("/") + "/*"):
            return kind
    raise AssertionError(f"{name}, written by `cliplens {command}`, is not listed in docs/outputs.md")


def has_columns(header: tuple[str, ...], kind: str) -> bool:
    """`header` is the kind's columns, with GROUPS standing for one column or more (one per group, and spreads)."""
    columns = SCHEMAS[kind]
    if GROUPS not in columns:
        return header == columns
    before, after = columns[: columns.index(GROUPS)], columns[columns.index(GROUPS) + 1:]
    return (len(header) > len(before) + len(after) and header[: len(before)] == before
            and header[len(header) - len(after):] == after and not set(header) & {GROUPS})


def read(path: Path) -> tuple[tuple[str, ...], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        return tuple(reader.fieldnames or ()), list(reader)


def groups(rows: list[dict[str, str]], keys: tuple[str, ...]) -> dict[tuple[str, ...], list[dict[str, str]]]:
    grouped: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(tuple(row[key] for key in keys), []).append(row)
    return grouped


def check_descriptions(rows):
    for row in rows:
        expected = {name: str(value) for name, value in unit_columns(row["label"]).items()}
        assert {name: row[name] for name in expected} == expected, row  # layer holds layers only, and so on
        assert row["similarity"] == "" or -1 - 1e-9 <= float(row["similarity"]) <= 1 + 1e-9, row
        assert sum(row[name] != "" for name in ("similarity", "coefficient", "variance_explained")) == 1, row
    by_group = groups(rows, ("label", "method", "direction", "pole"))
    assert all([row["rank"] for row in group] == [str(r) for r in range(len(group))] for group in by_group.values())
    assert any(len(group) > 1 for group in by_group.values())  # a rank column that is not always 0


def check_ranking(rows, path):
    assert [row["rank"] for row in rows] == [str(r) for r in range(len(rows))]
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert {row["label"] for row in rows} == {path.stem} and len({row["ranked_by"] for row in rows}) == 1
    assert all(row["item"].startswith("shapes:test:64:") and " scene " in row["item"] for row in rows)


def check_ablation(rows, path):
    assert (rows[0]["level"], rows[0]["ablated"]) == ("model", "0")
    for row in rows:
        assert float(row["accuracy"]) == int(row["correct"]) / int(row["images"]), row
        if row["kept"]:
            assert int(row["kept"]) + int(row["ablated"]) == int(row["total"]), row


def check_pairs(rows, path):
    assert [row["rank"] for row in rows] == [str(r) for r in range(len(rows))]
    scores = [float(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)


def check_images(rows, path):
    assert [row["index"] for row in rows] == [str(i) for i in range(len(rows))]
    assert all(row["item"].startswith("shapes:test:6:0 scene ") for row in rows)


CHECKS = {
    "descriptions": lambda rows, path: check_descriptions(rows),
    "ranking": check_ranking,
    "ablation": check_ablation,
    "pairs": check_pairs,
    "images": check_images,
}


def test_the_page_documents_every_kind_with_its_columns():
    assert documented_kinds() == SCHEMAS


def test_every_table_has_its_documented_columns_and_meaning(written):
    tables = sorted(path for path in written.rglob("*.csv") if "cache" not in path.parts)
    kinds = {}
    for path in tables:
        kind = documented_kind(written, path)
        header, rows = read(path)
        assert has_columns(header, kind), (path, header)
        assert rows, path
        CHECKS.get(kind, lambda rows, path: None)(rows, path)
        kinds.setdefault(kind, []).append(path.name)
    assert set(kinds) == set(SCHEMAS), kinds  # every kind is written by some command here


def test_every_file_written_is_documented(written):
    for path in written.rglob("*"):
        if path.is_file() and "cache" not in path.parts and path.name != "summary.md":
            documented_kind(written, path)


def test_the_demo_summary_explains_its_notation_and_indexes_every_file(written):
    root = written / "demo"
    summary = (root / "summary.md").read_text(encoding="utf-8")
    assert "`|s - mean s|*|u|` ranks the images" in summary and "embedding units" in summary
    assert "baseline equals the full model" in summary  # toy:vit has no layers before the last 4
    _, rows = read(root / "vit-reconstruct" / "reconstruction.csv")
    chance = next(float(row["accuracy"]) for row in rows if row["method"] == "chance")
    assert ("far below chance" in summary) == any(row["texts"] and float(row["accuracy"]) < chance for row in rows)
    indexed = set(re.findall(r"^- `([^`]+)`", summary, flags=re.M))
    written_files = {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}
    assert indexed == written_files

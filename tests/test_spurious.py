"""Spurious-cue removal (docs/methods/spurious.md): the Waterbirds reader, the bookkeeping of edits and k, and the toy
result."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

import cliplens
from cliplens.cli import main
from cliplens.data.loader import LoadReport, as_source, batches
from cliplens.data.waterbirds import GROUPS, WaterbirdsDataset
from cliplens.errors import CliplensError
from cliplens.evaluate.spurious import (
    FULL, HOLDERS, RANDOM, SELECTED, check_ks, choose_k, rank_units, selection_edits, summary_rows,
)
from cliplens.workflows import spurious_study as workflow

# (file, y, place, split) in the dataset's own layout: one folder per species
ROWS = [("001.Albatross/a.jpg", 1, 1, 2), ("001.Albatross/b.jpg", 1, 0, 2), ("002.Sparrow/c.jpg", 0, 0, 2),
        ("002.Sparrow/d.jpg", 0, 1, 2), ("002.Sparrow/e.jpg", 0, 0, 0), ("001.Albatross/f.jpg", 1, 1, 1)]


def waterbirds(root: Path, rows=ROWS, columns=("img_filename", "y", "place", "split")) -> Path:
    for name, *_ in rows:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40, 90, 200)).save(root / name)
    with open(root / "metadata.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns + ("detail",))
        writer.writerows(row + ("x",) for row in rows)
    return root


def test_waterbirds_reads_each_split_with_groups_from_y_and_place(tmp_path):
    root = waterbirds(tmp_path)
    test = as_source(f"waterbirds:{root}")
    assert isinstance(test, WaterbirdsDataset) and len(test) == 4
    assert [test[i][1] for i in range(4)] == [3, 2, 0, 1]  # group = 2 y + place
    assert [GROUPS[test[i][1]] for i in (0, 3)] == ["waterbird on water", "landbird on water"]
    assert len(as_source(f"waterbirds:{root}:train")) == 1 and as_source(f"waterbirds:{root}:val")[0][1] == 3
    assert test.fingerprint != as_source(f"waterbirds:{root}:val").fingerprint


def test_a_missing_waterbirds_image_is_skipped_with_its_reason(tmp_path):
    root = waterbirds(tmp_path)
    (root / "002.Sparrow" / "c.jpg").unlink()
    report = LoadReport()
    list(batches(as_source(f"waterbirds:{root}"), lambda image: torch.zeros(3, 2, 2), batch_size=4, report=report))
    assert report.loaded == 3 and report.reasons == ["missing"] and report.skipped[0].endswith("c.jpg")


@pytest.mark.parametrize("change, says", [
    ("no-table", "no metadata.csv in"),
    ("no-place", "lacks column(s) place"),
    ("bad-y", "line 3: y='2'"),
    ("bad-split", "line 2: split='test'"),
    ("empty", "has no rows with split=2 (test)"),
])
def test_bad_waterbirds_layouts_are_one_line_errors(tmp_path, change, says):
    rows = list(ROWS)
    columns = ("img_filename", "y", "place", "split")
    if change == "no-place":
        columns = ("img_filename", "y", "where", "split")
    if change == "bad-y":
        rows[1] = ("001.Albatross/b.jpg", 2, 0, 2)
    if change == "bad-split":
        rows[0] = ("001.Albatross/a.jpg", 1, 1, "test")
    if change == "empty":
        rows = [row for row in rows if row[3] != 2]
    root = waterbirds(tmp_path, rows, columns)
    if change == "no-table":
        (root / "metadata.csv").unlink()
    with pytest.raises(CliplensError, match=f"^[^\n]*{__import__('re').escape(says)}[^\n]*$"):
        as_source(f"waterbirds:{root}")


class Units:
    """A family of six units whose variances make the ranking known: unit u has concept variance 6 − u."""

    kind, labels = "heads", [f"u{i}" for i in range(6)]

    def variances(self, basis=None):
        return torch.arange(6, 0, -1, dtype=torch.float64) if basis is not None else torch.full((6,), 10.0).double()


def test_units_rank_by_concept_variance_and_edits_ablate_exactly_k_of_them():
    order, rows = rank_units(Units(), torch.eye(4)[:2])
    assert order.tolist() == list(range(6)) and rows[0]["concept_fraction"] == pytest.approx(0.6)
    edits = selection_edits(Units(), order, (4, 2, 2, 9), draws=3, seed=5)
    assert [(edit.name, dict(edit.details)["k"]) for edit in edits] == [(FULL, 0)] + [
        (name, k) for k in (2, 4) for name in [SELECTED] + [RANDOM] * 3]
    for edit in edits:
        k = dict(edit.details)["k"]
        assert int((edit.coefficients == -1).sum()) == k and int((edit.coefficients != 0).sum()) == k
    assert edits[1].coefficients[:2].tolist() == [-1, -1]
    assert torch.equal(edits[2].coefficients, selection_edits(Units(), order, (2, 4), draws=3, seed=5)[2].coefficients)
    with pytest.raises(CliplensError, match="exceeds the 6 units"):
        check_ks([7, 8], 6)


def test_k_is_the_best_validation_worst_group_and_the_summary_averages_the_draws():
    def row(edit, k, worst, average=0.5):
        return {"edit": edit, "k": k, "g0": worst, "g1": 1.0, "worst_group": worst, "group_mean": 0.0,
                "average": average, "images": 10}

    val = [row(FULL, 0, 0.3), row(SELECTED, 1, 0.5), row(SELECTED, 2, 0.7), row(SELECTED, 4, 0.7)]
    assert choose_k(val) == 2
    test = val + [row(RANDOM, 2, 0.2, 0.4), row(RANDOM, 2, 0.4, 0.6), row(HOLDERS, 2, 0.1)]
    summary = {entry["edit"]: entry for entry in summary_rows(test, 2, ["g0", "g1"])}
    assert summary[RANDOM]["draws"] == 2 and summary[RANDOM]["worst_group"] == pytest.approx(0.3)
    assert summary[RANDOM]["worst_group_std"] == pytest.approx(0.1) and summary[FULL]["k"] == 0
    assert summary[SELECTED]["worst_group"] == 0.7 and summary[SELECTED]["worst_group_std"] == ""


def test_data_without_groups_and_bad_templates_are_refused_before_the_first_pass(monkeypatch, tmp_path):
    lens = cliplens.load("toy:rn")
    monkeypatch.setattr(workflow, "obtain_pair_stats", lambda *a, **k: pytest.fail("the first pass ran"))
    for options, says in (({"val_path": "shapes:test:4"}, "has no groups"),
                          ({"concept_templates": "{x}"}, "unknown template set"),
                          ({"concept": [" "]}, "give the concept"),
                          ({"kind": "neurons"}, "unknown kind of piece")):
        arguments = {"val_path": "shapes:spurious-test:4", "fit_path": "shapes:spurious-train:4",
                     "concept": ["stripes", "checker"], **options}
        with pytest.raises(CliplensError, match=says):
            workflow.spurious_study(lens, "shapes:spurious-test:4", **arguments)
    with pytest.raises(CliplensError, match="ResNet CLIP models only"):
        workflow.spurious_study(cliplens.load("toy:vit"), "shapes:spurious-test:4", val_path="x", fit_path="x",
                                concept=["a"], kind="pairs")


def test_the_command_writes_its_tables_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    try:
        main(["spurious", "--model", "toy:rn", "--data-path", "shapes:spurious-test:24:3", "--val-path",
              "shapes:spurious-test:24:4", "--fit-path", "shapes:spurious-train:24:5", "--concept", "stripes,checker",
              "--kind", "pcs", "--k", "1", "--k", "2", "--draws", "2", "--output-dir", str(out)])
    except SystemExit as exc:
        assert exc.code == 0
    printed = capsys.readouterr().out
    assert "k = " in printed and "heads holding them" in printed
    with open(out / "summary.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["edit"] for row in rows] == [FULL, SELECTED, RANDOM, HOLDERS] and rows[2]["draws"] == "2"
    with open(out / "sweep.csv") as stream:
        sweep = list(csv.DictReader(stream))
    assert len(sweep) == 2 * (1 + 2 * (1 + 2 + 1)) and {row["images"] for row in sweep} == {"24"}
    assert (out / "spurious.png").stat().st_size > 10_000 and (out / "ranking.csv").exists()


def test_pairs_along_the_background_words_fix_toy_rn_worst_group():
    """Target (issue 13): worst group up ≥ 15 points, average down ≤ 2. Seeds 21-23 were not used to choose anything
    (the settings were chosen on seeds 10-12). Measured when written: worst group 36.8 % → 71.8 % (seeds 10-12).
    With 400 images the two groups the cue misleads hold ~190 each (binomial sd ≤ 3.6 points), so a true gain of
    ~35 points sits ~4 sd of the difference above the 15-point target."""
    lens = cliplens.load("toy:rn")
    result = workflow.spurious_study(
        lens, "shapes:spurious-test:400:22", val_path="shapes:spurious-test:400:21",
        fit_path="shapes:spurious-train:400:23", concept=["stripes", "checker"], ks=(8, 16, 32, 64, 128),
        batch_size=100)
    table = {row["edit"]: row for row in result.summary}
    full, selected, random = table[FULL], table[SELECTED], table[RANDOM]
    assert selected["worst_group"] - full["worst_group"] >= 0.15, table
    assert selected["average"] >= full["average"] - 0.02, table
    assert selected["worst_group"] - random["worst_group"] >= 0.15 and random["draws"] == 10, table


def test_the_command_refuses_data_without_groups_before_loading_the_model(monkeypatch, capsys):
    from cliplens import factory

    monkeypatch.setattr(factory, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    for argv, says in ((["--val-path", "shapes:test:8"], "has no groups"),
                       (["--concept", " , "], "give the concept")):
        with pytest.raises(SystemExit) as exit_info:
            main(["spurious", "--concept", "stripes", *argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and says in err and len(err.strip().splitlines()) == 1, err

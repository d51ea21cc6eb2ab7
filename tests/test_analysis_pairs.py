"""ResNet pair ablations in an analysis's one evaluation pass: `pairs` and `neuron-ablate` given the analysis read
every count and the neurons' moments from it, write the tables of their own passes byte for byte, and refuse in one
line what the pass did not score (docs/methods/analysis.md#scores)."""

from __future__ import annotations

import json

import pytest

from cliplens.data import loader
from conftest import run_cli as run
from test_analysis import EVAL, FIT, fails, passes  # noqa: F401 (the pass counter is a fixture)

RN = ["--model", "toy:rn", "--precision", "fp64"]
TEXT = ["--pool", "shapes", "--omp-atoms", "4"]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    run("analyze", *RN, "--fit-path", FIT, "--data-path", EVAL, "--ask", "pairs", "--ask", "pair-ablate",
        "--keep", "5", "--keep", "10", "--keep", "50", "--label", "shape", "--label", "colour", *TEXT,
        "--output-dir", out)
    return out / "analysis"


def test_one_evaluation_pass_scores_every_pair_variant_of_every_label(tmp_path, passes):
    run("analyze", *RN, "--fit-path", FIT, "--data-path", EVAL, "--ask", "pair-ablate", "--keep", "10",
        "--label", "shape", "--label", "colour", *TEXT, "--output-dir", tmp_path)
    fit_key, eval_key = (loader.fingerprint(loader.as_source(spec)) for spec in (FIT, EVAL))
    assert passes == {fit_key: 1, eval_key: 1}
    record = json.loads((tmp_path / "analysis" / "metadata.json").read_text())
    assert record["passes"] == {"fit": 1, "evaluation": 1} and set(record["parts"]) == {"pieces", "pairs",
                                                                                         "pair-neurons"}
    scores = json.loads((tmp_path / "analysis" / "scores.json").read_text())["pairs"]
    # two labels (two classifiers), each: full model, pairs and neurons keep 10 %, pc0 and text reconstructions
    assert len(scores) == 2 and all(len(task["variants"]) == 5 for task in scores.values())


@pytest.mark.parametrize("table, command", [
    (["pairs.csv", "ablation.csv", "pair_words.csv", "neuron_words.csv"], ["pairs", "--keep", "10"]),
    (["ablation.csv"], ["neuron-ablate", "--keep", "5", "--keep", "50", "--level", "neuron"]),
    (["ablation.csv"], ["neuron-ablate", "--keep", "10", "--omp-atoms", "0"]),
])
def test_pairs_and_neuron_ablate_read_the_analysis_with_no_pass_and_the_same_tables(analysis, tmp_path, passes,
                                                                                    table, command):
    stats = "--fit-path" if command[0] == "pairs" else "--stats"
    text = TEXT if "--omp-atoms" not in command else ["--pool", "shapes"]
    run(*command, *RN, *text, "--data-path", analysis, stats, analysis, "--output-dir", tmp_path / "read")
    assert not passes, f"{command[0]} streamed images although the analysis scored it"
    run(*command, *RN, *text, "--data-path", EVAL, stats, analysis, "--output-dir", tmp_path / "own")
    for name in table:
        assert (tmp_path / "read" / name).read_text() == (tmp_path / "own" / name).read_text(), name


@pytest.mark.parametrize("args, message", [
    (["neuron-ablate", "--keep", "20", *TEXT], "did not score 2 of these"),  # pairs and neurons keep 20 %
    (["neuron-ablate", "--keep", "10", "--pool", "shapes", "--omp-atoms", "3"], "did not score 1 of these"),
    (["neuron-ablate", "--keep", "10", "--pool-templates", "none", "--pool", "shapes", "--omp-atoms", "4"],
     "did not score 1 of these"),
    (["neuron-ablate", "--keep", "10", *TEXT, "--templates", "simple"], "scored no pair ablation"),
    (["pairs", "--keep", "10", *TEXT, "--fit-path", "shapes:test:32:3"], "scored no pair ablation"),  # other means
])
def test_what_the_pass_did_not_score_is_refused_in_one_line(analysis, tmp_path, passes, args, message):
    stats = [] if "--fit-path" in args else ["--stats", analysis]
    text = fails(*args, *RN, "--data-path", analysis, *stats, "--output-dir", tmp_path / "x")
    assert message in text and "cliplens analyze --ask pair-ablate" in text and "\n" not in text.strip()
    assert not any(key == loader.fingerprint(loader.as_source(EVAL)) for key in passes)


def test_a_label_the_analysis_did_not_score_is_refused(tmp_path):
    out = tmp_path / "an"
    run("analyze", *RN, "--fit-path", FIT, "--data-path", EVAL, "--ask", "pair-ablate", "--keep", "10",
        "--label", "colour", "--omp-atoms", "0", "--output-dir", out)
    text = fails("neuron-ablate", *RN, "--data-path", out / "analysis", "--stats", out / "analysis", "--keep", "10",
                 "--omp-atoms", "0", "--output-dir", tmp_path / "x")
    assert "scored no pair ablation" in text and "--label" in text


def test_another_pool_is_refused(analysis, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("red\nblue\ngreen\ncircle\nsquare\ntriangle\nstripes\nchecker\nsmall\nlarge\n")
    text = fails("pairs", *RN, "--data-path", analysis, "--fit-path", analysis, "--keep", "10", "--pool", pool,
                 "--omp-atoms", "4", "--output-dir", tmp_path / "x")
    assert "did not score 1 of these" in text and "--pool" in text


@pytest.mark.parametrize("args, message", [
    (["--model", "toy:vit", "--ask", "pair-ablate"], "ResNet CLIP models only"),
    (["--model", "toy:rn", "--ask", "pair-ablate", "--keep", "0"], "(0, 100]"),
    (["--model", "toy:rn", "--ask", "pair-ablate", "--omp-atoms", "999"], "999"),
    (["--model", "toy:rn", "--ask", "pair-ablate", "--pool", "nonexistent-pool"], "nonexistent-pool"),
])
def test_pair_ablate_settings_are_refused_before_any_pass(args, message, passes):
    text = fails("analyze", *args, "--fit-path", FIT, "--data-path", EVAL, "--output-dir", "unused")
    assert message in text and not passes


def test_pair_ablate_needs_evaluation_data_before_any_pass(passes):
    assert "--data-path" in fails("analyze", *RN, "--fit-path", FIT, "--ask", "pair-ablate", "--output-dir", "unused")
    assert not passes


def test_the_dry_run_counts_the_evaluation_pass_and_the_neurons_moments(tmp_path):
    text = run("analyze", *RN, "--fit-path", FIT, "--data-path", EVAL, "--ask", "pair-ablate", "--omp-atoms", "0",
               "--dry-run", "--output-dir", tmp_path / "x")
    assert "passes over the fit data: 1, over the evaluation data: 1" in text
    # 384 neurons x 6 heads: count, mean [C, H] and scatter [C, H, H] in float64
    assert f"pair-neurons: {(1 + 384 * 6 + 384 * 36) * 8 / 2**20:.1f} MiB" in text and "pairs:" in text
    assert not (tmp_path / "x").exists()

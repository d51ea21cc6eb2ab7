"""Analyse once: one forward per batch for every reader, at most two fit passes and one evaluation pass, and commands
that read the analysis in place of their data give the numbers of their own passes (docs/methods/analysis.md)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

import cliplens
from cliplens.cli import cli
from cliplens.data import loader
from cliplens.errors import CliplensError
from cliplens.settings import Settings
from cliplens.stats.fit_passes import FitRequest, fit_statistics
from cliplens.stats.second_order import collect_second_order
from cliplens.workflows.analysis import analyze, plan_analysis, sample_plan
from conftest import run_cli as run

FIT, EVAL = "shapes:test:48:0", "shapes:test:40:1"
FP64 = ["--precision", "fp64"]


def fails(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code != 0 and isinstance(result.exception, (CliplensError, SystemExit)), result.output
    return str(result.exception) if isinstance(result.exception, CliplensError) else result.output


@pytest.fixture(scope="module")
def vit64():
    return cliplens.load("toy:vit", precision="fp64")


@pytest.fixture
def passes(monkeypatch):
    """How often each data source was streamed, by fingerprint."""
    counts: dict[str, int] = {}
    batches = loader.batches

    def counted(source, *args, **kwargs):
        key = loader.fingerprint(source)
        counts[key] = counts.get(key, 0) + 1
        return batches(source, *args, **kwargs)

    monkeypatch.setattr(loader, "batches", counted)
    return counts


def test_a_shared_batch_runs_the_blocks_once_and_changes_no_number(vit64, monkeypatch):
    decomposer = vit64.decomposer
    images = torch.rand(3, 3, vit64.spec.image_size, vit64.spec.image_size, dtype=torch.float64)
    alone = decomposer.factorise(images, Settings("head"), tokens=True)
    runs = []
    blocks = decomposer._run
    monkeypatch.setattr(decomposer, "_run", lambda x: runs.append(x) or blocks(x))
    with decomposer.sharing(images):
        shared = decomposer.factorise(images, Settings("head"), tokens=True)
        again = decomposer.factorise(images, Settings("head", convention="reference"))
        decomposer.factorise(images.clone(), Settings("head"))  # another tensor is another forward
    assert len(runs) == 2
    assert torch.equal(shared.coefficients, alone.coefficients) and torch.equal(shared.embedding, alone.embedding)
    assert torch.equal(shared.token_coefficients, alone.token_coefficients)
    assert torch.equal(again.embedding, alone.embedding)
    decomposer.factorise(images, Settings("head"))  # outside, nothing is kept
    assert len(runs) == 3 and decomposer._shared is None


def test_one_fit_pass_equals_the_separate_collections(vit64, passes):
    fit = fit_statistics(vit64, FIT, FitRequest(mlp_layers=(1, 2)))
    assert fit.passes == 2 and list(passes.values()) == [2]
    pieces = vit64.collect(FIT, spatial=True)
    assert torch.equal(fit.pieces.mean, pieces.mean) and torch.equal(fit.pieces.covariance, pieces.covariance)
    assert torch.equal(fit.pieces.token_mean, pieces.token_mean) and fit.pieces.metadata == pieces.metadata
    for layer in (1, 2):
        alone = collect_second_order(vit64, FIT, layer=layer)
        joint = fit.second_order[layer]
        assert torch.equal(joint.moments.scatter, alone.moments.scatter)
        assert torch.equal(joint.top_index, alone.top_index) and torch.equal(joint.thresholds, alone.thresholds)
        assert joint.metadata == alone.metadata


def test_resnet_pairs_and_pieces_come_from_one_pass(passes):
    lens = cliplens.load("toy:rn", precision="fp64")
    fit = fit_statistics(lens, FIT, FitRequest(pairs=True))
    assert list(passes.values()) == [1]
    pairs = lens.collect(FIT, granularity="pair")
    assert torch.equal(fit.pairs.coef_scatter, pairs.coef_scatter) and torch.equal(fit.pairs.high_index,
                                                                                  pairs.high_index)
    assert torch.equal(fit.pieces.covariance, lens.collect(FIT).covariance)


def test_commands_reading_the_analysis_give_the_numbers_of_their_own_passes(tmp_path, passes):
    out = tmp_path / "an"
    run("analyze", *FP64, "--fit-path", FIT, "--data-path", EVAL, "--ask", "statistics", "--ask", "second-order",
        "--mlp-layer", "1", "--ask", "ablate", "--preset", "cls", "--preset", "layer-curve", "--ask", "reconstruct",
        "--label", "shape", "--label", "colour", "--pool", "shapes", "--texts", "1,2", "--output-dir", out)
    fit_key, eval_key = (loader.fingerprint(loader.as_source(spec)) for spec in (FIT, EVAL))
    assert passes[fit_key] == 2 and passes[eval_key] == 1  # the floor: two fit passes (second-order), one evaluation
    analysis = out / "analysis"
    record = json.loads((analysis / "metadata.json").read_text())
    assert record["kind"] == "analysis" and record["passes"] == {"fit": 2, "evaluation": 1}
    assert set(record["parts"]) == {"pieces", "second-order-L1"}

    passes.clear()
    same = [
        ("ablation.csv", ["ablate", "--preset", "cls", "--preset", "layer-curve"], ["--fit-path", FIT]),
        ("reconstruction.csv", ["reconstruct", "--label", "colour", "--texts", "1,2", "--pool", "shapes"],
         ["--fit-path", FIT]),
    ]
    for table, command, separately in same:
        run(*command, *FP64, "--data-path", analysis, "--output-dir", tmp_path / "read")
        assert not passes, f"{command[0]} streamed images although the analysis scored it"
        run(*command, *FP64, "--data-path", EVAL, *separately, "--output-dir", tmp_path / "own")
        assert (tmp_path / "read" / table).read_text() == (tmp_path / "own" / table).read_text(), command[0]
        passes.clear()
    second_order = ["second-order", "--mlp-layer", "1", "--omp-atoms", "0", "--grids", "0"]
    for tables, command, evaluation in ((["textspan.csv"], ["textspan", "--pool", "shapes", "--num-last-layers", "2"],
                                         {}),
                                        (["neurons_L1.csv", "ablation_L1.csv"], second_order,
                                         {analysis: ["--eval-data-path", analysis], FIT: ["--eval-data-path", EVAL]})):
        run(*command, *FP64, "--data-path", analysis, *evaluation.get(analysis, []), "--output-dir", tmp_path / "read")
        assert not passes, f"{command[0]} streamed images although the analysis holds its statistics and scores"
        run(*command, *FP64, "--data-path", FIT, *evaluation.get(FIT, []), "--output-dir", tmp_path / "own")
        for table in tables:
            assert (tmp_path / "read" / table).read_text() == (tmp_path / "own" / table).read_text(), table
        passes.clear()

    # What the analysis did not score or hold is refused in one line, never answered from something else.
    assert "ask `cliplens analyze`" in fails("reconstruct", *FP64, "--data-path", analysis, "--label", "position",
                                             "--texts", "1,2", "--pool", "shapes", "--output-dir", tmp_path / "x")
    assert "did not score" in fails("ablate", *FP64, "--data-path", analysis, "--preset", "mlps", "--components",
                                    "L0H0", "--output-dir", tmp_path / "x")
    assert "not images" in fails("retrieve", *FP64, "--data-path", analysis, "--component", "L1H2", "--query-text",
                                 "red", "--output-dir", tmp_path / "x")
    assert "--mlp-layer 2" in fails("second-order", *FP64, "--data-path", analysis, "--mlp-layer", "2",
                                    "--omp-atoms", "0", "--output-dir", tmp_path / "x")
    assert "top_k" in fails("second-order", *FP64, "--data-path", analysis, "--mlp-layer", "1", "--top-k", "7",
                            "--omp-atoms", "0", "--output-dir", tmp_path / "x")


def test_resnet_pairs_read_the_analysis(tmp_path):
    run("analyze", "--model", "toy:rn", "--fit-path", FIT, "--all", "--output-dir", tmp_path / "an")
    for fit in (tmp_path / "an" / "analysis", FIT):
        run("pairs", "--model", "toy:rn", "--data-path", EVAL, "--fit-path", fit, "--pool", "shapes",
            "--omp-atoms", "4", "--keep", "10", "--output-dir", tmp_path / str(fit == FIT))
    for table in ("pairs.csv", "ablation.csv", "pair_words.csv"):
        assert (tmp_path / "True" / table).read_text() == (tmp_path / "False" / table).read_text(), table


@pytest.mark.parametrize("args, message", [
    (["--ask", "pairs"], "ResNet CLIP models only"),
    (["--ask", "second-order"], "--mlp-layer"),
    (["--ask", "statistics", "--mlp-layer", "1"], "--mlp-layer"),
    (["--ask", "second-order", "--mlp-layer", "3"], "out of range"),
    (["--ask", "ablate"], "--preset"),
    ([], "--ask"),
])
def test_a_plan_the_model_cannot_answer_is_refused_before_any_pass(args, message, passes):
    text = fails("analyze", "--fit-path", FIT, *args, "--output-dir", "unused")
    assert message in text and not passes


def test_evaluations_need_labelled_data_before_any_pass(tmp_path, passes):
    assert "--data-path" in fails("analyze", "--fit-path", FIT, "--ask", "ablate", "--preset", "cls",
                                  "--output-dir", tmp_path / "x")
    assert not passes and not (tmp_path / "x").exists()


def test_the_dry_run_prints_the_plan_with_exact_sizes_and_writes_nothing(tmp_path):
    text = run("analyze", "--fit-path", FIT, "--ask", "statistics", "--ask", "second-order", "--mlp-layer", "2",
               "--dry-run", "--output-dir", tmp_path / "x")
    assert "passes over the fit data: 2, over the evaluation data: 0" in text
    tensors = cliplens.load("toy:vit").collect("shapes:test:4", spatial=True).artifact()[0]
    expected = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values()) / 2**20
    assert f"pieces: {expected:.1f} MiB" in text and "second-order-L2:" in text and "ms per image" in text
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("model, questions", [("toy:vit", ("statistics", "second-order", "head-images")),
                                              ("toy:rn", ("statistics", "pairs"))])
def test_the_dry_runs_sizes_are_those_of_the_parts_written(model, questions, tmp_path):
    """Byte for byte, though the sample ranks 4 images and the top-k lists of the whole data keep 48 (second-order's
    k = 100, the pairs' 50, the head images' --head-top 64)."""
    lens = cliplens.load(model)
    plan = plan_analysis(lens, questions, mlp_layers=(2,) if model == "toy:vit" else (), head_top=64)
    sizes = sample_plan(lens, FIT, plan, batch_size=2)["sizes"]
    folder = analyze(lens, FIT, None, plan, batch_size=16).save(tmp_path / "analysis")
    written = {}
    for file in folder.glob("*.safetensors"):
        with safe_open(file, "pt") as tensors:
            written[file.stem] = sum(tensors.get_tensor(name).numel() * tensors.get_tensor(name).element_size()
                                     for name in tensors.keys())
    assert sizes == written and len(sizes) == len(questions)


def test_every_preset_and_evaluation_with_all_on_a_vit():
    lens = cliplens.load("toy:vit")
    plan = plan_analysis(lens, (), every=True, scored=True, mlp_layers=(1,))
    assert plan.questions == ("statistics", "second-order", "head-images", "ablate", "reconstruct")
    assert len(plan.presets) == 3 and plan.passes() == {"fit": 2, "evaluation": 1}
    assert plan_analysis(lens, (), every=True).questions == ("statistics", "head-images")

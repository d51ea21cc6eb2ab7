"""Segmentation in the analysis (docs/methods/analysis.md#segmentation): one pass over the segmentation split serves
every lens, and `segment` reading the analysis writes the metrics.csv and overlays of its own pass, byte for byte."""

from __future__ import annotations

import json

import pytest

from cliplens.data import loader
from cliplens.data.segmentation import segmentation_source
from conftest import run_cli as run
from test_analysis import fails, passes  # noqa: F401 (passes is a fixture)

FIT, SEGMENT = "shapes:test:8:0", "shapes:segmentation:6:2"
BATCH = ["--batch-size", "4"]  # two batches: the counts of a pass are summed over them


def same_outputs(one, other) -> None:
    for name in ("metrics.csv", "overlays.png"):
        assert (one / name).read_bytes() == (other / name).read_bytes(), name


def test_one_pass_serves_every_lens_and_segment_reads_it_as_its_own_pass(tmp_path, passes):  # noqa: F811
    lenses = ["--lens", "heads", "--lens", "second-order", "--lens", "gradcam"]
    settings = ["--mlp-layer", "1", "--last-layers", "2", "--top-neurons", "8"]
    run("analyze", "--model", "toy:vit", "--fit-path", FIT, "--ask", "statistics", "--ask", "segment",
        "--segment-path", SEGMENT, *lenses, *settings, "--examples", "2", *BATCH, "--output-dir", tmp_path / "an")
    segment_key = loader.fingerprint(segmentation_source(SEGMENT))
    assert passes[segment_key] == 1 and sum(passes.values()) == 2  # one fit pass, one segmentation pass
    analysis = tmp_path / "an" / "analysis"
    record = json.loads((analysis / "metadata.json").read_text())
    assert record["passes"] == {"fit": 1, "evaluation": 0, "segmentation": 1} and "segmentation" in record["parts"]
    assert record["segmentation"]["images"] == 6

    passes.clear()
    for asked in (lenses, ["--lens", "gradcam", "--lens", "second-order"]):  # any analysed lenses, in any order
        run("segment", "--model", "toy:vit", "--data-path", analysis, *asked, *settings, "--examples", "2",
            "--output-dir", tmp_path / "read")
        assert not passes, "segment streamed images although the analysis holds its counts"
        run("segment", "--model", "toy:vit", "--data-path", SEGMENT, *asked, *settings, "--examples", "2", *BATCH,
            "--output-dir", tmp_path / "own")
        same_outputs(tmp_path / "read", tmp_path / "own")
        passes.clear()
    run("segment", "--model", "toy:vit", "--data-path", analysis, *lenses, *settings, "--examples", "0",
        "--output-dir", tmp_path / "none")
    assert not (tmp_path / "none" / "overlays.png").exists()

    # What the analysis did not compute is refused in one line, never recomputed otherwise.
    refused = {
        "not attention": ["--lens", "attention", *settings],
        "threshold=": [*lenses, *settings, "--threshold", "0.5"],
        "mlp_layers=": [*lenses, "--mlp-layer", "2", "--last-layers", "2", "--top-neurons", "8"],
        "add --lens second-order": ["--lens", "heads", *settings],
        "--examples 2 or fewer": [*lenses, *settings, "--examples", "3"],
        "not every image's masks": [*lenses, *settings, "--save-masks"],
    }
    for message, arguments in refused.items():
        text = fails("segment", "--model", "toy:vit", "--data-path", analysis, *arguments, "--output-dir",
                     tmp_path / "x")
        assert message in text and "\n" not in text.strip(), text
    assert "fingerprint" in fails("segment", "--model", "toy:rn", "--data-path", analysis, "--lens", "centre",
                                  "--output-dir", tmp_path / "x")
    assert not passes


def test_segment_alone_makes_no_fit_pass(tmp_path, passes):  # noqa: F811
    run("analyze", "--model", "toy:rn", "--fit-path", FIT, "--ask", "segment", "--segment-path", SEGMENT, "--lens",
        "centre", "--examples", "0", *BATCH, "--output-dir", tmp_path / "an")
    record = json.loads((tmp_path / "an" / "analysis" / "metadata.json").read_text())
    assert list(passes.values()) == [1] and record["passes"] == {"fit": 0, "evaluation": 0, "segmentation": 1}
    assert set(record["parts"]) == {"segmentation"} and record["fit"]["images"] == 0


def test_resnet_pairs_and_maskclip_from_the_analysis_of_all(tmp_path):
    lenses = ["--lens", "pairs", "--lens", "maskclip"]
    run("analyze", "--model", "toy:rn", "--fit-path", FIT, "--all", "--segment-path", SEGMENT, *lenses,
        "--top-pairs", "16", "--examples", "3", *BATCH, "--output-dir", tmp_path / "an")
    analysis = tmp_path / "an" / "analysis"
    assert set(json.loads((analysis / "metadata.json").read_text())["parts"]) == {"pieces", "pairs", "segmentation"}
    for data, folder in ((analysis, "read"), (SEGMENT, "own")):
        run("segment", "--model", "toy:rn", "--data-path", data, *lenses, "--top-pairs", "16", "--examples", "3",
            *BATCH, "--output-dir", tmp_path / folder)
    same_outputs(tmp_path / "read", tmp_path / "own")


def test_all_segments_with_every_lens_the_model_has_when_given_images_with_masks():
    import cliplens
    from cliplens.workflows.analysis import plan_analysis

    lens = cliplens.load("toy:vit")
    plan = plan_analysis(lens, (), every=True, segmented=True)
    assert plan.questions == ("statistics", "head-images", "segment") and plan.passes()["segmentation"] == 1
    assert plan.segment.lenses == ("heads", "second-order", "attention", "rollout", "gradcam", "centre")
    assert plan_analysis(lens, (), every=True).segment is None


@pytest.mark.parametrize("args, message", [
    (["--ask", "segment", "--lens", "heads"], "--segment-path"),
    (["--ask", "segment", "--segment-path", SEGMENT], "--lens"),
    (["--ask", "statistics", "--segment-path", SEGMENT], "--ask segment"),
    (["--ask", "statistics", "--threshold", "0.5"], "--ask segment"),
    (["--ask", "segment", "--segment-path", SEGMENT, "--lens", "pairs"], "needs a resnet model"),
    (["--ask", "segment", "--segment-path", SEGMENT, "--lens", "heads", "--heads", "L9H0"], "L9H0"),
    (["--ask", "segment", "--segment-path", SEGMENT, "--lens", "heads", "--mlp-layer", "1"], "--mlp-layer"),
    (["--ask", "segment", "--segment-path", SEGMENT, "--lens", "second-order", "--mlp-layer", "3"], "out of range"),
    (["--ask", "segment", "--segment-path", "shapes:test:8", "--lens", "centre"], "images with masks"),
])
def test_a_segmentation_the_model_cannot_give_is_refused_before_any_pass(args, message, passes):  # noqa: F811
    text = fails("analyze", "--fit-path", FIT, *args, "--output-dir", "unused")
    assert message in text and not passes

"""`analyze --checkpoint-dir / --resume` (docs/methods/analysis.md#long-runs): an analysis killed in any of its passes
resumes bit-identical, without reading again the data of the passes it finished.

The checkpoint holds every reader's exact state (float64 accumulators, counts, top-k lists, example images) and the
pass under way resumes at a batch boundary, so every later batch is computed exactly as before: the parts are compared
byte for byte, and the record with its date and timings left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cliplens
from cliplens import CliplensError
from cliplens.cli import cli
from cliplens.data import loader
from cliplens.data.segmentation import segmentation_source
from cliplens.stats.checkpoint import Passes
from cliplens.workflows.analysis import analyze, plan_analysis

FIT, EVAL, SEGMENT = "shapes:test:20:0", "shapes:test:12:1", "shapes:segmentation:6:2"
BATCH = 4


class Interrupted(Exception):
    """Stands in for a crash in the middle of a batch."""


def kill(monkeypatch, stage: str, after: int) -> None:
    """Make the pass `stage` crash in its batch number `after + 1`, after `after` batches were read and checkpointed."""
    run = Passes.run

    def crashing(self, lens, data, name, readers, read, **options):
        seen = []

        def reading(batch):
            if name == stage and len(seen) == after:
                raise Interrupted
            seen.append(batch)
            read(batch)

        return run(self, lens, data, name, readers, reading, **options)

    monkeypatch.setattr(Passes, "run", crashing)


def streamed(monkeypatch) -> dict[str, int]:
    """How often each data source is streamed from now on, by fingerprint."""
    counts: dict[str, int] = {}
    batches = loader.batches

    def counted(source, *args, **kwargs):
        counts[loader.fingerprint(source)] = counts.get(loader.fingerprint(source), 0) + 1
        return batches(source, *args, **kwargs)

    monkeypatch.setattr(loader, "batches", counted)
    return counts


def saved(folder: Path) -> dict[str, object]:
    """Every file of an analysis folder; the record without its date and timings."""
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    record = json.loads(files.pop("metadata.json"))
    record.pop("created"), record.pop("seconds")
    return {**files, "metadata.json": record}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per model: the plan of `--all` with every split, and its uninterrupted analysis."""
    made = {}
    for model in ("toy:vit", "toy:rn"):
        lens = cliplens.load(model)
        plan = plan_analysis(lens, (), every=True, scored=True, segmented=True,
                             mlp_layers=(1,) if model == "toy:vit" else (), examples=2, omp_atoms=4)
        folder = analyze(lens, FIT, EVAL, plan, segment_path=SEGMENT, batch_size=BATCH).save(
            tmp_path_factory.mktemp("whole") / "analysis")
        made[model] = lens, plan, saved(folder)
    return made


@pytest.mark.parametrize("model, stage, after, reread", [
    ("toy:vit", "fit-1", 2, {FIT: 2, EVAL: 1, SEGMENT: 1}),
    ("toy:vit", "fit-2", 3, {FIT: 1, EVAL: 1, SEGMENT: 1}),
    ("toy:vit", "evaluation", 1, {EVAL: 1, SEGMENT: 1}),
    ("toy:vit", "segmentation", 1, {SEGMENT: 1}),
    ("toy:rn", "evaluation", 2, {EVAL: 1, SEGMENT: 1}),
])
def test_an_analysis_killed_in_any_pass_resumes_bit_identical(runs, model, stage, after, reread, tmp_path,
                                                              monkeypatch):
    lens, plan, whole = runs[model]
    options = dict(segment_path=SEGMENT, batch_size=BATCH, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=1)
    with monkeypatch.context() as patched:
        kill(patched, stage, after)
        with pytest.raises(Interrupted):
            analyze(lens, FIT, EVAL, plan, **options)
    counts = streamed(monkeypatch)
    resumed = analyze(lens, FIT, EVAL, plan, resume=True, **options).save(tmp_path / "analysis")
    assert saved(resumed) == whole
    # the finished passes are restored, not read again; the one under way is read from its batch on
    assert counts == {key(spec): count for spec, count in reread.items()}


def key(spec: str) -> str:
    return loader.fingerprint(segmentation_source(spec) if spec == SEGMENT else loader.as_source(spec))


def test_a_checkpoint_of_another_plan_or_data_is_refused_in_one_line(runs, tmp_path, monkeypatch):
    lens, plan, _ = runs["toy:vit"]
    options = dict(segment_path=SEGMENT, batch_size=BATCH, checkpoint_dir=tmp_path / "checkpoints", checkpoint_every=1)
    with monkeypatch.context() as patched:
        kill(patched, "fit-2", 1)
        with pytest.raises(Interrupted):
            analyze(lens, FIT, EVAL, plan, **options)
    other = plan_analysis(lens, (), every=True, scored=True, segmented=True, mlp_layers=(1,), examples=2, omp_atoms=4,
                          head_top=3)
    remedy = "resume with the model, data and options of the interrupted run"
    for fit, data, asked in ((FIT, EVAL, other), (FIT, "shapes:test:12:5", plan), ("shapes:test:20:5", EVAL, plan)):
        with pytest.raises(CliplensError, match=remedy) as err:
            analyze(lens, fit, data, asked, resume=True, **options)
        assert "\n" not in str(err.value)


def test_the_command_checkpoints_into_its_output_folder_and_a_finished_run_resumes_without_reading(tmp_path,
                                                                                                monkeypatch):
    command = ["analyze", "--fit-path", FIT, "--data-path", EVAL, "--ask", "ablate", "--preset", "cls",
               "--batch-size", BATCH, "--checkpoint-every", "1", "--output-dir", tmp_path]
    first = CliRunner().invoke(cli, [str(arg) for arg in command])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "checkpoints" / "analyze" / "metadata.json").exists()
    whole = saved(tmp_path / "analysis")
    batches, read = loader.batches, []
    monkeypatch.setattr(loader, "batches", lambda *args, **kwargs: (read.append(batch) or batch
                                                                   for batch in batches(*args, **kwargs)))
    again = CliRunner().invoke(cli, [str(arg) for arg in command + ["--resume"]])
    assert again.exit_code == 0, again.output
    assert saved(tmp_path / "analysis") == whole and not read

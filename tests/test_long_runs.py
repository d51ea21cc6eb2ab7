"""Long runs: checkpoints and resume, shards and merge, torchrun.

- A resumed pass is bit-identical (torch.equal) to an uninterrupted one: the checkpoint holds the exact float64
  state and the pass resumes at a batch boundary, so every later batch is computed exactly as before.
- Shards merged equal one pass to float64 round-off. The tiny models run in float64 and the only differences are
  summation order and batch composition (a shard boundary changes which images share a batch), so errors are
  ~1e-15 relative on O(1) values; 1e-10 is a safe bound that still catches a wrong merge formula (which is off by
  O(1)). Merged in shard order the result is the same bit for bit every time, and bit-identical to torchrun, which
  folds the same per-rank states in the same order (given the same arithmetic per part: torchrun runs each rank on
  one thread, so the shards here are computed on one thread too).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cliplens
from cliplens import CliplensError
from cliplens.cli import cli
from cliplens.stats import accumulate
from cliplens.stats import second_order as second_order_module
from cliplens.stats.merge import merge_artifacts
from cliplens.stats.second_order import collect_second_order, load_second_order
from test_cli_foundation import shapes_lens
from conftest import tiny_resnet, tiny_vit

ROOT = Path(__file__).resolve().parents[1]
DATA = "shapes:test:18"
TOLERANCE = 1e-10


@pytest.fixture(scope="module")
def lenses():
    return {"vit": shapes_lens(tiny_vit(), 32, "tiny-vit"), "rn": shapes_lens(tiny_resnet(), 64, "tiny-rn")}


class Interrupted(Exception):
    """Stands in for a crash in the middle of a batch."""


def interrupt(monkeypatch, owner, name: str, after: int | None) -> list[int]:
    """Make `owner.name` raise on its call number `after + 1` (never, for None); returns the calls it saw."""
    original, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if after is not None and len(calls) > after:
            raise Interrupted
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def assert_identical(a, b) -> None:
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def assert_same_extremes(merged, whole, tolerance: float) -> None:
    """Merged pair extremes: the same values (to `tolerance`) at the same image positions, wherever the values are
    told apart (images with (nearly) equal coefficients may come in either order)."""
    for side in ("high", "low"):
        values, index = getattr(merged, f"{side}_values"), getattr(merged, f"{side}_index")
        assert torch.allclose(values, getattr(whole, f"{side}_values"), rtol=0, atol=tolerance)
        apart = (values.diff(dim=-1).abs() > 100 * tolerance).all(-1)
        assert apart.float().mean() > 0.5 and torch.equal(index[apart], getattr(whole, f"{side}_index")[apart])


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


# resume -------------------------------------------------------------------------------------------------------------
REDUCERS = [("vit", "head", True, accumulate.HeadReducer), ("vit", "layer", False, accumulate.DenseReducer),
            ("rn", "head", True, accumulate.DenseReducer), ("rn", "pair", False, accumulate.PairReducer)]


@pytest.mark.parametrize("which, granularity, spatial, reducer", REDUCERS,
                         ids=[f"{w}-{g}{'-spatial' if s else ''}" for w, g, s, _ in REDUCERS])
def test_resumed_collect_is_bit_identical(lenses, monkeypatch, tmp_path, which, granularity, spatial, reducer):
    lens, options = lenses[which], dict(granularity=granularity, spatial=spatial, batch_size=4, top_k=3)
    whole = lens.collect(DATA, **options)
    interrupt(monkeypatch, reducer, "update", after=3)  # checkpoints after batches 2 (position 8); dies in batch 4
    with pytest.raises(Interrupted):
        lens.collect(DATA, checkpoint_dir=tmp_path, checkpoint_every=2, **options)
    monkeypatch.undo()
    calls = interrupt(monkeypatch, reducer, "update", after=None)
    resumed = lens.collect(DATA, checkpoint_dir=tmp_path, checkpoint_every=2, resume=True, **options)
    assert len(calls) == 3  # batches 3, 4 and 5 of 5: continued, not restarted
    assert_identical(whole, resumed)
    assert resumed.metadata == whole.metadata and resumed.report.summary() == whole.report.summary()


@pytest.mark.parametrize("stage, after", [("update", 3), ("rank", 2)])
def test_second_order_resumes_in_either_pass(lenses, monkeypatch, tmp_path, stage, after):
    options = dict(layer=1, top_k=4, batch_size=4)
    whole = collect_second_order(lenses["vit"], DATA, **options)
    interrupt(monkeypatch, second_order_module.SecondOrderStats, stage, after=after)
    with pytest.raises(Interrupted):
        collect_second_order(lenses["vit"], DATA, checkpoint_dir=tmp_path, checkpoint_every=1, **options)
    monkeypatch.undo()
    checkpoint = json.loads(next(tmp_path.glob("*/metadata.json")).read_text())
    assert checkpoint["stage"] == {"update": "moments", "rank": "ranking"}[stage]
    assert checkpoint["position"] == 4 * after
    resumed = collect_second_order(lenses["vit"], DATA, checkpoint_dir=tmp_path, checkpoint_every=1, resume=True,
                                   **options)
    assert_identical(whole, resumed)
    assert torch.equal(whole.principal_directions, resumed.principal_directions)


def interrupted_checkpoint(lens, monkeypatch, folder: Path) -> None:
    """Leave in `folder` the checkpoint of a head collection of DATA in batches of 4 that died in its third batch."""
    interrupt(monkeypatch, accumulate.HeadReducer, "update", after=2)
    with pytest.raises(Interrupted):
        lens.collect(DATA, batch_size=4, checkpoint_dir=folder, checkpoint_every=1)
    monkeypatch.undo()


def test_resume_refuses_a_checkpoint_of_another_run(lenses, monkeypatch, tmp_path):
    lens = lenses["vit"]
    interrupted_checkpoint(lens, monkeypatch, tmp_path)
    with pytest.raises(CliplensError, match=r"batch_size=4, but this needs batch_size=3; resume with"):
        lens.collect(DATA, batch_size=3, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CliplensError, match="convention='separate', but this needs convention='reference'"):
        lens.collect(DATA, batch_size=4, convention="reference", checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CliplensError, match="data_fingerprint="):
        lens.collect("shapes:test:19", batch_size=4, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(CliplensError, match="made with tiny-vit .* but this is other-vit"):
        shapes_lens(tiny_vit(seed=1), 32, "other-vit").collect(DATA, batch_size=4, checkpoint_dir=tmp_path,
                                                                resume=True)
    with pytest.raises(CliplensError, match="resuming needs the checkpoint folder"):
        lens.collect(DATA, batch_size=4, resume=True)
    (tmp_path / "collect-whole" / "tensors.safetensors").write_bytes(b"damaged")
    with pytest.raises(CliplensError, match=r"SHA-256 differs.*delete .* to start over"):
        lens.collect(DATA, batch_size=4, checkpoint_dir=tmp_path, resume=True)


def test_resume_finds_a_checkpoint_a_crash_left_aside(lenses, monkeypatch, tmp_path):
    """A kill between the two renames of a checkpoint write leaves the previous checkpoint under its aside name (see
    io.atomic); resuming takes it back instead of starting over."""
    lens = lenses["vit"]
    interrupted_checkpoint(lens, monkeypatch, tmp_path)
    (tmp_path / "collect-whole").rename(tmp_path / ".collect-whole.cliplens-old-0123abcd")
    calls = interrupt(monkeypatch, accumulate.HeadReducer, "update", after=None)
    resumed = lens.collect(DATA, batch_size=4, checkpoint_dir=tmp_path, resume=True)
    assert len(calls) == 3  # batches 3 to 5: it continued from the checkpoint after batch 2
    assert_identical(lens.collect(DATA, batch_size=4), resumed)


def test_resume_without_a_checkpoint_starts_from_the_beginning(lenses, tmp_path):
    whole = lenses["vit"].collect(DATA, batch_size=4)
    assert_identical(whole, lenses["vit"].collect(DATA, batch_size=4, checkpoint_dir=tmp_path, resume=True))


KILLER = """
import os, runpy, signal, sys
from cliplens.stats.accumulate import HeadReducer
update, calls = HeadReducer.update, []
def killing(self, *args):
    calls.append(1)
    if len(calls) == 3:  # the third batch is read and about to be reduced; the second one is checkpointed
        os.kill(os.getpid(), signal.SIGKILL)
    return update(self, *args)
HeadReducer.update = killing
sys.argv[0] = "cliplens"
runpy.run_module("cliplens", run_name="__main__", alter_sys=True)
"""


def test_sigkilled_collect_resumes_to_the_uninterrupted_result(tmp_path):
    """`python -m cliplens collect` killed by SIGKILL mid-pass (its third batch read, not reduced), then run with
    --resume, writes the artifact of an uninterrupted run, bit for bit. (A crash inside a checkpoint write leaves the previous
    checkpoint: `test_resume_finds_a_checkpoint_a_crash_left_aside` here, and io.atomic's own tests.)"""
    args = ["collect", "--model", "toy:vit", "--data-path", "shapes:test:20", "--batch-size", "4",
            "--output-dir", str(tmp_path / "out"), "--checkpoint-every", "1"]
    killed = subprocess.run([sys.executable, "-c", KILLER, *args], env=env(), capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = tmp_path / "out" / "checkpoints"
    assert not (tmp_path / "out" / "stats").exists()
    assert json.loads((checkpoints / "collect-whole" / "metadata.json").read_text())["position"] == 8
    resumed = subprocess.run([sys.executable, "-m", "cliplens", *args, "--resume"], env=env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "20 of 20 images used" in resumed.stdout
    lens = cliplens.load("toy:vit")
    whole = lens.collect("shapes:test:20", batch_size=4)
    assert_identical(whole, cliplens.load_stats(tmp_path / "out" / "stats", lens))


SECOND_ORDER = ["second-order", "--model", "toy:vit", "--data-path", DATA, "--mlp-layer", "2", "--top-k", "3",
                "--batch-size", "4", "--pool", "shapes", "--omp-atoms", "4", "--grids", "0"]


def test_second_order_command_resumes_to_the_same_artifact_and_words(monkeypatch, tmp_path):
    """`cliplens second-order` killed in its second pass continues from its checkpoint with --resume (the batches
    before it are not read again) and writes the statistics and words of an uninterrupted run, bit for bit."""
    runner = CliRunner()
    whole = runner.invoke(cli, [*SECOND_ORDER, "--output-dir", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    interrupt(monkeypatch, second_order_module.SecondOrderStats, "rank", after=2)
    died = runner.invoke(cli, [*SECOND_ORDER, "--output-dir", str(tmp_path / "out"), "--checkpoint-every", "1"])
    assert isinstance(died.exception, Interrupted)
    monkeypatch.undo()
    assert json.loads(next((tmp_path / "out" / "checkpoints").glob("*/metadata.json")).read_text())["position"] == 8
    calls = interrupt(monkeypatch, second_order_module.SecondOrderStats, "rank", after=None)
    resumed = runner.invoke(cli, [*SECOND_ORDER, "--output-dir", str(tmp_path / "out"), "--checkpoint-every", "1",
                                  "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert len(calls) == 3  # batches 3, 4 and 5 of 5 of the second pass
    lens = cliplens.load("toy:vit")
    saved = [load_second_order(tmp_path / run / "second_order_L2", lens) for run in ("whole", "out")]
    assert_identical(*saved)
    for table in ("neurons_L2.csv", "neuron_words_L2.csv"):
        assert (tmp_path / "whole" / table).read_bytes() == (tmp_path / "out" / table).read_bytes(), table


def test_second_order_command_refuses_a_shard_before_any_work(monkeypatch, tmp_path):
    """Its second pass needs the mean of all the data, and its words, grids and ablations the statistics of all of it:
    one shard of it has neither, so --shard is refused in one line that names torchrun, before the model loads."""
    from cliplens import factory

    monkeypatch.setattr(factory, "load", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    refused = CliRunner().invoke(cli, [*SECOND_ORDER, "--output-dir", str(tmp_path), "--shard", "0/2"])
    assert isinstance(refused.exception, CliplensError) and "torchrun --nproc-per-node K" in str(refused.exception)
    assert "\n" not in str(refused.exception)


# shards and merge -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which, granularity, spatial", [("vit", "head", True), ("rn", "pair", False)])
def test_shards_merge_to_one_pass_in_any_given_order(lenses, monkeypatch, tmp_path, which, granularity, spatial):
    lens, options = lenses[which], dict(granularity=granularity, spatial=spatial, batch_size=4, top_k=3)
    whole = lens.collect(DATA, **options)
    shards = [lens.collect(DATA, shard=f"{i}/3", **options) for i in range(3)]
    assert [s.metadata["shard"] for s in shards] == ["0/3", "1/3", "2/3"] and sum(s.count for s in shards) == 18
    merged = shards[0].merge(shards[1]).merge(shards[2])
    a, b = merged.state(), whole.state()
    for name in a:
        if a[name].is_floating_point():
            assert torch.allclose(a[name], b[name], rtol=0, atol=TOLERANCE), name
    assert torch.equal(a["count"], b["count"])
    if granularity == "pair":
        assert_same_extremes(merged, whole, TOLERANCE)
    assert merged.metadata["data_fingerprint"] == whole.metadata["data_fingerprint"]
    assert merged.metadata["data_ranges"] == whole.metadata["data_ranges"] and "shard" not in merged.metadata
    paths = [s.save(tmp_path / f"shard{i}") for i, s in enumerate(shards)]
    for order in ([2, 0, 1], [1, 2, 0]):  # the command puts shards in shard order whatever order they come in
        out = tmp_path / f"merged{order[0]}"
        result = CliRunner().invoke(cli, ["merge", *[str(paths[i]) for i in order], "--output-dir", str(out)])
        assert result.exit_code == 0, result.output
        assert f"covering all 18 images of {whole.metadata['data_fingerprint']}" in result.output
        assert_identical(merged, cliplens.load_stats(out / "stats"))


def test_merge_refuses_overlapping_shards_and_other_settings(lenses, tmp_path):
    lens = lenses["vit"]
    half = lens.collect(DATA, shard="0/2", batch_size=4).save(tmp_path / "half0")
    third = lens.collect(DATA, shard="1/3", batch_size=4).save(tmp_path / "third1")  # positions 6-11 overlap 0-8
    copy = tmp_path / "copy"
    copy.mkdir()
    for entry in half.iterdir():
        (copy / entry.name).write_bytes(entry.read_bytes())
    with pytest.raises(CliplensError, match="cover the data with fingerprint"):
        merge_artifacts([half, copy])  # two copies of one shard
    with pytest.raises(CliplensError, match="cover positions 6 to 8 of the data"):
        merge_artifacts([half, third])
    other = lens.collect(DATA, shard="1/2", batch_size=4, convention="reference").save(tmp_path / "ref1")
    with pytest.raises(CliplensError, match="convention="):
        merge_artifacts([half, other])
    result = CliRunner().invoke(cli, ["merge", str(half), "--output-dir", str(tmp_path / "out")])
    assert isinstance(result.exception, CliplensError) and "at least two" in str(result.exception)


def test_second_order_shards_merge_through_a_shared_centre(lenses, tmp_path):
    """Shards rank from the merged first-pass mean (the documented two-phase recipe) and then merge exactly."""
    lens, options = lenses["vit"], dict(layer=1, top_k=4, batch_size=4)
    whole = collect_second_order(lens, DATA, **options)
    first = [collect_second_order(lens, DATA, shard=f"{i}/2", ranking=False, **options).save(tmp_path / f"m{i}")
             for i in range(2)]
    moments = merge_artifacts(first, model=lambda: lens)
    assert moments.centre is None and torch.allclose(moments.mean_coordinates, whole.mean_coordinates, atol=TOLERANCE)
    ranked = [collect_second_order(lens, DATA, shard=f"{i}/2", centre=moments.mean_coordinates, **options)
              for i in range(2)]
    merged = ranked[0].merge(ranked[1])
    assert torch.equal(merged.top_images, whole.top_images)
    assert torch.allclose(merged.top_norms, whole.top_norms, atol=TOLERANCE)
    own = [collect_second_order(lens, DATA, shard=f"{i}/2", **options) for i in range(2)]
    with pytest.raises(CliplensError, match="ranked from different centres"):
        own[0].merge(own[1])
    with pytest.raises(CliplensError, match="merging them needs that model"):
        merge_artifacts(first, model=lambda: lenses["rn"])


# torchrun -------------------------------------------------------------------------------------------------------------
def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(command, env=env(), cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def one_thread():
    """torchrun runs each rank on one thread: compute the reference shards the same way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torchrun_collect_equals_merged_shards_bit_for_bit(tmp_path, one_thread):
    run = torchrun("-m", "cliplens", "collect", "--model", "toy:rn", "--granularity", "pair", "--top-k", "3",
                   "--data-path", "shapes:test:14", "--batch-size", "4", "--output-dir", "out",
                   "--checkpoint-every", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 1 and "14 of 14 images used" in run.stdout  # rank 0 alone reports
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoints", "stats"]
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["collect-0-of-2", "collect-1-of-2"]
    lens = cliplens.load("toy:rn")
    saved = cliplens.load_stats(tmp_path / "out" / "stats", lens)
    shards = [lens.collect("shapes:test:14", granularity="pair", top_k=3, batch_size=4, shard=f"{i}/2")
              for i in range(2)]
    merged = shards[0].merge(shards[1])
    assert_identical(merged, saved)
    assert saved.metadata["data_parts"] == merged.metadata["data_parts"]
    whole = lens.collect("shapes:test:14", granularity="pair", top_k=3, batch_size=4)
    assert saved.count == whole.count == 14  # the image positions of extremes are compared in the shard test (fp64)
    for name in ("coef_mean", "high_values", "low_values"):  # fp32 coefficients agree to ~1e-7 across batchings
        assert torch.allclose(getattr(saved, name), getattr(whole, name), rtol=0, atol=1e-5), name
    assert saved.metadata["data_fingerprint"] == whole.metadata["data_fingerprint"]


def test_torchrun_second_order_command_writes_once_what_one_process_writes(tmp_path, one_thread):
    """`torchrun -m cliplens second-order`: the ranks share both passes (one checkpoint each) and rank 0 alone writes
    the statistics and words; the top images are those of one process, the norms equal to round-off."""
    args = ["--precision", "fp64", "--data-path", "shapes:test:12", "--checkpoint-every", "1", "--output-dir", "out"]
    run = torchrun("-m", "cliplens", *SECOND_ORDER, *args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote out/second_order_L2") == 1 and "12 of 12 images used" in run.stdout
    assert (tmp_path / "out" / "neuron_words_L2.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == [
        "second-order-L2-0-of-2", "second-order-L2-1-of-2"]
    lens = cliplens.load("toy:vit", precision="fp64")
    whole = collect_second_order(lens, "shapes:test:12", layer=2, top_k=3, batch_size=4)
    saved = load_second_order(tmp_path / "out" / "second_order_L2", lens)
    assert torch.equal(saved.top_images, whole.top_images)
    assert torch.allclose(saved.top_norms, whole.top_norms, rtol=0, atol=TOLERANCE)


TORCHRUN_SCRIPT = """
import sys
import torch.distributed as dist
import cliplens
from cliplens import CliplensError
from cliplens.stats.second_order import collect_second_order

dist.init_process_group("gloo")
rank, out = dist.get_rank(), sys.argv[1]
lens = cliplens.load("toy:vit", precision="fp64")
try:  # one rank's error reaches every rank as one line, and the group goes on working
    lens.collect(sys.argv[2], batch_size=2, distributed=True)
except CliplensError as error:
    print(f"rank {rank}: {error}")
stats = collect_second_order(lens, "shapes:test:12", layer=2, top_k=3, batch_size=4, distributed=True)
pieces = lens.collect("shapes:test:12", spatial=True, batch_size=4, distributed=True)
if rank == 0:
    stats.save(f"{out}/second_order")
    pieces.save(f"{out}/pieces")
else:
    assert stats is None and pieces is None
dist.destroy_process_group()
"""


def test_torchrun_second_order_and_spatial_heads_equal_the_shard_recipe(tmp_path, one_thread):
    """Second order under torchrun all-reduces the first pass, so it equals the two-phase shard recipe bit for bit;
    a rank whose slice has no readable image stops both ranks with one line each."""
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 40), (90 * i, 20, 200)).save(images / f"a{i}.png")
        (images / f"b{i}.png").write_bytes(b"not an image")
    (tmp_path / "script.py").write_text(TORCHRUN_SCRIPT)
    run = torchrun("script.py", "out", str(images), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 0: rank 1 of 2 stopped with an error" in run.stdout
    assert "rank 1: no readable images" in run.stdout
    lens = cliplens.load("toy:vit", precision="fp64")
    options = dict(layer=2, top_k=3, batch_size=4)
    first = [collect_second_order(lens, "shapes:test:12", shard=f"{i}/2", ranking=False, **options) for i in range(2)]
    centre = first[0].merge(first[1]).mean_coordinates
    ranked = [collect_second_order(lens, "shapes:test:12", shard=f"{i}/2", centre=centre, **options) for i in range(2)]
    saved = load_second_order(tmp_path / "out" / "second_order", lens)
    assert_identical(ranked[0].merge(ranked[1]), saved)
    whole = collect_second_order(lens, "shapes:test:12", **options)
    assert torch.equal(saved.top_images, whole.top_images)
    assert torch.allclose(saved.top_norms, whole.top_norms, atol=TOLERANCE)
    shards = [lens.collect("shapes:test:12", spatial=True, batch_size=4, shard=f"{i}/2") for i in range(2)]
    assert_identical(shards[0].merge(shards[1]), cliplens.load_stats(tmp_path / "out" / "pieces", lens))

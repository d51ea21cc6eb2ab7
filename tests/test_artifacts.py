"""Artifacts never destroy what cliplens did not write, survive a crash mid-save, and refuse to load when they lie.

Crashes are real ones: a subprocess is killed (os._exit, so no cleanup runs) at chosen points of the swap.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import cliplens
from cliplens import CliplensError
from cliplens.cli import decompose
from cliplens.io.artifacts import TENSORS, load_artifact, read_metadata, save_artifact
from cliplens.io.atomic import METADATA, replacing
from test_cli_foundation import DATA, lenses, run  # noqa: F401 (lenses is a fixture)
from test_stats import as_dataset
from conftest import random_images

CRASH = """
import os, sys, torch
from pathlib import Path
from cliplens.io.artifacts import save_artifact
target, point = Path(sys.argv[1]), sys.argv[2]
rename = Path.rename
def crashing_rename(self, destination):
    moved = rename(self, destination)
    if (point == "aside" and ".cliplens-old-" in Path(destination).name) or (point == "swapped" and
                                                                            Path(destination) == target):
        os._exit(9)
    return moved
Path.rename = crashing_rename
save_artifact(target, {"x": torch.full((2,), 2.0)}, {"kind": "test"})
"""


def save(path, value: float = 1.0) -> Path:
    return save_artifact(path, {"x": torch.full((2,), value)}, {"kind": "test"})


def value(path) -> float:
    return float(load_artifact(path)[0]["x"][0])


def rewrite_metadata(path: Path, **changes) -> None:
    record = json.loads((path / METADATA).read_text())
    record.update(changes)
    (path / METADATA).write_text(json.dumps(record))


def rewrite_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Replace the tensors *and* their recorded digest, so only the shape checks stand between them and a reader."""
    save_file(tensors, path / TENSORS)
    record = json.loads((path / METADATA).read_text())
    record["files"][TENSORS] = hashlib.sha256((path / TENSORS).read_bytes()).hexdigest()
    (path / METADATA).write_text(json.dumps(record))


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def stats(vit_lens):
    return vit_lens.collect(as_dataset(random_images(6, 32, seed=1)))


# never destroy what is not ours ---------------------------------------------------------------------------------------
def test_saving_onto_a_users_folder_file_or_link_is_refused_and_deletes_nothing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("mine")
    with pytest.raises(CliplensError, match="refusing to replace") as error:
        save(results)
    assert "notes.txt" in one_line(error) and (results / "notes.txt").read_text() == "mine"
    ours = save(tmp_path / "ours")
    (ours / "extra.txt").write_text("added by hand")
    with pytest.raises(CliplensError, match="extra.txt"):
        save(ours)
    assert (ours / "extra.txt").exists() and value(ours) == 1.0
    (tmp_path / "file").write_text("a file")
    with pytest.raises(CliplensError, match="is a file"):
        save(tmp_path / "file")
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CliplensError, match="symbolic link"):
        save(tmp_path / "link")
    assert (tmp_path / "file").read_text() == "a file"
    assert sorted(os.listdir(tmp_path)) == ["file", "link", "ours", "results"]  # no staging litter


def test_stats_save_to_the_current_or_parent_folder_is_refused(stats, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "work")
    for target in (".", "..", "", "sub/.."):
        with pytest.raises(CliplensError, match="name a new folder") as error:
            stats.save(target)
        one_line(error)
    assert os.listdir(".") == ["keep.txt"]


def test_our_own_artifact_and_an_empty_folder_are_replaced_without_litter(stats, vit_lens, tmp_path):
    path = stats.save(tmp_path / "stats")
    again = stats.merge(vit_lens.collect(as_dataset(random_images(3, 32, seed=2))))
    again.save(path)
    assert cliplens.load_stats(path, vit_lens).count == 9
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty", 5.0)
    assert value(tmp_path / "empty") == 5.0
    assert sorted(os.listdir(tmp_path)) == ["empty", "stats"]


@pytest.mark.parametrize("point", ["aside", "swapped"])
def test_a_crash_mid_swap_keeps_one_artifact_whole_and_the_next_save_cleans_up(tmp_path, point):
    target = save(tmp_path / "artifact", 1.0)
    env = {**os.environ, "PYTHONPATH": str(Path(cliplens.__file__).parents[1])}
    crashed = subprocess.run([sys.executable, "-c", CRASH, str(target), point], env=env, capture_output=True)
    assert crashed.returncode == 9, crashed.stderr.decode()
    leftovers = [p for p in tmp_path.iterdir() if p.name != "artifact"]
    assert leftovers  # the crash left staging behind, as a real one would
    if point == "aside":  # between the renames: the target is gone, the old artifact whole under its aside name
        with pytest.raises(CliplensError, match="interrupted save"):
            read_metadata(target)
        aside = next(p for p in leftovers if ".cliplens-old-" in p.name)
        assert value(aside) == 1.0
    else:  # the new one is in place, the old one not yet deleted
        assert value(target) == 2.0
    save(target, 3.0)
    assert value(target) == 3.0 and os.listdir(tmp_path) == ["artifact"]


def test_the_next_save_after_a_crash_restores_the_old_artifact_before_writing(tmp_path, monkeypatch):
    target = save(tmp_path / "artifact", 1.0)
    env = {**os.environ, "PYTHONPATH": str(Path(cliplens.__file__).parents[1])}
    subprocess.run([sys.executable, "-c", CRASH, str(target), "aside"], env=env, check=False)

    def failing(file):
        raise OSError("disk full")

    with pytest.raises(CliplensError, match="disk full"):  # this save fails too, after restoring the old artifact
        from cliplens.io.atomic import write_folder
        write_folder(target, {TENSORS: failing}, {"kind": "test"})
    assert value(target) == 1.0 and os.listdir(tmp_path) == ["artifact"]


def test_a_failed_file_write_keeps_the_old_file_and_leaves_no_litter(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("old\n")
    with pytest.raises(RuntimeError):
        with replacing(table) as staging:
            staging.write_text("half a ta")
            raise RuntimeError("crash")
    assert table.read_text() == "old\n" and os.listdir(tmp_path) == ["table.csv"]


# artifacts that lie ---------------------------------------------------------------------------------------------------
def test_tensors_swapped_in_from_another_artifact_are_refused(tmp_path):
    a, b = save(tmp_path / "a", 1.0), save(tmp_path / "b", 2.0)
    (a / TENSORS).write_bytes((b / TENSORS).read_bytes())
    with pytest.raises(CliplensError, match="SHA-256") as error:
        load_artifact(a)
    one_line(error)


def test_truncated_labels_and_cut_tensors_are_refused(stats, vit_lens, tmp_path):
    path = stats.save(tmp_path / "stats")
    rewrite_metadata(path, labels=stats.labels[:-1])
    with pytest.raises(CliplensError, match="truncated or mixed"):
        cliplens.load_stats(path, vit_lens)
    path = stats.save(tmp_path / "stats")
    rewrite_tensors(path, {"count": torch.tensor([stats.count]), "mean": stats.mean[:-1].contiguous(),
                           "scatter": stats.moments.scatter})
    with pytest.raises(CliplensError, match="'mean' has shape"):
        cliplens.load_stats(path, vit_lens)


def test_cut_pair_statistics_are_refused(resnet_lens, tmp_path):
    pairs = resnet_lens.collect(as_dataset(random_images(4, 64, seed=3)), granularity="pair", top_k=2)
    path = pairs.save(tmp_path / "pairs")
    state = pairs.state()
    state["coef_scatter"] = state["coef_scatter"][:, :-1].contiguous()
    rewrite_tensors(path, {k: v.contiguous() for k, v in state.items()})
    with pytest.raises(CliplensError, match="'coef_scatter' has shape"):
        cliplens.load_stats(path, resnet_lens)


def release_versions() -> tuple[list[str], list[str]]:
    major, minor = (int(part) for part in cliplens.__version__.split(".")[:2])
    accepted = [cliplens.__version__] + ([f"{major}.{minor - 1}.9"] if minor else [])
    refused = [f"{major}.{minor + 1}.0", f"{major + 1}.0.0", "unknown"] + ([f"{major - 1}.9.0"] if major else [])
    return accepted, refused


@pytest.mark.parametrize("version", release_versions()[0] + release_versions()[1])
def test_package_versions_follow_the_documented_rule(tmp_path, version):
    path = save(tmp_path / "a")
    rewrite_metadata(path, package_version=version)
    if version in release_versions()[0]:
        assert value(path) == 1.0
    else:
        with pytest.raises(CliplensError, match="upgrade cliplens|malformed package_version") as error:
            load_artifact(path)
        one_line(error)


@pytest.mark.parametrize("content,match", [
    (b"[1, 2]", "JSON list"), (b"null", "JSON null"), (b"42", "JSON number"), (b'"text"', "JSON string"),
    (b"\xff\xfe\x00\x01binary", "binary bytes"), (b"{", "corrupt"), (b"[" * 100_000, "corrupt|nested"),
    (b'{"kind": "test"}', "lacks 'package_version'"),
    (b'{"kind": "test", "package_version": "0.1.0", "created": "now"}', "lacks 'files'"),
    (b'{"package_version": "0.1.0", "created": "now", "files": []}', "list for 'files'"),
    (b'{"package_version": "0.1.0", "created": "now", "files": {}}', "no digest"),
])
def test_every_malformed_metadata_is_a_one_line_error(tmp_path, content, match):
    path = save(tmp_path / "a")
    (path / METADATA).write_bytes(content)
    with pytest.raises(CliplensError, match=match) as error:
        load_artifact(path)
    one_line(error)


def test_statistics_missing_a_field_their_reader_needs_are_refused(stats, vit_lens, tmp_path):
    path = stats.save(tmp_path / "stats")
    record = json.loads((path / METADATA).read_text())
    del record["labels"]
    (path / METADATA).write_text(json.dumps(record))
    with pytest.raises(CliplensError, match="lacks 'labels'"):
        cliplens.load_stats(path, vit_lens)
    rewrite_metadata(path, labels=7)
    with pytest.raises(CliplensError, match="int for 'labels'"):
        cliplens.load_stats(path, vit_lens)


# outputs written as one unit ------------------------------------------------------------------------------------------
def test_decompose_writes_its_folder_as_one_unit_and_never_over_a_users_folder(lenses, monkeypatch, tmp_path):
    out = tmp_path / "pieces"
    for _ in range(2):  # the second run replaces the first one's folder
        result = run(lenses, monkeypatch, "vit", decompose.command, "--data-path", DATA, "--output-dir", out)
        assert result.exit_code == 0, result.output
    metadata = json.loads((out / METADATA).read_text())
    assert set(metadata["files"]) == {"components.npy", "embedding.npy", "images.csv"}
    for name, digest in metadata["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert np.load(out / "components.npy").shape[0] == 12 and os.listdir(tmp_path) == ["pieces"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(CliplensError, match="refusing to replace"):
        run(lenses, monkeypatch, "vit", decompose.command, "--data-path", DATA, "--output-dir", tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


def test_targets_with_long_names_get_staging_names_within_the_limit(tmp_path):
    target = tmp_path / ("x" * 250)
    save(target, 1.0)
    save(target, 2.0)
    assert value(target) == 2.0 and os.listdir(tmp_path) == [target.name]

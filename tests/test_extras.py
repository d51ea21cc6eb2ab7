"""Optional extras: a command that needs one stops at once, before loading a model or reading data, with one line
that names what to install; a command that will not use it runs without it.

A package is made unimportable by `sys.modules[name] = None` (what `importlib.util.find_spec` then reports as
missing), and model loading is replaced by a recorder, so each test shows whether the command got that far.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import cliplens
from cliplens import CliplensError
from cliplens.cli import main
from cliplens.extras import require
from cliplens import factory as model_loading

FOLDER = "no/such/images"  # never read: the check comes first
EXPLAIN = "pip install 'cliplens[explain]'"


@pytest.fixture
def loads(monkeypatch):
    """Model loads the command attempted; each one stops the command with a CliplensError."""
    attempts = []

    def record(model, *args, **kwargs):
        attempts.append(model)
        raise CliplensError("stopped at model loading")

    monkeypatch.setattr(model_loading, "load", record)
    return attempts


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def test_require_names_the_missing_modules_and_the_extra(monkeypatch):
    require("explain", "json", "csv", user="anything")  # present: nothing happens
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(CliplensError) as error:
        require("explain", "json", "wordfreq", "matplotlib", user="this step")
    assert str(error.value) == f"this step needs wordfreq and matplotlib: {EXPLAIN}"


@pytest.mark.parametrize("missing, argv", [
    ("matplotlib", ["reconstruct"]),
    ("matplotlib", ["demo", "--output-dir", "unused"]),
    ("matplotlib", ["spurious", "--concept", "stripes,checker"]),
    ("matplotlib", ["components"]),
    ("wordfreq", ["textspan", "--pool", "words"]),
    ("wordfreq", ["explain", "--method", "omp", "--pool", "words"]),
    ("wordfreq", ["reconstruct", "--pool", "words"]),
    ("wordfreq", ["second-order", "--mlp-layer", "0", "--data-path", FOLDER]),  # words: the default off shapes data
    ("wordfreq", ["pairs", "--model", "toy:rn", "--data-path", FOLDER]),
    ("wordfreq", ["neuron-ablate", "--model", "toy:rn", "--data-path", FOLDER, "--keep", "5"]),
])
def test_a_command_stops_before_any_work_without_its_extra(missing, argv, monkeypatch, capsys, loads):
    monkeypatch.setitem(sys.modules, missing, None)
    status, err = run(argv, capsys)
    assert (status, err) == (2, f"error: cliplens {argv[0]} needs {missing}: {EXPLAIN}\n")
    assert loads == []


@pytest.mark.parametrize("argv", [
    ["second-order", "--mlp-layer", "0", "--data-path", FOLDER, "--omp-atoms", "0"],  # no text side: no pool
    ["pairs", "--model", "toy:rn", "--data-path", "shapes:test:8"],  # shapes data: the shapes pool
    ["textspan"],  # heads are named with descriptions
])
def test_a_command_that_will_not_use_the_extra_runs_without_it(argv, monkeypatch, capsys, loads):
    monkeypatch.setitem(sys.modules, "wordfreq", None)
    status, err = run(argv, capsys)
    assert (status, err) == (2, "error: stopped at model loading\n")
    assert len(loads) == 1


def test_a_hugging_face_model_without_transformers_names_the_hf_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(CliplensError, match=r"^model hf:openai/clip-vit-base-patch32 needs transformers: "
                                            r"pip install 'cliplens\[hf\]'$"):
        cliplens.load("hf:openai/clip-vit-base-patch32")


def test_the_installed_command_prints_one_line_and_exits_2():
    script = ("import sys; sys.modules['matplotlib'] = None\n"
              "from cliplens.cli import main; main(['reconstruct'])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr == f"error: cliplens reconstruct needs matplotlib: {EXPLAIN}\n"
    assert done.stdout == ""

"""Options are checked before any work, and what still goes wrong ends in one actionable line (issue 11: errors that
arrive late or leak, and errors a person can act on).

Where a check must come before a slow step, the slow step is replaced by one that fails the test if it is reached.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import cliplens
import cliplens.data
import cliplens.text
from cliplens.cli import main
from cliplens.errors import CliplensError
from conftest import tiny_vit

SRC = str(Path(cliplens.__file__).parents[1])
DATA = "shapes:test:4"


@pytest.fixture(scope="module")
def toy_vit():
    return cliplens.load("toy:vit")


@pytest.fixture(scope="module")
def toy_rn():
    return cliplens.load("toy:rn")


def never(what: str):
    def reached(*args, **kwargs):
        raise AssertionError(f"{what} ran although an option was wrong")

    return reached


def run_cli(capsys, *argv: object) -> tuple[int, str]:
    """(exit status, stderr) of `cliplens argv` run in this process."""
    try:
        main([str(arg) for arg in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# late errors --------------------------------------------------------------------------------------------------------
def test_ablate_checks_its_component_patterns_before_collecting(toy_vit, monkeypatch):
    from cliplens.workflows import ablation_study as workflow

    monkeypatch.setattr(workflow, "reference_statistics", never("the statistics pass"))
    with pytest.raises(CliplensError, match=r"'L03H1' matches no piece \(did you mean 'L3H1'\?"):
        workflow.ablation_study(toy_vit, DATA, components=["L03H1"])
    with pytest.raises(CliplensError, match="'L9H0' matches no piece"):
        workflow.ablation_study(toy_vit, DATA, components=["mlps,L9H0"], granularity="head")


LATE = [  # (workflow module, function, model, the pass it must not reach, options, what the refusal says)
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"methods": ["pca"]},
     "unknown reconstruction method"),
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"num_last_layers": 9},
     "--num-last-layers must be between 1 and 4"),
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"counts": [1, 200]},
     "200 texts per head exceeds the span"),
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"random_seed": 2**64},
     "--random-seed must be an integer from"),
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"templates": "{x}"},
     "unknown template set"),
    ("reconstruction_study", "reconstruction_study", "vit", "reference_statistics", {"pool": "no-such-pool"},
     "unknown text pool 'no-such-pool'"),
    ("ablation_study", "ablation_study", "vit", "reference_statistics", {"components": ["mlps"], "templates": "{} {}"},
     'must contain exactly one "{}"'),
    ("head_texts", "explain_heads", "vit", "obtain_piece_stats", {"pool_templates": "{", "pool": "shapes"},
     "unknown template set"),
    ("head_texts", "explain_heads", "vit", "obtain_piece_stats", {"num_last_layers": 5},
     "--num-last-layers must be between 1 and 4"),
    ("head_texts", "explain_heads", "vit", "obtain_piece_stats", {"texts_per_head": 50, "pool": "shapes"},
     "--texts-per-head 50 exceeds the text pool"),
    ("head_texts", "explain_heads", "vit", "obtain_piece_stats", {"texts_per_head": 30, "w_ov_rank": 8,
                                                                   "pool": "shapes"}, "the smaller of --w-ov-rank"),
    ("second_order_study", "second_order_study", "vit", "collect_second_order",
     {"mlp_layer": 1, "eval_data_path": "no-such-folder"}, "no-such-folder does not exist"),
    ("second_order_study", "second_order_study", "vit", "collect_second_order",
     {"mlp_layer": 1, "eval_data_path": DATA, "templates": "{x}"}, "unknown template set"),
    ("pair_study", "pair_study", "rn", "obtain_pair_stats", {"fit_path": DATA, "omp_atoms": 0, "templates": "{"},
     "unknown template set"),
    ("pair_study", "pair_study", "rn", "obtain_pair_stats", {"pool": "no-such-pool"}, "unknown text pool"),
    ("pair_study", "pair_ablation_study", "rn", "obtain_pair_stats", {"pool": "no-such-pool"}, "unknown text pool"),
]


@pytest.mark.parametrize("module, function, model, work, options, says", LATE,
                         ids=[f"{case[1]}-{list(case[4])[-1]}" for case in LATE])
def test_workflows_check_what_their_later_steps_need_before_the_first_pass(module, function, model, work, options,
                                                                            says, toy_vit, toy_rn, monkeypatch):
    import importlib

    workflow = importlib.import_module(f"cliplens.workflows.{module}")
    monkeypatch.setattr(workflow, work, never("the first pass"))
    with pytest.raises(CliplensError, match=re.escape(says)):
        getattr(workflow, function)(toy_vit if model == "vit" else toy_rn, DATA, **options)


def test_a_seed_torch_cannot_take_is_refused_before_loading(monkeypatch):
    from cliplens.models import toy

    monkeypatch.setattr(toy, "load_toy", never("model loading"))
    with pytest.raises(CliplensError, match="seed must be an integer from -2\\*\\*63 to 2\\*\\*64 - 1"):
        cliplens.load("toy:vit", seed=2**64)


def test_predicted_labels_are_those_the_decomposition_gives(toy_vit, toy_rn):
    from cliplens.settings import Settings

    for lens, size in ((toy_vit, 96), (toy_rn, 96)):
        images = torch.randn(1, 3, size, size)
        for granularity in ("head", "layer") if lens.kind == "vit" else ("head", "neuron", "pair"):
            for convention in ("separate", "reference"):
                settings = Settings(granularity, convention=convention)
                result = lens.decompose(images, **settings.metadata())
                assert lens.decomposer.labels(settings) == result.labels


def test_train_toy_checks_its_options_before_training(monkeypatch, tmp_path, capsys):
    from cliplens.toys import train

    monkeypatch.setattr(train, "build_model", never("training"))
    with pytest.raises(CliplensError, match="--steps must be at most"):
        train.train_toy(train.TrainConfig("rn", steps=2**63), tmp_path, evaluate_n=0)
    for n in (-5, 2**63):  # all rendered at once: 2**63 took every byte of memory
        with pytest.raises(CliplensError, match="--eval-images must be an integer from 0 "):
            train.train_toy(train.TrainConfig("rn", steps=1), tmp_path, evaluate_n=n)
    code, err = run_cli(capsys, "train-toy", "--model", "rn", "--steps", 1, "--threads", 0, "--output-dir", tmp_path)
    assert code == 2 and "--threads must be a positive integer" in one_error_line(err)
    code, err = run_cli(capsys, "train-toy", "--model", "rn", "--steps", 1, "--batch-size", 2**63,
                        "--output-dir", tmp_path)
    assert code == 2 and "--batch-size must be at most" in one_error_line(err)
    (tmp_path / "file").write_text("")
    code, err = run_cli(capsys, "train-toy", "--model", "rn", "--steps", 1, "--output-dir", tmp_path / "file" / "out")
    assert code == 2 and "file is a file" in err and "Traceback" not in err  # refused as the command line is read


def test_a_checkpoint_of_other_shapes_is_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "vit.safetensors"
    save_file({key: value.contiguous() for key, value in tiny_vit().state_dict().items()}, checkpoint)
    with pytest.raises(CliplensError) as refused:
        cliplens.load("RN50", pretrained=str(checkpoint))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"checkpoint {checkpoint} does not fit RN50: ")
    assert "of another shape (e.g. " in message and "missing" in message and "unexpected" in message


def test_resuming_training_from_a_foreign_checkpoint_is_refused_in_one_line(tmp_path):
    from cliplens.models.toy import ARCHITECTURES, build_model
    from cliplens.toys import train

    config = train.TrainConfig("vit", steps=2, batch_size=4)
    foreign = build_model(ARCHITECTURES["rn"])  # a checkpoint whose record says vit but whose tensors are a ResNet's
    heads = train.AttributeHeads(ARCHITECTURES["rn"]["embed_dim"])
    optimizer = train._optimizer(torch.nn.ModuleList([foreign, heads]), config)
    path = train.save_checkpoint(tmp_path / "step-1", config, 1, 0.0, foreign, heads, optimizer)
    with pytest.raises(CliplensError, match=r"^checkpoint .* does not fit the vit toy: \d+ tensor\(s\) of another "
                                            r"shape .*; resume from a checkpoint") as refused:
        train.train_toy(config, evaluate_n=0, resume=path)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("device, says", [("meta", "device type 'meta' is not supported"),
                                          ("mps", "not available here"), ("cuda:99", "CUDA"),
                                          ("", "not a valid torch device"), (1, "must be a string")])
def test_devices_this_machine_cannot_compute_on_are_refused_before_loading(device, says, monkeypatch):
    from cliplens.models import toy

    if device == "cuda:99" and torch.cuda.is_available():
        says = "does not exist"
    monkeypatch.setattr(toy, "load_toy", never("model loading"))
    with pytest.raises(CliplensError, match=says):
        cliplens.load("toy:vit", device=device)


def test_absurd_sizes_and_an_empty_data_path_are_refused(capsys, tmp_path):
    from cliplens.data.loader import MAX_BATCH_SIZE, as_source, batches

    code, err = run_cli(capsys, "collect", "--data-path", DATA, "--batch-size", 2**63, "--output-dir", tmp_path)
    assert code == 2 and "Usage:" in err and f"1<=x<={MAX_BATCH_SIZE}" in err
    with pytest.raises(CliplensError, match=f"batch_size must be at most {MAX_BATCH_SIZE}"):
        next(batches([torch.zeros(3, 2, 2)], None, batch_size=2**63))
    with pytest.raises(CliplensError, match="num_workers must be an integer from 0 to"):
        next(batches([torch.zeros(3, 2, 2)], None, num_workers=-1))
    code, err = run_cli(capsys, "decompose", "--data-path", "", "--output-dir", tmp_path / "out")
    assert code == 2 and "the data path is empty" in one_error_line(err)
    with pytest.raises(CliplensError, match="the data path is empty"):
        as_source("  ")
    with pytest.raises(CliplensError, match="bad shapes data spec"):
        as_source("shapes:test:4:1:2")  # a fourth field was ignored
    with pytest.raises(CliplensError, match="the number of images must be at most"):
        as_source(f"shapes:test:{2**70}")  # an OverflowError when the pass asked for the length


@pytest.mark.parametrize("command", ["collect", "textspan", "train-toy"])
def test_an_output_folder_that_cannot_be_made_is_refused_when_the_command_line_is_read(command, capsys, tmp_path,
                                                                                      monkeypatch):
    from cliplens import factory
    from cliplens.toys import train

    monkeypatch.setattr(factory, "load", never("model loading"))
    monkeypatch.setattr(train, "train_toy", never("training"))
    (tmp_path / "file").write_text("")
    model = ["--model", "rn"] if command == "train-toy" else []
    for folder, says in ((tmp_path / "file" / "out", "is a file"), ("x" * 300, "longer than the 255 bytes|too long")):
        code, err = run_cli(capsys, command, *model, "--output-dir", folder)
        assert code == 2 and "Usage:" in err and "Invalid value for '--output-dir'" in err and re.search(says, err), err


LONG = "x" * 300  # longer than a file name can be: looking it up raised OSError (found by fuzzing)


@pytest.mark.parametrize("call, says", [
    (lambda: cliplens.text.get_pool(LONG), "unknown text pool"),
    (lambda: cliplens.data.as_source(LONG), "does not exist"),
    (lambda: cliplens.load("toy:vit", pretrained=LONG), "takes no pretrained tag or checkpoint file"),
    (lambda: cliplens.load("ViT-S-32", pretrained=LONG), "has no pretrained tag"),
    (lambda: cliplens.load("hf:" + LONG), "is not in the local Hugging Face cache"),
], ids=["pool", "data", "toy", "open_clip", "hf"])
def test_names_too_long_to_look_up_are_refused_like_missing_ones(call, says):
    if "Hugging Face" in says:
        pytest.importorskip("transformers")
    with pytest.raises(CliplensError, match=says):
        call()


def test_a_component_named_twice_or_zero_padded_is_refused_before_the_pass(toy_vit, monkeypatch):
    from cliplens.apps import retrieval
    from cliplens.labels import parse_label

    monkeypatch.setattr(retrieval, "_scan", never("the retrieval pass"))
    with pytest.raises(CliplensError, match="component L1H2 is named twice"):
        retrieval.retrieve(toy_vit, DATA, ["L1H2", " L1H2"], query_text="a blue object")
    with pytest.raises(CliplensError, match=r"'L01H2' \(did you mean 'L1H2'\?"):
        retrieval.retrieve(toy_vit, DATA, ["L01H2"], query_text="a blue object")
    with pytest.raises(CliplensError, match=r"did you mean 'L3H7T5'\?"):
        parse_label("L3H7T05")


def test_decompose_takes_image_paths_and_refuses_empty_or_odd_input(toy_vit, tmp_path):
    picture = tmp_path / "img.png"
    Image.new("RGB", (40, 30), "red").save(picture)
    (tmp_path / "broken.png").write_text("not an image")
    from_path = toy_vit.decompose(str(picture))
    from_image = toy_vit.decompose(Image.open(picture))
    assert torch.equal(from_path.components, from_image.components)
    assert toy_vit.decompose([picture, str(picture)]).components.shape[0] == 2
    for images, says in (([], "no images given"), (torch.zeros(0, 3, 96, 96), "the image batch is empty"),
                         (str(tmp_path / "missing.png"), "cannot read the image .*missing.png: missing"),
                         (tmp_path / "broken.png", "not an image format PIL reads"),
                         (3, "images must be a tensor"), ([3], "an image in the list is of type int")):
        with pytest.raises(CliplensError, match=says):
            toy_vit.decompose(images)


INTERRUPTED = textwrap.dedent("""
    import multiprocessing.process, multiprocessing.queues, os, signal, sys
    from cliplens.cli import main

    def ctrl_c():  # as from a terminal: SIGINT reaches the whole process group, workers included
        os.killpg(os.getpgid(0), signal.SIGINT)

    codes = []

    def collect():
        try:
            main(["collect", "--data-path", "shapes:test:40", "--batch-size", "2", "--num-workers", "2",
                  "--output-dir", sys.argv[1]])
            codes.append(0)  # the run ended before its interrupt came (possible on a loaded machine)
        except SystemExit as exc:
            codes.append(exc.code)

    if sys.argv[2] == "while starting workers":  # one worker is running, the next not yet started
        start = multiprocessing.process.BaseProcess.start
        def starting(self):
            start(self)
            ctrl_c()
        multiprocessing.process.BaseProcess.start = starting
        collect()
    else:  # while the main process takes a batch over from a worker: at its k-th line of Python after the first batch
        get, main_process, lines = multiprocessing.queues.Queue.get, os.getpid(), {}
        def taking_over(self, *args, **kwargs):
            if os.getpid() != main_process or lines["left"] is None:  # a worker, or the first batch
                lines["left"] = lines["left"] or lines["k"]
                return get(self, *args, **kwargs)
            def trace(frame, event, arg):
                lines["left"] -= event == "line"
                if lines["left"] == 0:
                    ctrl_c()
                return trace
            sys.settrace(trace)
            try:
                return get(self, *args, **kwargs)
            finally:
                sys.settrace(None)
        multiprocessing.queues.Queue.get = taking_over
        for k in map(int, sys.argv[3:]):
            lines.update(k=k, left=None)
            collect()
    print("codes", *codes)
""")


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signals")
@pytest.mark.parametrize("when", [["while starting workers"], ["while reading", "30", "300", "600", "900"]],
                         ids=["while starting workers", "while reading"])
def test_ctrl_c_with_workers_says_interrupted_and_nothing_else(tmp_path, when):
    """Ctrl-C while the loader starts its workers, and while the main process takes a batch over from one, at the k-th
    line of Python it runs for it. With torch's usual file-descriptor handover (~1270 lines, most of them in a
    connection to a thread of the worker) Ctrl-C at line 300 made that thread print a traceback; ours runs ~240."""
    done = subprocess.run([sys.executable, "-c", INTERRUPTED, str(tmp_path / "out"), *when], capture_output=True,
                          text=True, timeout=300, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": SRC, "TQDM_DISABLE": "1"})
    runs = max(1, len(when) - 1)
    codes = done.stdout.split("codes")[-1].split()
    assert len(codes) == runs and set(codes) <= {"130", "0"}, (done.stdout, done.stderr)
    interrupted = codes.count("130")
    if not interrupted:  # seen only with two test suites sharing 2 cores: the handovers ran before any interrupt
        pytest.skip("no run was interrupted in time on this machine, so there is no Ctrl-C to check")
    assert done.stderr == "\ninterrupted\n" * interrupted, done.stderr  # one line each (click first ends the ^C line)
    assert (tmp_path / "out").exists() == ("0" in codes)  # an interrupted run leaves nothing


# errors a person can act on -----------------------------------------------------------------------------------------
def test_statistics_of_another_model_name_both_models(toy_vit, toy_rn, tmp_path):
    path = toy_rn.collect(DATA).save(tmp_path / "stats")
    with pytest.raises(CliplensError) as refused:
        cliplens.load_stats(path, toy_vit)
    assert str(refused.value) == (
        f"{path}: made with toy:rn (fingerprint {toy_rn.fingerprint}), but this is toy:vit (fingerprint "
        f"{toy_vit.fingerprint}); recompute it with this model")


HF_PROBE = textwrap.dedent("""
    import time
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast  # import time is not what is measured
    import cliplens
    start = time.perf_counter()
    try:
        cliplens.load("hf:nobody/no-such-clip")
    except cliplens.CliplensError as exc:
        print(f"{time.perf_counter() - start:.2f}", exc)
""")
NOT_CACHED = "CLIP model 'nobody/no-such-clip' is not in the local Hugging Face cache, and it cannot be downloaded here"


def test_hf_ids_fail_at_once_when_the_hub_is_unreachable():
    pytest.importorskip("transformers")
    # Never the real network: the Hub's endpoint is a port of this machine where nothing listens.
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update({"PYTHONPATH": SRC, "HF_ENDPOINT": "http://127.0.0.1:9"})
    done = subprocess.run([sys.executable, "-c", HF_PROBE], capture_output=True, text=True, timeout=300, env=env)
    seconds, _, message = done.stdout.strip().partition(" ")
    assert message.startswith(f"{NOT_CACHED} (the Hugging Face Hub is unreachable: "), done
    assert float(seconds) < 5, message  # the Hub client's retries took ~25 s


def test_hf_ids_offline_fail_at_once_naming_the_variable():
    pytest.importorskip("transformers")
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizerFast  # noqa: F401 (import time)

    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest
    start = time.perf_counter()
    with pytest.raises(CliplensError, match=f"^{NOT_CACHED} \\(HF_HUB_OFFLINE is set\\)"):
        cliplens.load("hf:nobody/no-such-clip")
    assert time.perf_counter() - start < 5


def test_text_atoms_as_many_as_the_embedding_width_are_refused_before_the_pass(toy_vit, toy_rn, monkeypatch):
    from cliplens.workflows import head_texts, pair_study, second_order_study

    monkeypatch.setattr(second_order_study, "collect_second_order", never("the second-order pass"))
    monkeypatch.setattr(pair_study, "obtain_pair_stats", never("the pair pass"))
    monkeypatch.setattr(head_texts, "obtain_piece_stats", never("the statistics pass"))
    wide = "--omp-atoms 128 is not below the embedding width 128"
    with pytest.raises(CliplensError, match=wide):
        second_order_study.second_order_study(toy_vit, DATA, mlp_layer=1, omp_atoms=128)
    with pytest.raises(CliplensError, match=wide):
        pair_study.pair_study(toy_rn, DATA, omp_atoms=128)
    with pytest.raises(CliplensError, match="--omp-atoms 500 is not below"):
        pair_study.pair_ablation_study(toy_rn, DATA, omp_atoms=500)
    with pytest.raises(CliplensError, match="--texts-per-head 128 is not below"):
        head_texts.explain_heads(toy_vit, DATA, method="omp", texts_per_head=128)

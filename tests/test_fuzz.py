"""Fuzzing (issue 11): whatever a user types as an option and whatever an artifact file holds, the outcome is success
or one line.

- Every option of every command gets odd values (empty, huge, negative, non-numbers, unicode, malformed data specs
  and labels) on top of a tiny valid invocation (the toys, `shapes:test:4`). Allowed outcomes: exit 0; exit 2 with
  exactly one `error:` line on stderr; click's own usage error (exit 2, "Usage:"). Never a traceback, never exit 1
  (`main`'s line for an unexpected exception) and never a hang.
- Real small artifacts are damaged (random bytes, mutated metadata.json, cut or flipped tensors, a mutated
  safetensors header, tensors of another artifact; with and without a matching digest, so that the checks behind
  the digest are reached too) and loaded with `cliplens.load_stats`: the result is statistics that can be used, or a
  one-line CliplensError.

What counts as stderr: what `main` writes, a thread's uncaught exception, and what loader worker processes write to
the file descriptor. Derandomized (the same examples on every run) and bounded for the default suite: 20 invocations
per command and 150 damaged artifacts per kind (~100 s on two busy cores); for a deeper local run,
CLIPLENS_FUZZ_EXAMPLES=500 draws that many fresh examples per test.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import struct
import threading
import traceback
from pathlib import Path
from typing import Iterator

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cliplens
from cliplens import factory
from cliplens.cli import cli, demo, main
from cliplens.errors import CliplensError

EXAMPLES = int(os.environ.get("CLIPLENS_FUZZ_EXAMPLES", "0"))
# One invocation on four images takes seconds and a few hundred MB: far more of either is a hang or an unbounded
# allocation, and fails the test.
HANG_S = 120
MEMORY_B = 6 * 2**30


def fuzzing(examples: int):
    """The suite's runs are derandomized (the same examples every time); a deeper run (CLIPLENS_FUZZ_EXAMPLES) draws
    new ones each time and prints any failing example."""
    return settings(max_examples=EXAMPLES or examples, derandomize=not EXAMPLES, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))


# values ---------------------------------------------------------------------------------------------------------------
NUMBERS = ["0", "-1", "1", "2", "-0", "007", "1.5", "-2.5", "1e309", "nan", "inf", "-inf", "0x10", "1_000", "１２",
           str(2**31), str(2**40), str(2**63 - 1), str(2**63), str(2**64), str(2**100), str(-2**63 - 1)]
WORDS = ["", " ", "é", "😀", "\u202e", "a,b", ",", ",,", "L03H1", "L3H1", "L1H2", "H0N0", "N0", "L0N5", "attn[:1]",
         "attn[9]", "mlp[-1:]", "mlps", "L*", "[", "shapes:", "shapes:test", "shapes:test:0", "shapes:test:-1",
         "shapes:nope:4", "shapes:test:4:-1", f"shapes:test:4:{2**70}", "shapes:test:x", "toy:", "toy:vgg", "toy:rn",
         "hf:", "cpu", "cuda", "cuda:1", "meta", "mps", "none", "openai", "photo", "{}", "{} {}", "{0}", "{x}", "{",
         "%s", "x" * 300, "-", "--", ".", "..", "out", "a/b/c", "colour", "shape"]
# Anything a command line can hold (no NUL); relative, so that a value taken as an output folder stays in `workdir`.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12).map(
    lambda text: text.lstrip("/~"))
VALUES = st.one_of(st.sampled_from(NUMBERS), st.sampled_from(WORDS), st.integers(-3, 40).map(str), TEXT)
INTEGERS = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**40, 2**63 - 1, 2**63, 2**64, 2**100, -2**63 - 1]))
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-320, 1e308, 100.0, 100.0000001]))

DATA = "shapes:test:4"
# A tiny valid invocation of each command; an option given here is replaced when it is fuzzed.
BASE: dict[str, dict[str, object]] = {
    "collect": {"--data-path": DATA, "--batch-size": "2"},
    "analyze": {"--fit-path": DATA, "--data-path": DATA, "--ask": ["statistics", "ablate"], "--preset": ["cls"],
                "--batch-size": "2"},
    "decompose": {"--data-path": DATA},
    "retrieve": {"--data-path": DATA, "--component": ["L1H2"], "--query-text": "a red shape", "--top": "2"},
    "textspan": {"--data-path": DATA, "--pool": "shapes", "--pool-size": "6", "--texts-per-head": "2",
                 "--num-last-layers": "1", "--w-ov-rank": "4"},
    "explain": {"--data-path": DATA, "--method": "svd", "--pool": "shapes", "--pool-size": "6",
                "--texts-per-head": "2", "--num-last-layers": "1", "--max-components": "2"},
    "ablate": {"--data-path": DATA, "--components": ["L3H1"], "--mean-source": "eval"},
    "reconstruct": {"--data-path": DATA, "--mean-source": "eval", "--pool": "shapes", "--pool-size": "6",
                    "--texts": "1", "--methods": "textspan", "--num-last-layers": "1", "--w-ov-rank": "4"},
    "second-order": {"--data-path": DATA, "--mlp-layer": "2", "--omp-atoms": "0", "--grids": "0", "--top-k": "2"},
    "pairs": {"--model": "toy:rn", "--data-path": DATA, "--omp-atoms": "0", "--top-k": "2"},
    "neuron-ablate": {"--model": "toy:rn", "--data-path": DATA, "--omp-atoms": "0", "--top-k": "2", "--keep": ["10"],
                      "--level": "pair"},
    "info": {"model": "toy:vit", "--images": "10"},
    "verify": {"model": "toy:vit", "--random-images": "1", "--shapes-images": "1"},
    "merge": {"artifacts": ["shard-0", "shard-1"]},  # made by `quick`
    "segment": {"--data-path": "shapes:segmentation:4", "--lens": ["heads", "centre"], "--examples": "1"},
    "spurious": {"--model": "toy:rn", "--data-path": "shapes:spurious-test:4:2", "--val-path": "shapes:spurious-test:4:1",
                 "--fit-path": "shapes:spurious-train:4", "--concept": "stripes", "--k": ["1"], "--draws": "1"},
    "components": {"--data-path": DATA, "--pool": "shapes", "--pool-size": "6", "--edit-top": "1",
                   "--texts-per-pole": "2", "--top": "2"},
    "dissect": {"--target": "toy:cnn", "--layers": "fc", "--probe": DATA, "--concepts": "shapes", "--clip": "toy:vit",
                "--no-cache": True},
    "report": {"run_dirs": ["shard-0"]},
    "search": {"--data-path": DATA, "--heads": "L1H2", "--top": "2", "--neighbours": "2"},
    "discover": {"--data-path": DATA, "--index": "0", "--pool": "shapes", "--pool-size": "6", "--top": "2"},
    "track": {"--data-path": "shapes:shift:4", "--concept": "yellow", "--piece": ["L1H2"], "--random-sets": "1"},
    "adversarial": {"--data-path": DATA, "--source": ["circle"], "--target": ["square"], "--images": "2",
                    "--prompts": "1", "--words": "2", "--omp-atoms": "2"},
    "train-toy": {"--model": "rn", "--steps": "1", "--batch-size": "2", "--eval-images": "0"},
    "demo": {},
}
# Options whose valid values can cost minutes or walk a whole disk: fuzzed with values that are cheap when valid.
COSTLY = {"--data-path", "--fit-path", "--val-path", "--probe", "--eval-data-path", "--steps", "--eval-images", "--max-images", "--images"}
CHEAP_COUNTS = st.sampled_from(["0", "-1", "1", "2", "", "x", "1.5", str(2**63), str(2**100)])
CHEAP_DATA = st.sampled_from(["", " ", "shapes:", "shapes:test", "shapes:test:0", "shapes:test:2", "shapes:test:-1",
                              "shapes:nope:4", "shapes:test:4:-1", "shapes:test:x", "missing", "out", "a b", "é",
                              "1", "-", "shapes:test:2:1"])


def base(name: str, output_dir: str) -> dict[str, object]:
    """The base invocation of `name`, writing to `output_dir` if it writes files."""
    return {**BASE[name], **({"--output-dir": output_dir} if "--output-dir" in options_of(name) else {})}


def options_of(name: str) -> dict[str, click.Parameter]:
    """The command's parameters by the name written on the command line (positional arguments by their own name)."""
    return {(param.opts[0] if isinstance(param, click.Option) else param.name): param
            for param in cli.commands[name].params if param.name != "help"}


def values_for(flag: str, param: click.Parameter) -> st.SearchStrategy:
    """Mostly values of the option's own type (so that most examples get past click to cliplens), some of any kind."""
    if flag in COSTLY:
        return CHEAP_DATA if "path" in flag else CHEAP_COUNTS
    choices = getattr(param.type, "choices", None)
    if choices:
        return st.one_of(st.sampled_from(list(choices)), VALUES)
    if isinstance(param.type, (click.types.IntParamType, click.IntRange)):
        return st.one_of(INTEGERS.map(str), INTEGERS.map(str), VALUES)  # 2:1 for the option's own type
    if isinstance(param.type, (click.types.FloatParamType, click.FloatRange)):
        return st.one_of(FLOATS.map(str), FLOATS.map(str), VALUES)
    return VALUES


@st.composite
def invocations(draw, name: str) -> list[str]:
    """argv: the base invocation of `name` with one to three of its options changed, flags switched at random."""
    params = options_of(name)
    chosen = base(name, f"out-{name}")
    fuzzed = draw(st.lists(st.sampled_from(sorted(params)), min_size=1, max_size=3, unique=True))
    for flag in fuzzed:
        param = params[flag]
        if isinstance(param, click.Option) and param.is_flag:
            chosen[draw(st.sampled_from(param.opts + param.secondary_opts))] = True
        elif param.multiple:
            chosen[flag] = draw(st.lists(values_for(flag, param), min_size=1, max_size=2))
        else:
            chosen[flag] = draw(values_for(flag, param))
    return command_line(name, chosen)


def command_line(name: str, chosen: dict[str, object]) -> list[str]:
    """argv from {option: value, list of values, or True for a flag; positional arguments by name}."""
    argv = [name]
    for flag, value in chosen.items():
        if not flag.startswith("-"):
            argv += map(str, value if isinstance(value, list) else [value])
        elif value is True:
            argv.append(flag)
        else:
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, str(item)]
    return argv


# running the CLI --------------------------------------------------------------------------------------------------
class Hang(Exception):
    pass


@contextlib.contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """At most `extra` more bytes of address space while the block runs (Linux), so that a value that makes cliplens
    allocate without bound fails the test (a MemoryError, exit 1) instead of exhausting the machine."""
    try:
        import resource

        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (ImportError, OSError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = pages * os.sysconf("SC_PAGE_SIZE") + extra
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `cliplens argv` in this process; a hang after HANG_S and an allocation of more
    than MEMORY_B fail it (as unexpected exceptions, exit 1). A thread's uncaught exception is printed to that stderr,
    as outside pytest (which would turn it into a warning)."""
    out, err = io.StringIO(), io.StringIO()

    def hung(number, frame):
        raise Hang(f"cliplens {' '.join(argv)} ran for more than {HANG_S} s")

    def printed(args: threading.ExceptHookArgs) -> None:
        traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=err)

    previous, hook = signal.signal(signal.SIGALRM, hung), threading.excepthook
    threading.excepthook = printed
    signal.alarm(HANG_S)
    try:
        with memory_cap(MEMORY_B), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        threading.excepthook = hook
    return code, out.getvalue(), err.getvalue()


def check_outcome(argv: list[str], code: int, err: str) -> None:
    shown = f"cliplens {' '.join(map(repr, argv))}\nexit {code}\n{err[-3000:]}"
    assert "Traceback" not in err, shown
    if code == 0:
        return
    assert code == 2, shown
    if "Usage:" in err:
        return
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, shown


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder two levels below a fresh one, so '.', '..' and relative paths stay inside what the test owns."""
    folder = tmp_path_factory.mktemp("fuzz") / "a" / "b"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def quick(workdir):
    """Commands run in `workdir` (which holds the two shards `merge` joins), with each model loaded once (a failed load
    is not cached: errors are re-raised) and the demo's steps emptied (each step is a command fuzzed on its own)."""
    loaded: dict[tuple, cliplens.Lens] = {}
    real_load = factory.load

    def load(model, pretrained=None, **options):
        key = (model, pretrained, *sorted(options.items()))
        if key not in loaded:
            loaded[key] = real_load(model, pretrained, **options)
        return loaded[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(factory, "load", load)
        patch.setattr(demo, "vit_steps", lambda out: [])
        patch.setattr(demo, "rn_steps", lambda out: [])
        patch.setattr(demo, "dissect_steps", lambda out: [])
        patch.setattr(demo, "report_steps", lambda out, steps: [])
        patch.chdir(workdir)
        for i in range(2):
            load("toy:vit").collect(DATA, shard=f"{i}/2").save(f"shard-{i}")
        yield


COMMANDS = sorted(BASE)


def test_every_command_is_fuzzed():
    assert set(COMMANDS) == set(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_base_invocations_succeed(name, quick):
    code, _, err = run(command_line(name, base(name, f"base-{name}")))
    assert code == 0, err[-3000:]


@pytest.mark.parametrize("name", COMMANDS)
def test_fuzzed_options_end_in_success_or_one_line(name, quick, capfd):
    """What loader workers (other processes) write to the stderr file descriptor counts too."""
    @fuzzing(examples=20)
    @given(argv=invocations(name))
    def fuzz(argv):
        capfd.readouterr()
        code, _, err = run(argv)
        check_outcome(argv, code, err + capfd.readouterr().err)

    fuzz()


# artifacts --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A piece-statistics artifact of toy:vit and a pair-statistics one of toy:rn, each with its lens."""
    folder = tmp_path_factory.mktemp("artifacts")
    vit, rn = cliplens.load("toy:vit"), cliplens.load("toy:rn")
    return {"piece": (vit.collect(DATA).save(folder / "piece"), vit),
            "pair": (rn.collect(DATA, granularity="pair", top_k=2).save(folder / "pair"), rn)}


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=8,
)
KEYS = ["kind", "labels", "granularity", "convention", "normalize", "spatial", "precision", "package_version",
        "created", "files", "count", "top_k", "fingerprint", "model", "data_fingerprint", "architecture", "skipped"]


def restamp(folder: Path) -> None:
    """Record the tensors file's current digest, so the loader reads past the digest check."""
    from cliplens.io.atomic import sha256_file

    record = json.loads((folder / "metadata.json").read_text())
    record["files"]["tensors.safetensors"] = sha256_file(folder / "tensors.safetensors")
    (folder / "metadata.json").write_text(json.dumps(record))


@st.composite
def damage(draw, folder: Path, other: Path) -> str:
    """Damage the artifact in `folder` one way (the tensors of `other` may be swapped in); returns what was done."""
    metadata, tensors = folder / "metadata.json", folder / "tensors.safetensors"
    how = draw(st.sampled_from(["bytes", "json", "drop", "cut", "flip", "header", "swap"]))
    if how == "bytes":
        metadata.write_bytes(draw(st.binary(max_size=64)))
        return how
    if how in ("json", "drop"):
        record = json.loads(metadata.read_text())
        key = draw(st.sampled_from(KEYS + sorted(record)))
        if how == "drop":
            record.pop(key, None)
        else:
            record[key] = draw(JSON)
        metadata.write_text(json.dumps(record))
        return f"{how} {key}"
    data = bytearray(tensors.read_bytes())
    if how == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
    elif how == "header":
        size = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + size])
        name = draw(st.sampled_from(sorted(header)))
        if name != "__metadata__":
            field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
            header[name][field] = draw(st.one_of(JSON, st.lists(st.integers(-2, 2**40), max_size=4),
                                                 st.sampled_from(["F16", "I64", "BOOL", "F64", "U8"])))
        else:
            header.pop(name)
        encoded = json.dumps(header).encode()
        encoded += b" " * (-len(encoded) % 8)
        data = bytearray(struct.pack("<Q", len(encoded))) + encoded + data[8 + size :]
    else:
        data = bytearray((other / "tensors.safetensors").read_bytes())
    tensors.write_bytes(bytes(data))
    if draw(st.booleans()):
        restamp(folder)
        return f"{how}, restamped"
    return how


@pytest.mark.parametrize("kind", ["piece", "pair"])
def test_damaged_artifacts_load_as_usable_statistics_or_fail_in_one_line(kind, artifacts, tmp_path):
    from cliplens.stats.pairs import PairStats
    from cliplens.stats.summary import largest_pairs, largest_pieces

    original, lens = artifacts[kind]
    other = artifacts["pair" if kind == "piece" else "piece"][0]

    @fuzzing(examples=150)
    @given(data=st.data(), with_lens=st.booleans())
    def fuzz(data, with_lens):
        folder = tmp_path / "damaged"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(original, folder)
        done = data.draw(damage(folder, other))
        try:
            stats = cliplens.load_stats(folder, lens if with_lens else None)
            table = largest_pairs(stats, 3) if isinstance(stats, PairStats) else largest_pieces(stats, 3)
            assert table, done
        except CliplensError as exc:
            assert "\n" not in str(exc), (done, str(exc))

    fuzz()

"""The command line explains itself: every option has help, errors name options as the user types them, and the data
and text-pool defaults agree across commands or the help says why they differ."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import click
import pytest

from cliplens.cli import cli
from cliplens.text.candidates import HEAD_POOL, UNIT_POOL

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cliplens"
# Messages that use a Python keyword spelled like an option: they are raised only for library callers, because click
# (a type, a range, a choice) or the command refuses the value first, so a command line user never sees them.
LIBRARY_ONLY = {
    ("data/loader.py", "num_workers"): "--num-workers is an IntRange(0, MAX_WORKERS)",
    ("evaluate/ablation.py", "mean_source"): "--mean-source is a Choice; with --stats, reference.py says it in flags",
    ("explain/omp.py", "dict_norm"): "--dict-norm is a Choice",
    ("stats/checkpoint.py", "checkpoint_every"): "--checkpoint-every is an IntRange(min=0)",
    ("stats/checkpoint.py", "checkpoint_dir"): "collect always has a checkpoint folder (OUTPUT_DIR/checkpoints)",
    ("stats/second_order.py", "top_k"): "--top-k is an IntRange(min=1)",
    ("text/embed.py", "batch_size"): "--batch-size is an IntRange(min=1)",
    ("data/loader.py", "batch_size"): "--batch-size is an IntRange(1, MAX_BATCH_SIZE)",
    ("explain/omp.py", "batch_size"): "the OMP batch is not an option",
    ("explain/svd_poles.py", "max_components"): "--max-components is an IntRange(min=1)",
    ("explain/components.py", "max_components"): "components has no such option; the library caller's cap",
}
# what users choose the data and the texts with
DATA_AND_POOLS = ("data_path", "fit_path", "eval_data_path", "pool", "pool_size", "pool_templates", "templates")


def options():
    for name, command in sorted(cli.commands.items()):
        for param in command.params:
            yield name, command, param


def test_every_option_has_help_and_every_argument_is_described():
    missing = [f"{name} {param.opts[0]}" for name, _, param in options()
               if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert not missing, missing
    for name, command, param in options():
        if isinstance(param, click.Argument):
            assert param.name.upper() in (command.help or ""), (name, param.name)


def messages() -> list[tuple[str, int, str]]:
    """(module, line, text) of every CliplensError message and every name given to a require_* check."""
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        module = path.relative_to(SOURCE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            callee = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if callee == "CliplensError" or callee.startswith("require_"):
                found.append((module, node.lineno, literal(node.args[0])))
    return found


def literal(node: ast.AST) -> str:
    """The literal text of a message: string constants, f-string parts and their concatenations (not the strings
    inside the expressions it formats)."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else ""
    if isinstance(node, ast.JoinedStr):
        return "".join(literal(part) for part in node.values)
    if isinstance(node, ast.BinOp):
        return literal(node.left) + literal(node.right)
    return ""


def test_errors_name_options_as_the_user_types_them():
    keywords = {param.name for _, _, param in options() if isinstance(param, click.Option) and "_" in param.name}
    wrong = [f"{module}:{line} says {word} ({text[:60]!r})" for module, line, text in messages()
             for word in keywords if word in text.replace("--" + word.replace("_", "-"), "")
             and (module, word) not in LIBRARY_ONLY]
    assert not wrong, "\n".join(wrong)
    assert len(messages()) > 100  # the scan sees the package's messages


def test_library_only_messages_still_exist():
    """An entry that no longer matches a message is stale: the list must not hide a new message."""
    seen = {(module, word) for module, _, text in messages() for _, word in LIBRARY_ONLY if word in text}
    assert set(LIBRARY_ONLY) <= seen, set(LIBRARY_ONLY) - seen


@pytest.mark.parametrize("name", DATA_AND_POOLS)
def test_data_and_pool_defaults_agree_or_the_help_says_why(name):
    """Where a default differs between commands, each command whose default is not the most common one names the
    common default in its help (and so says that, and why, it differs); where no default is the most common, each
    names all the others."""
    found = {command: param for command, _, param in options() if param.name == name}
    counts = Counter(repr(param.default) for param in found.values())
    common, most = counts.most_common(1)[0]
    tied = sum(count == most for count in counts.values()) > 1
    for command, param in found.items():
        if repr(param.default) != common or tied:
            others = ({str(p.default) for p in found.values() if p.default != param.default} if tied
                      else {str(p.default) for p in found.values() if repr(p.default) == common})
            assert all(other in param.help for other in others), (command, name, others, param.help)


def test_the_pool_help_says_why_heads_and_units_use_different_pools():
    for command, _, param in options():
        if param.name == "pool":
            assert HEAD_POOL in param.help and UNIT_POOL in param.help, (command, param.help)


def test_the_readme_says_how_to_run_cliplens_and_where_the_cache_is(monkeypatch):
    import re

    from cliplens.text.embed import default_cache_dir

    readme = (SOURCE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/cliplens" in readme and "source .venv/bin/activate" in readme
    assert re.search(r"`make test` takes about \d+ minutes", readme)
    monkeypatch.delenv("CLIPLENS_CACHE", raising=False)
    default = str(default_cache_dir()).replace(str(Path.home()), "~")
    assert f"`{default}`" in readme and "$CLIPLENS_CACHE/text" in readme and f"rm -rf {default}" in readme
    root = SOURCE.parents[1].resolve()
    for target in re.findall(r"\]\(([^)#]+)", readme):  # a link points inside the repository, at a file there
        if not re.match(r"[a-z]+://", target):
            path = (root / target).resolve()
            assert path.is_relative_to(root) and path.exists(), target

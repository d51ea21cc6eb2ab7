"""What the commands share, and the only module a command imports from `cli`: their options (with the reference
repositories' flag names: --model, --data-path, ...), loading the model they name, declaring the optional extras they
need, and the tables they print.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

import click

from ..apps.segmentation import LENSES
from ..data.loader import MAX_BATCH_SIZE, MAX_WORKERS
from ..data.shards import Shard
from ..errors import CliplensError
from ..evaluate.ablation import MEAN_SOURCES
from ..evaluate.groups import PATTERN_HELP
from ..explain.tables import write_descriptions
from ..extras import require
from ..io.metadata import write_metadata
from ..lens import DTYPES
from ..stats.checkpoint import EVERY
from ..stats.distributed import rank_device
from ..text.candidates import HEAD_POOL, HEAD_POOL_TEMPLATES, UNIT_POOL, UNIT_POOL_TEMPLATES, pool_name
from ..text.pools import require_pool
from ..workflows.head_texts import HeadTexts
from ..settings import CONVENTIONS

Options = dict[str, Any]


def stacked(options: list[Callable]) -> Callable:
    """One decorator applying `options` so that they appear in --help in the order listed."""

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def before_body(hook: Callable[[Options], None]) -> Callable:
    """Run `hook` on the command's keyword arguments (it may refuse them, or regroup them in place) before its body,
    i.e. before it loads a model or reads data."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def command(*args: Any, **options: Any) -> Any:
            hook(options)
            return function(*args, **options)

        return command

    return decorate


def grouped(name: str, keys: tuple[str, ...]) -> Callable:
    """Hand the options `keys` to the command as one dict argument `name`, so the rest can go to the library as is."""
    return before_body(lambda options: options.update({name: {key: options.pop(key) for key in keys}}))


# loading the model ------------------------------------------------------------------------------------------------
# --device: where the model runs (also in commands that load several models, or none of model_options' others).
device_option = click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")

# --model --pretrained --device --precision --seed; the command receives them as one dict argument `model`.
model_options = stacked([
    click.option("--model", default="toy:vit", show_default=True,
                 help="open_clip id (ViT-B-32), hf:<repo or folder> (CLIP or SigLIP), timm:<name>, or toy:vit / "
                      "toy:rn."),
    click.option("--pretrained", default=None,
                 help="open_clip tag (openai) or checkpoint file; omit for the toys or a seeded random init."),
    device_option,
    click.option("--precision", type=click.Choice(list(DTYPES)), default="fp32", show_default=True,
                 help="Number format of the weights and the arithmetic: fp64 for exact checks, fp16 or bf16 to save "
                      "memory on a GPU."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of a random initialisation."),
    grouped("model", ("model", "pretrained", "device", "precision", "seed")),
])


def load_lens(model: Options):
    """The Lens named by model_options' dict; under torchrun, --device cuda is each rank's own GPU."""
    from ..factory import load

    return load(model["model"], model["pretrained"], device=rank_device(model["device"]), precision=model["precision"],
                seed=model["seed"])


# data, output and statistics --------------------------------------------------------------------------------------
# --batch-size --num-workers: how the images are read.
batch_options = stacked([
    click.option("--batch-size", type=click.IntRange(min=1, max=MAX_BATCH_SIZE), default=32, show_default=True,
                 help="Images per forward pass: larger is faster until memory runs out; results do not depend on it."),
    click.option("--num-workers", type=click.IntRange(min=0, max=MAX_WORKERS), default=0, show_default=True,
                 help="Processes that read and preprocess images while the model runs (0: read them in this one)."),
])

# --data-path --batch-size --num-workers.
data_options = stacked([
    click.option("--data-path", default="shapes:test:512", show_default=True,
                 help="Image folder, text file of paths, or shapes:<split>[:<n>[:<seed>]] for the built-in world."),
    batch_options,
])


def makeable_folder(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """click callback: refuse, before any work, an output folder that cannot be made (a name longer than the file
    system takes, a file on its way, no permission to write), which would otherwise be found once the results are
    written. Nothing is created here."""
    if value is None:
        return value
    folder = Path(value)
    try:
        existing = next(parent for parent in (folder.absolute(), *folder.absolute().parents) if parent.exists())
        longest = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    except OSError as exc:
        raise click.BadParameter(f"{value} cannot be made ({exc.strerror or exc})") from exc
    if any(len(os.fsencode(part)) > longest for part in folder.parts):
        raise click.BadParameter(f"a folder name in {value} is longer than the {longest} bytes the file system takes")
    if not existing.is_dir():
        raise click.BadParameter(f"{value} cannot be made: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{value} cannot be made: no permission to write in {existing}")
    return value


def output_folder_option(*names: str, **options: Any) -> Callable:
    """A folder the command writes to: checked to be makeable when the command line is read (`makeable_folder`)."""
    return click.option(*names, type=click.Path(file_okay=False, path_type=Path), callback=makeable_folder, **options)


def parse_list(text: str, what: str) -> list[str]:
    """A comma-separated option value (`--methods`, `--texts`) as its items, refused when it names none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise CliplensError(f"--{what} is empty; pass a comma-separated list")
    return items


def parse_counts(texts: str | None) -> list[int] | None:
    """`--texts`: the texts per head to sweep, as integers (None: the command's default sweep)."""
    try:
        return None if texts is None else [int(item) for item in parse_list(texts, "texts")]
    except ValueError:
        raise CliplensError(f"--texts must be comma-separated integers, got {texts!r}") from None


def output_option(default: str) -> Callable:
    return output_folder_option("--output-dir", default=default, show_default=True,
                                help="Folder for the results (created if missing).")


def long_run_options(shard_help: str | None) -> Callable:
    """--shard --checkpoint-every --checkpoint-dir --resume (--shard only with its help): what a run of hours needs.
    The command receives them as one dict argument `long_run`, ready for the library (checkpoints default to
    OUTPUT_DIR/checkpoints)."""

    def default_folder(options: Options) -> None:
        options["checkpoint_dir"] = options["checkpoint_dir"] or options["output_dir"] / "checkpoints"

    shard = [click.option("--shard", default=None, metavar="I/N", callback=lambda ctx, param, value: value and
                          Shard.parse(value), help=shard_help)] if shard_help else []
    return stacked([
        *shard,
        click.option("--checkpoint-every", type=click.IntRange(min=0), default=EVERY, show_default=True,
                     help="Save the running state every this many batches (0: never), so an interrupted run can "
                          "--resume."),
        output_folder_option("--checkpoint-dir", default=None,
                             help="Folder for the checkpoints  [default: OUTPUT_DIR/checkpoints]"),
        click.option("--resume", is_flag=True,
                     help="Continue from the checkpoint of an interrupted run with the same options (bit-identical "
                          "result); without one, start from the beginning."),
        before_body(default_folder),
        grouped("long_run", ("shard",) * bool(shard) + ("checkpoint_every", "checkpoint_dir", "resume")),
    ])

CONVENTION_HELP = ("Bias convention: separate (one explicit `bias` piece) or reference (LayerNorm and bias shares "
                   "spread over the pieces, as the papers' code).")

def stats_option(help: str) -> Callable:
    """--stats: a statistics folder the command reads (to `stats_path`); `help` says which kind and what it replaces."""
    return click.option("--stats", "stats_path", type=click.Path(exists=True, file_okay=False), default=None, help=help)


# --fit-path, where omitting it means in-sample statistics (commands whose means are not an evaluation's baseline).
fit_path_option = click.option("--fit-path", default=None,
                               help="Data to collect the statistics on (default: --data-path, i.e. in-sample means).")

# --stats --convention --normalize: which per-piece statistics the command works from.
statistics_options = stacked([
    stats_option("Statistics from `cliplens collect`; collected here over the fit data if omitted."),
    click.option("--convention", type=click.Choice(CONVENTIONS), default=None,
                 help="Bias convention of the pieces [default: the --stats artifact's, else separate]."),
    click.option("--normalize/--no-normalize", default=None,
                 help="Pieces of the unit embedding, as the references [default: the artifact's, else no]."),
])

# --templates: the zero-shot classifier's prompts, the same default in every command that classifies.
templates_option = click.option(
    "--templates", default="auto", show_default=True,
    help="Zero-shot classifier prompts: a template set (openai, simple, photo, none, shapes) or a format string with "
         "{}; auto: the shapes world's held-out prompts on shapes data, else the 80 OpenAI templates.")

# --fit-path --mean-source --label --templates: where the means come from and what is classified.
evaluation_options = stacked([
    click.option("--fit-path", default=None,
                 help="Reference data for the means (and fits) when no --stats is given [default: for shapes data, "
                      "the same split drawn with seed + 1]."),
    click.option("--mean-source", type=click.Choice(MEAN_SOURCES), default="reference", show_default=True,
                 help="reference: a separate set; eval: the evaluation data itself (in-sample, as the papers)."),
    click.option("--label", default=None,
                 help="shapes data: the attribute to classify (shape, colour, position, ...) [default: shape]."),
    templates_option,
])

# --stats --fit-path --top-k --templates: where the pair statistics and the classifier come from.
pair_fit_options = stacked([
    stats_option("Pair statistics from `cliplens collect --granularity pair`; collected here if omitted."),
    fit_path_option,
    click.option("--top-k", type=click.IntRange(min=1), default=50, show_default=True,
                 help="Top images kept per pair when collecting (the reference uses 50)."),
    templates_option,
])


# optional extras: checked before the command loads a model or reads data -------------------------------------------
def running_command() -> str:
    return f"cliplens {click.get_current_context().command.name}"


def needs(extra: str, *modules: str) -> Callable:
    """Declare that a command needs the optional `extra` (for `modules`): without it, one line says what to install."""
    return before_body(lambda options: require(extra, *modules, user=running_command()))


def needs_for_data(prefix: str, extra: str, *modules: str, option: str = "data_path") -> Callable:
    """Like `needs`, only when --data-path (or the data `option`) is of the `prefix` kind (a reader that needs the
    extra)."""

    def check(options: Options) -> None:
        if str(options[option]).startswith(prefix):
            require(extra, *modules, user=f"{running_command()} on {prefix} data")

    return before_body(check)


# segmentation (segment, analyze) -----------------------------------------------------------------------------------
def segment_options(*, required: bool) -> Callable:
    """--lens and the settings that change a segmentation's numbers (and --examples), as `segment` and `analyze --ask
    segment` take them; --mlp-layer is each command's own (analyze's also names its second-order layers)."""
    return stacked([
        click.option("--lens", "lenses", multiple=True, type=click.Choice(LENSES), required=required,
                     help="heads, second-order (ViT), pairs (ResNet), or the baselines attention, rollout (ViT), "
                          "gradcam, maskclip (ResNet), centre; repeat for several."),
        click.option("--last-layers", type=click.IntRange(min=1), default=4, show_default=True,
                     help="heads: read every head of this many last layers."),
        click.option("--heads", default=None,
                     help=f"heads: read these heads instead (comma-separated: {PATTERN_HELP})."),
        click.option("--top-neurons", type=click.IntRange(min=1), default=None,
                     help="second-order: per image and class, only the neurons adding most to it [default: all]."),
        click.option("--top-pairs", type=click.IntRange(min=1), default=None,
                     help="pairs: per image and class, only the neuron x head pairs adding most to it "
                          "[default: all]."),
        click.option("--threshold", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Foreground cut on the [0, 1] map [default: each map's mean]."),
        click.option("--examples", type=click.IntRange(min=0), default=6, show_default=True,
                     help="Images drawn in the overlay grid (0: no grid)."),
    ])


# text pools and OMP -------------------------------------------------------------------------------------------------
# Why head and unit commands name things with different pools by default (their --help says so).
POOL_REASONS = {
    HEAD_POOL: f"heads are named with image descriptions, as TextSpan does; neurons and pairs use {UNIT_POOL}",
    UNIT_POOL: f"neurons and pairs are named with single words, as in their papers; heads use {HEAD_POOL}",
    "shapes": "the shapes generator can draw only the world's words, whatever the data",
}
POOL_TEMPLATE_REASONS = {
    HEAD_POOL_TEMPLATES: f"descriptions are sentences already; the neuron and pair commands use "
                         f"{UNIT_POOL_TEMPLATES}, for single words",
    UNIT_POOL_TEMPLATES: f"a single word is embedded as 'a photo of <word>'; the head commands use "
                         f"{HEAD_POOL_TEMPLATES}, for descriptions that are sentences already",
}


def pool_options(usual_pool: str | None, default_templates: str | None, *,
                 uses_pool: Callable[[Options], bool] = lambda options: True) -> Callable:
    """--pool --pool-size --pool-templates: the candidate texts and the templates they are embedded with. The pool the
    command will use (when `uses_pool`) is checked for its optional extra first. None (analyze): each question's own,
    as its command would choose (the library checks the pool's extra then, before any pass)."""

    def require_extra(options: Options) -> None:
        if usual_pool is not None and uses_pool(options):
            require_pool(pool_name(options["pool"], options["data_path"], usual_pool), running_command())

    usual = (f"{usual_pool}: {POOL_REASONS[usual_pool]}" if usual_pool is not None else
             f"each question's own, as its command: {HEAD_POOL} for heads, {UNIT_POOL} for pairs")
    templates = (f"{default_templates} here: {POOL_TEMPLATE_REASONS[default_templates]}" if default_templates else
                 f"default: each question's own, as its command: {HEAD_POOL_TEMPLATES} for heads, "
                 f"{UNIT_POOL_TEMPLATES} for pairs")
    return stacked([
        click.option("--pool", default=None,
                     help="Text pool: words, descriptions, imagenet, shapes, or a file with one text per line "
                          f"[default: shapes for shapes:... data, else {usual}]."),
        click.option("--pool-size", type=click.IntRange(min=1), default=None, help="Keep the pool's first N texts."),
        click.option("--pool-templates", default=default_templates, show_default=default_templates is not None,
                     help="Templates the pool texts are embedded with: none, photo, simple, openai (the references' "
                          f"80 for neurons and pairs) or a format string with {{}}; {templates}."),
        before_body(require_extra),
    ])


def omp_only_options(default_atoms: int) -> Callable:
    """--omp-atoms --dict-norm: how many texts write each principal direction, and how the dictionary is scaled."""
    return stacked([
        click.option("--omp-atoms", type=click.IntRange(min=0), default=None,
                     help=f"Texts per principal direction (k of OMP), below the embedding width [default: "
                          f"{default_atoms}, at most half the pool and below the width]; 0 skips the text side."),
        click.option("--dict-norm", type=click.Choice(["row", "axis0"]), default="row", show_default=True,
                     help="OMP dictionary normalisation; axis0 reproduces the reference's word lists."),
    ])


def omp_options(default_atoms: int) -> Callable:
    """--omp-atoms --dict-norm, plus the pool options: the sparse-text side of neurons and pairs."""
    return stacked([
        pool_options(UNIT_POOL, UNIT_POOL_TEMPLATES, uses_pool=lambda options: options["omp_atoms"] != 0),
        omp_only_options(default_atoms),
    ])


texts_per_unit_option = click.option(
    "--texts-per-unit", type=click.IntRange(min=1), default=10, show_default=True,
    help="Words written per neuron or pair (its largest OMP coefficients).")


# the text commands (textspan, explain) ------------------------------------------------------------------------------
# Everything `cliplens textspan` and `cliplens explain` share.
explain_options = stacked([
    model_options, data_options, statistics_options, pool_options(HEAD_POOL, HEAD_POOL_TEMPLATES),
    click.option("--texts-per-head", type=click.IntRange(min=1), default=20, show_default=True,
                 help="textspan: texts per head; svd: texts per pole; omp: atoms per principal direction."),
    click.option("--num-last-layers", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Explain the heads of this many last layers."),
    click.option("--w-ov-rank", type=click.IntRange(min=1), default=80, show_default=True,
                 help="textspan: rank of the head's output span the texts are projected onto."),
    click.option("--max-components", type=click.IntRange(min=1), default=80, show_default=True,
                 help="svd: at most this many principal components per head (PCLens max_text)."),
    click.option("--num-directions", type=click.IntRange(min=1), default=3, show_default=True,
                 help="omp: top principal directions explained per head."),
    output_folder_option("--output-dir", default=None,
                 help="Folder for <method>.csv and metadata.json [default: cliplens-out/<method>]."),
])


def write_head_texts(explained: HeadTexts, output_dir: Path | None, command: str, model: str) -> None:
    """<method>.csv and metadata.json of a text command, and its one-line summary."""
    output_dir = Path(output_dir or f"cliplens-out/{explained.method}")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = write_descriptions(output_dir / f"{explained.method}.csv", explained.rows)
    write_metadata(output_dir, {"command": command, **explained.metadata})
    click.echo(f"{model}: {len(explained.heads)} heads of the last {explained.metadata['num_last_layers']} layers "
               f"explained with {explained.method} over {len(explained.texts)} texts of '{explained.pool}'; wrote "
               f"{path}")


# printed tables ---------------------------------------------------------------------------------------------------
def echo_accuracies(rows: list[tuple[str, float]]) -> None:
    for name, accuracy in rows:
        click.echo(f"  {name:<36} {100 * accuracy:6.2f}%")


def echo_pair_table(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        kept = f"{row['kept']}/{row['total']}" if row["kept"] is not None else ""
        click.echo(f"  {row['variant']:<28} {kept:>15}  {100 * row['accuracy']:6.2f}%")
    sample = "in-sample (means fitted on the evaluation data)" if rows[0]["in_sample"] else "out-of-sample"
    click.echo(f"  {rows[0]['images']} images, {sample}")

"""`cliplens ablate`: zero-shot accuracy with chosen pieces replaced by their mean (METHODS §2.1).

Each --components value is one variant (comma-separated patterns, ablated together); --preset adds the reference's
variants: `mlps` (every MLP plus embed), `cls` (TextSpan's table: the CLS→CLS attention cells, the MLPs, and both;
its means need per-token statistics, collected here when needed) or `layer-curve` (attention of layers 0..k, for
every k). One streaming pass
over --data-path scores them all. The means come from a separate reference set: --stats, or --fit-path collected
here, or by default (shapes data only) an independent draw of the same shapes split (seed + 1); --mean-source eval
uses the evaluation data itself, the references' in-sample protocol. The helpers below are shared with
`cliplens reconstruct`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ..data.loader import as_source, fingerprint
from ..errors import CliplensError
from ..evaluate.ablation import (
    MEAN_SOURCES, cls_variants, evaluate_variants, layer_curve, mlp_variants, nothing_ablated, pattern_variants,
    write_scores,
)
from ..evaluate.groups import PATTERN_HELP, split_patterns
from ..evaluate.zeroshot import source_classifier, source_prompts
from ..stats.collect import PieceStats
from .explain import piece_statistics, statistics_options, statistics_record, write_metadata
from .options import data_options, load_lens, model_options, output_option

PRESETS = {"mlps": mlp_variants, "cls": cls_variants, "layer-curve": layer_curve}


# shared with reconstruct -------------------------------------------------------------------------------------------
def evaluation_options(command: Callable) -> Callable:
    """--fit-path --mean-source --label --templates: where the means come from and what is classified."""
    for option in reversed([
        click.option("--fit-path", default=None,
                     help="Reference data for the means (and fits) when no --stats is given [default: for shapes "
                          "data, the same split drawn with seed + 1]."),
        click.option("--mean-source", type=click.Choice(MEAN_SOURCES), default="reference", show_default=True,
                     help="reference: a separate set; eval: the evaluation data itself (in-sample, as the papers)."),
        click.option("--label", default=None,
                     help="shapes data: the attribute to classify (shape, colour, position, ...) [default: shape]."),
        click.option("--templates", default=None,
                     help="Zero-shot templates: openai, simple, photo, none, shapes, or a format string with {} "
                          "[default: shapes on shapes data, else the 80 OpenAI templates]."),
    ]):
        command = option(command)
    return command


def evaluation_source(data_path: str, label: str | None) -> Any:
    """The labelled evaluation data; `label` re-labels a shapes split by another attribute."""
    source = as_source(data_path)
    if label is None:
        return source
    from ..shapes import ShapesDataset

    if not isinstance(source, ShapesDataset):
        raise CliplensError("--label applies to shapes:<split> data; an image folder is labelled by its class folders")
    return ShapesDataset(source.n, seed=source.seed, split=source.split, label=label, image_size=source.image_size)


def default_reference(source: Any) -> tuple[Any, str]:
    """A reference set independent of the evaluation data: the same shapes split drawn with the next seed."""
    from ..shapes import ShapesDataset

    if not isinstance(source, ShapesDataset):
        raise CliplensError("say where the means come from: --stats (from `cliplens collect`), --fit-path (reference "
                            "images), or --mean-source eval (in-sample means on the evaluation data)")
    reference = ShapesDataset(source.n, seed=source.seed + 1, split=source.split, label=source.label,
                              image_size=source.image_size)
    return reference, f"shapes:{source.split}:{source.n}:{source.seed + 1}"


def reference_statistics(
    lens: Any, options: dict[str, Any], source: Any, granularity: str | None, *, spatial: bool = False
) -> tuple[PieceStats, str]:
    """The statistics that supply means (and fits), and a description of where they came from."""
    stats_path, fit_path = options["stats_path"], options["fit_path"]
    if options["mean_source"] == "eval":
        if stats_path or fit_path:
            raise CliplensError("--mean-source eval takes the means from --data-path; drop --stats and --fit-path")
        data, where = source, f"{options['data_path']} (in-sample)"
    elif stats_path and fit_path:
        raise CliplensError("pass either --stats or --fit-path, not both")
    elif stats_path or fit_path:
        data, where = fit_path, stats_path or fit_path
    else:
        data, where = default_reference(source)
    stats = piece_statistics(lens, stats_path, data, convention=options["convention"], normalize=options["normalize"],
                             granularity=granularity, batch_size=options["batch_size"],
                             num_workers=options["num_workers"], spatial=spatial)
    return stats, where


def evaluation_record(source: Any, images: int, templates: str | None) -> dict[str, Any]:
    phrases, default = source_prompts(source)
    return {"fingerprint": fingerprint(source), "images": images, "classes": phrases,
            "templates": templates or (default if isinstance(default, str) else list(default)),
            "label": getattr(source, "label", None)}


def echo_rows(rows: list[tuple[str, float]]) -> None:
    for name, accuracy in rows:
        click.echo(f"  {name:<36} {100 * accuracy:6.2f}%")


# this command ------------------------------------------------------------------------------------------------------
@click.command("ablate")
@model_options
@data_options
@statistics_options
@evaluation_options
@click.option("--components", multiple=True,
              help=f"Pieces to mean-ablate together, comma-separated; repeat for more variants. "
                   f"Patterns: {PATTERN_HELP}.")
@click.option("--preset", "presets", type=click.Choice(list(PRESETS)), multiple=True,
              help="Reference variants: mlps; cls (CLS cells, MLPs, both: TextSpan's table); or layer-curve "
                   "(attention of layers 0..k mean-ablated, every k).")
@click.option("--granularity", type=click.Choice(["head", "layer"]), default=None,
              help="Pieces when collecting statistics here [default: head; with --stats, the artifact's].")
@output_option("cliplens-out/ablate")
def command(**options: Any) -> None:
    """Zero-shot accuracy with chosen pieces mean-ablated, scored in one pass over the data."""
    components, presets = options.pop("components"), options.pop("presets")
    if not components and not presets:
        raise CliplensError(f"nothing to ablate: pass --components (e.g. 'L3H*,mlps') or --preset {'|'.join(PRESETS)}")
    lens = load_lens(options)
    source = evaluation_source(options["data_path"], options["label"])
    stats, where = reference_statistics(lens, options, source, options["granularity"], spatial="cls" in presets)
    variants = [nothing_ablated()]
    for preset in dict.fromkeys(presets):  # presets share variants (mlps): each is scored once
        named = {variant.name for variant in variants}
        variants += [variant for variant in PRESETS[preset](stats.labels)[1:] if variant.name not in named]
    variants += pattern_variants(stats.labels, [split_patterns(text) for text in components])
    weights = source_classifier(lens, source, options["templates"])
    scores = evaluate_variants(lens, source, variants, weights, stats, batch_size=options["batch_size"],
                               num_workers=options["num_workers"], progress=True)
    output_dir: Path = options["output_dir"]
    path = write_scores(output_dir / "ablation.csv", scores, variants)
    write_metadata(output_dir, {
        "command": "ablate",
        "model": lens.describe(),
        "means": {**statistics_record(stats, where), "mean_source": options["mean_source"]},
        "evaluation": evaluation_record(source, scores.count, options["templates"]),
        "variants": {variant.name: list(variant.ablated) + (["CLS cells"] if variant.cls else [])
                     for variant in variants},
    })
    click.echo(f"{lens.name}: zero-shot accuracy on {scores.count} images, means from {where} ({path}):")
    echo_rows([("full model", scores.full_accuracy)] + [(name, scores.accuracy(name)) for name in scores.names]
              + [("chance", scores.chance)])

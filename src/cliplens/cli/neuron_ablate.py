"""`cliplens neuron-ablate`: the accuracy table of ResNet pair and neuron mean-ablation (METHODS §6.4–6.5).

One streaming pass scores every variant at once: the full model, the top x % of pairs or of neurons kept (the rest
replaced by their means) for each --keep, every pair rebuilt from its principal direction (exact: a check), and every
pair rebuilt from its OMP words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..data.loader import as_source
from ..evaluate.pair_ablation import (
    DEFAULT_KEEPS, PairAblation, ablation_table, check_keep, require_resnet, standard_variants, text_reconstruction,
)
from ..evaluate.zeroshot import source_classifier
from ..io.tables import write_rows
from .options import data_options, load_lens, model_options, output_option
from .pairs import PAIR_ATOMS, echo_table, fit_statistics, pair_fit_options
from .texts import UNIT_POOL, atom_count, candidate_texts, omp_options


@click.command("neuron-ablate")
@model_options
@data_options
@pair_fit_options
@omp_options(PAIR_ATOMS)
@click.option("--keep", "keeps", type=float, multiple=True, default=DEFAULT_KEEPS, show_default=True,
              help="Percentages of units kept by score (repeat the option for several).")
@click.option("--level", type=click.Choice(["pair", "neuron", "both"]), default="both", show_default=True,
              help="Mask whole neurons (all their heads), single pairs, or report both.")
@output_option("cliplens-out/neuron-ablate")
def command(**options: Any) -> None:
    """Zero-shot accuracy of a ResNet CLIP with most neuron×head pairs mean-ablated or rebuilt from text."""
    keeps = [check_keep(keep) for keep in options.pop("keeps")]
    lens = load_lens(options)
    require_resnet(lens, "cliplens neuron-ablate (ViT MLP neurons are ablated by `cliplens second-order`)")
    output_dir: Path = options["output_dir"]
    output_dir.mkdir(parents=True, exist_ok=True)
    data_path, batch_size, workers = options["data_path"], options["batch_size"], options["num_workers"]
    source = as_source(data_path)
    weights = source_classifier(lens, source, options["templates"])
    stats = fit_statistics(lens, options["stats_path"], options["fit_path"] or data_path, top_k=options["top_k"],
                           batch_size=batch_size, num_workers=workers, output_dir=output_dir)
    text, atoms = None, options["omp_atoms"]
    if atoms != 0:
        _, texts, embeddings = candidate_texts(lens, options, data_path, UNIT_POOL)
        atoms = atom_count(atoms, PAIR_ATOMS, len(texts))
        text, _ = text_reconstruction(stats, embeddings, texts, n_atoms=atoms, dict_norm=options["dict_norm"])
    levels = ("pair", "neuron") if options["level"] == "both" else (options["level"],)
    variants = standard_variants(PairAblation(stats, lens.device), keeps=keeps, levels=levels, text=text,
                                 text_label=f"text k={atoms}")
    rows = ablation_table(lens, source, weights, variants, stats, batch_size=batch_size, num_workers=workers,
                          progress=True)
    path = write_rows(output_dir / "ablation.csv", rows)
    click.echo(f"accuracy of {lens.name} with pairs mean-ablated or reconstructed ({path}):")
    echo_table(rows)

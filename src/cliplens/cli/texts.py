"""The text side every explaining command shares: which pool of candidate texts, how it is embedded, how many OMP
atoms, and the word tables they write.

A pool left unset follows the data: the shapes world's own vocabulary for `shapes:...` data, else the command's
default (descriptions for heads, common words for neurons and pairs, as in the papers).
"""

from __future__ import annotations

from typing import Any, Callable

import click
import torch

from ..errors import CliplensError
from ..explain.omp import SparseTextDecomposition

HEAD_POOL = "descriptions"  # heads are named with image descriptions
UNIT_POOL = "words"  # neurons and pairs with common words, as in their papers


def pool_options(usual_pool: str, default_templates: str) -> Callable:
    """--pool --pool-size --pool-templates: the candidate texts and the templates they are embedded with."""

    def decorate(command: Callable) -> Callable:
        for option in reversed([
            click.option("--pool", default=None,
                         help="Text pool: words, descriptions, imagenet, shapes, or a file with one text per line "
                              f"[default: shapes for shapes:... data, else {usual_pool}]."),
            click.option("--pool-size", type=click.IntRange(min=1), default=None,
                         help="Keep the pool's first N texts."),
            click.option("--pool-templates", default=default_templates, show_default=True,
                         help="Templates the pool texts are embedded with (the references: none for TextSpan, "
                              "the 80 'openai' ones for neurons and pairs)."),
        ]):
            command = option(command)
        return command

    return decorate


def omp_options(default_atoms: int) -> Callable:
    """--omp-atoms --dict-norm, plus the pool options: the sparse-text side of neurons and pairs."""

    def decorate(command: Callable) -> Callable:
        for option in reversed([
            pool_options(UNIT_POOL, "photo"),
            click.option("--omp-atoms", type=click.IntRange(min=0), default=None,
                         help=f"Texts per principal direction (k of OMP) [default: {default_atoms}, at most half the "
                              "pool]; 0 skips the text side."),
            click.option("--dict-norm", type=click.Choice(["row", "axis0"]), default="row", show_default=True,
                         help="OMP dictionary normalisation; axis0 reproduces the reference's word lists."),
        ]):
            command = option(command)
        return command

    return decorate


texts_per_unit_option = click.option(
    "--texts-per-unit", type=click.IntRange(min=1), default=10, show_default=True,
    help="Words written per neuron or pair (its largest OMP coefficients).")


def candidate_texts(lens: Any, options: dict[str, Any], data_path: str, usual_pool: str
                    ) -> tuple[str, list[str], torch.Tensor]:
    """(pool name, texts, unit embeddings [M, d]) for the pool options, the pool defaulting to the shapes vocabulary
    on `shapes:...` data and to `usual_pool` elsewhere; embeddings are float32, cached on disk per model."""
    from ..text import embed_texts, get_pool

    pool = options["pool"]
    if pool is None:
        pool = "shapes" if str(data_path).startswith("shapes:") else usual_pool
    texts = get_pool(pool, options["pool_size"])
    return pool, texts, embed_texts(lens, texts, templates=options["pool_templates"])


def atom_count(requested: int | None, default: int, pool_size: int) -> int:
    """k for OMP: the request if given (refused above the pool size), else `default` capped at half the pool, so that
    the default works on small pools such as the shapes vocabulary."""
    if requested is None:
        return min(default, max(1, pool_size // 2))
    if requested > pool_size:
        raise CliplensError(f"--omp-atoms {requested} exceeds the text pool ({pool_size} texts); ask for fewer")
    return requested


def word_rows(omp: SparseTextDecomposition, units: list[tuple[Any, int]], targets: list[int], texts_per_unit: int,
              method: str) -> list[dict[str, Any]]:
    """Description rows (layer, unit, description, similarity = OMP coefficient, rank, method) for chosen targets."""
    rows = []
    for (layer, unit), target in zip(units, targets):
        for rank, (text, coef) in enumerate(omp.texts_[target][:texts_per_unit]):
            rows.append({"layer": layer, "unit": unit, "description": text, "similarity": coef, "rank": rank,
                         "method": method})
    return rows

"""What the methods say about the shipped toys, checked against the shapes world's ground truth.

Exactness is tested elsewhere on random-init models; here the question is whether the explanations *mean* something:
the toys were trained on a world whose every attribute is known, so a word that names a pair, a neuron or a head can
be checked against the images that drive it. Numbers quoted in comments were measured on the shipped weights.
"""

from __future__ import annotations

import pytest
import torch

import cliplens
from cliplens.data.loader import as_source
from cliplens.evaluate.pair_ablation import (
    AccuracyBoard, PairAblation, Variant, pair_batches, standard_variants, text_reconstruction, top_mask,
)
from cliplens.evaluate.zeroshot import source_classifier
from cliplens.models.toy import shipped_toys
from cliplens.shapes import render
from cliplens.shapes.vocabulary import OBJECT_ATTRIBUTES, SCENE_ATTRIBUTES
from cliplens.text import embed_texts, get_pool

FIT_N, EVAL_N = 256, 256
FIT, EVAL = f"shapes:test:{FIT_N}:0", f"shapes:test:{EVAL_N}:1"


def shipped(name: str) -> str:
    if name not in shipped_toys():
        pytest.skip(f"toy:{name} weights are not shipped in this build")
    return f"toy:{name}"


def attribute_values(scene) -> set[str]:
    """Every word of the vocabulary that is true of a single-object scene (its shape, colour, ..., background)."""
    obj = scene.objects[0]
    return ({obj.attribute(name) for name in OBJECT_ATTRIBUTES if name != "roundness"}
            | {scene.background.attribute(name) for name in SCENE_ATTRIBUTES})


def enrichment(word: str, images: list[int], truths: list[set[str]]) -> tuple[float, float]:
    """(how often `word` is true of the chosen images, how often of all images)."""
    chosen = sum(word in truths[i] for i in images) / len(images)
    return chosen, sum(word in truth for truth in truths) / len(truths)


# ResNet neuron x head pairs (toy:rn) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rn():
    lens = cliplens.load(shipped("rn"))
    stats = lens.collect(FIT, granularity="pair", top_k=20)
    return lens, stats


def test_pair_words_name_what_drives_the_pair(rn):
    """The first positive word of a top pair's principal direction (OMP, 8 atoms over the world's vocabulary) is true
    of the images that push the pair along that direction far more often than of images at large.

    Measured: 10 of the 20 top pairs have their word on more than twice its base rate among their top-20 images,
    6 on at least 90 % (e.g. H2N20 'cyan' 100 % vs 15 %, H1N262 'dotted' 100 % vs 35 %, H2N118 'ring' 100 % vs 18 %).
    For a word unrelated to the pair, 20 images reach twice a base rate of 0.15-0.35 with probability <= 0.07, so
    about one chance success is expected among 20 pairs: requiring 5, and 3 near-unanimous, cannot pass by luck.
    """
    lens, stats = rn
    truths = [attribute_values(scene) for scene in render(FIT_N, seed=0, split="test")]
    pool = get_pool("shapes")
    _, omp = text_reconstruction(stats, embed_texts(lens, pool, templates="photo"), pool, n_atoms=8)
    deviations, images = stats.top_deviations()
    signs = stats.principal_signs()
    enriched = unanimous = 0
    for flat in stats.scores().flatten().argsort(descending=True)[:20].tolist():
        h, n = divmod(flat, stats.neurons)
        along = [i for d, i in zip(deviations[h, n].tolist(), images[h, n].tolist()) if d * signs[h, n] > 0]
        word = next(text for text, coefficient in omp.texts_[flat] if coefficient > 0)
        rate, base = enrichment(word, along, truths)
        enriched += rate > 2 * base
        unanimous += rate >= 0.9
    assert enriched >= 5 and unanimous >= 3, (enriched, unanimous)


def test_the_strongest_tenth_of_pairs_keeps_the_accuracy(rn):
    """Mean-ablating the 90 % weakest pairs (scores from the fit draw, accuracy on another draw) keeps shape accuracy
    within a few points; ablating the 90 % strongest instead collapses it, so the score ranking is what matters.

    Measured on 256 out-of-sample images (6 shapes, chance 16.7 %): baseline 97.7 %, strongest 10 % kept (231 of
    2,304 pairs) 95.7 %, weakest 10 % kept 18.8 %. A 256-image accuracy near 0.96 has a binomial std of 0.012, so the
    0.08 allowance is over 4 std beyond the measured 2-point loss, and 0.5 is over 10 std above the collapse.
    """
    lens, stats = rn
    source = as_source(EVAL)
    ablation = PairAblation(stats, lens.device)
    weakest = top_mask(-stats.scores(), 10.0)
    variants = standard_variants(ablation, keeps=[10.0], levels=("pair",)) + [
        Variant("weakest 10% kept", "pair", lambda dec: ablation.mean_ablated(dec.coefficients, weakest)),
    ]
    board = AccuracyBoard(source_classifier(lens, source, "auto"), variants)
    for dec, batch in pair_batches(lens, source, batch_size=64):
        board.update(dec, batch.labels)
    accuracy = {row["variant"]: row["accuracy"] for row in board.rows()}
    assert accuracy["baseline"] > 0.9, accuracy
    assert accuracy["pairs keep 10%"] >= accuracy["baseline"] - 0.08, accuracy
    assert accuracy["weakest 10% kept"] < 0.5, accuracy

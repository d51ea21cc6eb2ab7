"""Semantic adversarial images (docs/methods/adversarial.md): the word filters, the prompt generator's scenes and the
success bookkeeping.

The toy result is not asserted: on toy:vit (settings chosen on draw seed 0, measured on seed 1, 200 images per
condition and pair) the selected words do not beat random words (docs/methods/adversarial.md#toy-result).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cliplens.apps.adversarial import (Outcome, allowed_words, compose_prompts, random_words, run_condition,
                                       select_words)
from cliplens.cli import cli
from cliplens.errors import CliplensError
from cliplens.shapes.generator import ShapesGenerator, parse_prompt
from cliplens.shapes.vocabulary import COLOURS, POSITIONS


def basis(d: int = 6) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)


def pool():
    """Texts along the axes: 'square' (the target) on e0, 'box' close to it, 'red' on e1, 'blue' on e2, 'circle'
    (the source) on e3, 'green' on e4."""
    e = basis()
    embeddings = torch.stack([e[0], e[0] * 0.9 + e[5] * 0.436, e[1], e[2], e[3], e[4]])
    return ["square", "box", "red", "blue", "circle", "green"], embeddings


def test_the_target_name_and_close_words_are_never_chosen():
    texts, embeddings = pool()
    e = basis()
    # one neuron whose direction is the target's own text plus its near-synonym and red: the target would be its
    # strongest word, and 'box' (cosine 0.9 with the target) the next
    directions = (e[0] + 0.8 * e[5] + 0.3 * e[1])[None]
    choice = select_words(directions, torch.ones(1), texts, embeddings, e[3], e[0], source="circle", target="square",
                          neurons=1, words=5, atoms=3, threshold=0.6)
    assert "square" not in choice.words and "box" not in choice.words and "circle" not in choice.words
    assert choice.words == ["red"]
    assert set(choice.allowed) == {"red", "blue", "green"}
    loose = select_words(directions, torch.ones(1), texts, embeddings, e[3], e[0], source="circle",
                         target="square", neurons=1, words=5, atoms=3, threshold=0.95)
    assert "box" in loose.words and "square" not in loose.words


def test_allowed_words_drop_the_target_inside_a_phrase_and_follow_the_threshold():
    texts = ["a square", "squares", "red square thing", "red"]
    embeddings = torch.eye(4, dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    assert allowed_words(texts, embeddings, "square", target, 0.99) == [False, True, False, False]
    assert allowed_words(texts, embeddings, "square", target, 1.01) == [False, True, False, True]


def test_words_come_from_neurons_that_push_toward_the_target():
    texts, embeddings = pool()
    e = basis()
    # neuron 0 writes 'red' and pushes toward the target (along e0); neuron 1 writes 'blue' and pushes away
    directions = torch.stack([(e[1] + e[0]) / math.sqrt(2), (e[2] - e[0]) / math.sqrt(2)])
    choice = select_words(directions, torch.ones(2), texts, embeddings, e[3], e[0], source="circle", target="square",
                          neurons=2, words=5, atoms=2, threshold=0.6)
    assert choice.words == ["red"]
    assert choice.scores[0] > 0 > choice.scores[1]


def test_bad_threshold_and_empty_pool_are_refused():
    texts, embeddings = pool()
    e = basis()
    with pytest.raises(CliplensError, match="cosine"):
        select_words(e[:1], torch.ones(1), texts, embeddings, e[3], e[0], source="circle", target="square",
                     threshold=2.0)
    with pytest.raises(CliplensError, match="raise it"):
        select_words(e[:1], torch.ones(1), texts, embeddings, e[3], e[0], source="circle", target="square",
                     threshold=-1.0)


def test_prompts_mention_the_source_and_random_words_match_the_count():
    texts, embeddings = pool()
    e = basis()
    choice = select_words((e[1] + e[0])[None], torch.ones(1), texts, embeddings, e[3], e[0], source="circle",
                          target="square", neurons=1, words=2, atoms=3)
    rng = np.random.default_rng(0)
    assert len(random_words(choice, rng)) == len(choice.words)
    prompts = compose_prompts("circle", ["red", "top left", "stripes"], 5, 2, rng)
    assert len(prompts) == 5 and all(p.startswith("a circle, ") and p.count(",") == 2 for p in prompts)
    assert compose_prompts("circle", [], 3, 2, rng) == ["a circle"] * 3


def test_the_generator_puts_the_parsed_words_into_the_scene():
    prompt = "a circle, red, striped, small, top left, checker, beige, star"
    assert parse_prompt(prompt)[1] == ["circle", "star"]
    generator = ShapesGenerator()
    scene = generator.scene(prompt, 0, 3, seed=5)
    main = scene.objects[0]
    assert (main.shape, main.colour, main.texture, main.size, main.position) == (
        "circle", "red", "striped", "small", "top left")
    assert (scene.background.kind, scene.background.colour) == ("checker", "beige")
    assert len(scene.objects) == 2 and scene.objects[1].shape == "star" and scene.objects[1].position != "top left"
    pixels = np.asarray(scene.image)
    assert (pixels[scene.masks[0]] == COLOURS["red"]).all()
    rows, columns = np.nonzero(scene.masks[0])
    assert rows.max() < scene.image.height / 3 and columns.max() < scene.image.width / 3  # the top-left cell
    again = generator.scene(prompt, 0, 3, seed=5)
    assert np.array_equal(np.asarray(again.image), pixels)
    assert parse_prompt("a square in the top centre")[0]["position"] == "top centre"  # not "centre"
    assert {generator.scene("a ring", 0, i, seed=1).objects[0].position for i in range(40)} == set(POSITIONS)


class Fixed:
    """A generator that returns blank images; the scores below decide the classes."""

    def generate(self, prompts, per_prompt, seed):
        from PIL import Image

        return [Image.new("RGB", (8, 8)) for _ in prompts for _ in range(per_prompt)]


def test_success_counts_add_up():
    predicted = [0, 2, 2, 1, 2, 0]
    scores = lambda images: torch.nn.functional.one_hot(torch.tensor(predicted), 3).double()  # noqa: E731
    predictions, margins, images = run_condition(Fixed(), scores, ["a", "b", "c"], 2, 0, 0, 2)
    outcome = Outcome("circle", "square", "selected", [], ["a", "b", "c"], predictions, margins, 2, images)
    assert outcome.images == 6 and outcome.successes == 3 and outcome.rate == 0.5
    assert outcome.stderr == pytest.approx(math.sqrt(0.25 / 6))
    assert margins == [-1.0, 1.0, 1.0, 0.0, 1.0, -1.0]
    row = outcome.row()
    assert row["successes"] == round(row["success_rate"] * row["images"])


def test_the_command_writes_three_conditions_per_pair(tmp_path):
    out = tmp_path / "adv"
    result = CliRunner().invoke(cli, ["adversarial", "--data-path", "shapes:test:8", "--source", "circle",
                                      "--target", "square", "--source", "star", "--target", "cross", "--images", "5",
                                      "--prompts", "2", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "adversarial.csv").open()))
    assert [(r["source"], r["condition"]) for r in rows] == [
        (s, c) for s in ("circle", "star") for c in ("selected", "random", "none")]
    for r in rows:
        assert int(r["images"]) == 6  # 5 rounded up to 2 prompts × 3 images
        assert 0 <= int(r["successes"]) <= 6
        assert float(r["success_rate"]) == pytest.approx(int(r["successes"]) / 6)
        assert r["target"] not in r["words"].split(" | ") and r["source"] in r["prompts"]
    assert (out / "adversarial.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--source", "circle", "--source", "ring", "--target", "square"], "one --target per --source"),
    (["--source", "dog", "--target", "circle"], "unknown shape"),
    (["--source", "circle", "--target", "circle"], "equals its --target"),
])
def test_bad_pairs_are_refused_before_any_work(args, message, capsys):
    from cliplens.cli import main

    with pytest.raises(SystemExit) as raised, pytest.MonkeyPatch.context() as patch:
        patch.setattr("cliplens.cli.adversarial.load_lens", lambda model: pytest.fail("loaded a model"))
        main(["adversarial", *args])
    assert raised.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--images", "3", "--prompts", "4"], "exceeds --images"),
    (["--omp-atoms", "128"], "not below the embedding width"),
    (["--omp-atoms", "100", "--pool-size", "10"], "exceeds the text pool"),
])
def test_bad_counts_are_refused_before_the_pass(args, message, capsys):
    from cliplens.cli import main

    with pytest.raises(SystemExit) as raised, pytest.MonkeyPatch.context() as patch:
        patch.setattr("cliplens.workflows.adversarial.collect_second_order",
                      lambda *a, **k: pytest.fail("ran the pass"))
        main(["adversarial", "--source", "circle", "--target", "square", *args])
    assert raised.value.code == 2 and message in capsys.readouterr().err

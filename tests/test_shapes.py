"""The shapes world: determinism, exact masks (against a literal per-pixel oracle), split statistics, datasets."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from cliplens.errors import CliplensError
from cliplens.shapes import SPLITS, VOCABULARY, ShapesDataset, concept_names, render
from cliplens.shapes.captions import SPELLINGS, short_caption
from cliplens.shapes.background import NOISE_AMPLITUDE, second_tone
from cliplens.shapes.geometry import CIRCLE_RADIUS, POLYGONS, RING_INNER
from cliplens.shapes.prompts import TEMPLATES, class_phrases
from cliplens.shapes.splits import (
    SHIFT_COLOUR, SHIFT_YEARS, SPURIOUS_ALIGNED_GROUPS, SPURIOUS_GROUPS, shift_colour_probabilities,
)
from cliplens.shapes.vocabulary import BACKGROUND_COLOURS, COLOURS, ROUND_SHAPES


def _same(a, b) -> bool:
    return (
        np.array_equal(np.asarray(a.image), np.asarray(b.image))
        and a.objects == b.objects and a.background == b.background and a.captions == b.captions
        and a.extras == b.extras and all(np.array_equal(m, n) for m, n in zip(a.masks, b.masks))
    )


@pytest.mark.parametrize("split", SPLITS)
def test_render_is_deterministic_and_scenes_are_independent(split):
    first, again = render(12, seed=5, split=split), render(12, seed=5, split=split)
    assert all(_same(a, b) for a, b in zip(first, again))
    other = render(12, seed=6, split=split)
    assert not all(_same(a, b) for a, b in zip(first, other))
    if split != "shift":  # a shift scene's year depends on n, every other scene only on (seed, split, index)
        assert all(_same(a, b) for a, b in zip(first[7:], render(5, seed=5, split=split, start=7)))


def test_train_and_test_are_different_streams():
    train, test = render(20, seed=0, split="train"), render(20, seed=0, split="test")
    assert not any(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(train, test))


# --- the literal oracle: pixel centres, float64, one pixel at a time -------------------------------------------


def _winding_number(px: float, py: float, corners) -> int:
    """Classic signed-crossing winding number (a different rule from the renderer's even-odd count)."""
    winding = 0
    for (x0, y0), (x1, y1) in zip(corners, list(corners[1:]) + [corners[0]]):
        side = (x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)
        if y0 <= py < y1 and side > 0:
            winding += 1
        elif y1 <= py < y0 and side < 0:
            winding -= 1
    return winding


def _oracle_inside(shape: str, u: float, v: float) -> bool:
    if shape in POLYGONS:
        return _winding_number(u, v, POLYGONS[shape]) != 0
    rho = math.hypot(u, v)
    if shape == "circle":
        return rho <= CIRCLE_RADIUS
    assert shape == "ring"
    return RING_INNER <= rho <= 1.0


def _oracle_paints(texture: str, column: int, row: int, image_size: int) -> bool:
    unit = max(1, round(image_size / 32))
    if texture == "solid":
        return True
    if texture == "striped":
        return (row // unit) % 2 == 0
    return (column // unit) % 3 != 2 and (row // unit) % 3 != 2  # dotted: 2x2-unit dots, 1-unit gaps


def _oracle_mask(obj, image_size: int) -> np.ndarray:
    reach = max(math.hypot(u, v) for u, v in POLYGONS.get(obj.shape, ((1.0, 0.0),))) * obj.radius + 1.0
    mask = np.zeros((image_size, image_size), dtype=bool)
    cx, cy = obj.centre
    for row in range(image_size):
        for column in range(image_size):
            x, y = column + 0.5, row + 0.5
            if math.hypot(x - cx, y - cy) > reach:
                continue
            u, v = (x - cx) / obj.radius, (y - cy) / obj.radius
            mask[row, column] = _oracle_inside(obj.shape, u, v) and _oracle_paints(obj.texture, column, row, image_size)
    return mask


@pytest.mark.parametrize("split, image_size", [("probe", 96), ("segmentation", 96), ("train", 64)])
def test_masks_match_a_per_pixel_oracle_and_carry_the_object_colour(split, image_size):
    scenes = render(10, seed=11, split=split, image_size=image_size)
    seen = {obj.shape for scene in scenes for obj in scene.objects}
    assert len(seen) >= 5  # the oracle must see (almost) every shape to mean anything
    for scene in scenes:
        pixels = np.asarray(scene.image)
        assert pixels.shape == (image_size, image_size, 3)
        union = np.zeros(pixels.shape[:2], dtype=int)
        for obj, mask in zip(scene.objects, scene.masks):
            assert np.array_equal(mask, _oracle_mask(obj, image_size)), (scene.index, obj.shape)
            assert mask.any()
            assert (pixels[mask] == obj.rgb).all()
            union += mask
        assert union.max() <= 1  # objects never overlap, so every painted pixel belongs to exactly one mask


def test_colour_alone_recovers_every_mask():
    """Object colours are out of reach of every background pixel (noise included), so the pixels carrying an
    object's colour are exactly its mask."""
    for colour in COLOURS.values():
        for background in BACKGROUND_COLOURS.values():
            for tone in (np.asarray(background), second_tone(background)):
                assert np.abs(np.asarray(colour) - tone.astype(int)).max() > NOISE_AMPLITUDE
    for scene in render(150, seed=2, split="train"):
        pixels = np.asarray(scene.image)
        obj, mask = scene.objects[0], scene.masks[0]
        assert np.array_equal((pixels == obj.rgb).all(-1), mask)


def test_vocabulary_is_rich_and_well_separated():
    assert len(VOCABULARY["shape"]) >= 6 and len(VOCABULARY["colour"]) >= 8 and len(VOCABULARY["position"]) == 9
    for key in ("size", "texture", "background", "background colour", "roundness"):
        assert len(VOCABULARY[key]) >= 2
    rgb = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert distances[~np.eye(len(rgb), dtype=bool)].min() > 80  # "well separated": > 80 RGB levels apart


def test_captions_state_only_true_facts_in_their_words():
    for split in ("train", "spurious-train", "probe"):
        for scene in render(40, seed=4, split=split):
            assert len(scene.captions) >= 3
            for caption in scene.captions:
                assert caption.facts
                for index, name, value in caption.facts:
                    truth = scene.background if index == -1 else scene.objects[index]
                    assert truth.attribute(name) == value
                    assert value in caption.text
                if split.startswith("spurious"):  # the label caption must not give the answer away
                    assert not {name for _, name, _ in caption.facts} & {"shape", "background"}



def test_short_captions_are_one_or_two_true_values_in_a_few_words():
    rng = np.random.default_rng(0)
    for split, roundness in (("train", False), ("spurious-train", True)):
        for scene in render(40, seed=4, split=split):
            caption = short_caption(scene.objects[0], scene.background, rng, roundness=roundness)
            assert 1 <= len(caption.facts) <= 2 and len(caption.text.split()) <= 6
            for index, name, value in caption.facts:
                owner = scene.background if index == -1 else scene.objects[0]
                assert owner.attribute(name) == value
                spelled = {value, " ".join(SPELLINGS.get(word, word) for word in value.split())}
                assert any(form in caption.text for form in spelled), (caption, value)
            if roundness:  # the label scenes keep their rule: never named by shape or background
                assert not {name for _, name, _ in caption.facts} & {"shape", "background", "background colour"}

def test_spurious_split_statistics():
    """P(place == label) is 0.95 in train and 0.05 in test. With n scenes the estimate's binomial std is
    sqrt(0.95 * 0.05 / n) = 0.0056 at n = 1500; 4 std (0.023) makes a false failure a 6e-5 event."""
    n = 1500
    for split, rate in (("spurious-train", 0.95), ("spurious-test", 0.05)):
        scenes = render(n, seed=8, split=split)
        labels = np.array([s.extras["label"] for s in scenes])
        places = np.array([s.extras["place"] for s in scenes])
        assert abs((labels == places).mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / n)
        assert abs(labels.mean() - 0.5) < 4 * math.sqrt(0.25 / n)
        for scene in scenes[:200]:
            obj = scene.objects[0]
            assert scene.extras["label"] == (obj.shape in ROUND_SHAPES)
            assert scene.extras["group"] == 2 * scene.extras["label"] + scene.extras["place"]
            aligned = SPURIOUS_GROUPS[scene.extras["group"]] in SPURIOUS_ALIGNED_GROUPS
            assert aligned == (scene.extras["label"] == scene.extras["place"])
            assert scene.background.kind == ("stripes", "checker")[scene.extras["place"]]
            assert obj.size == "small"


def test_shift_drift_is_monotone():
    probabilities = np.stack([shift_colour_probabilities(year) for year in range(SHIFT_YEARS)])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=0, atol=1e-12)
    drifting = list(COLOURS).index(SHIFT_COLOUR)
    assert (np.diff(probabilities[:, drifting]) > 0).all()
    others = np.delete(probabilities, drifting, axis=1)
    assert (np.diff(others, axis=0) < 0).all()

    n = 2000
    scenes = render(n, seed=3, split="shift")
    years = np.array([s.extras["year"] for s in scenes])
    assert (np.diff(years) >= 0).all() and years[0] == 0 and years[-1] == SHIFT_YEARS - 1
    is_drifting = np.array([s.objects[0].colour == SHIFT_COLOUR for s in scenes])
    # Halves of the year range: expected frequencies are the mean probabilities; each estimate has binomial
    # std <= sqrt(0.25 / 1000) = 0.016 and the gap between halves is 0.25, so 4 std each cannot blur the order.
    halves = [years < SHIFT_YEARS // 2, years >= SHIFT_YEARS // 2]
    observed = [is_drifting[h].mean() for h in halves]
    expected = [probabilities[years[h], drifting].mean() for h in halves]
    for got, want, members in zip(observed, expected, halves):
        assert abs(got - want) < 4 * math.sqrt(want * (1 - want) / members.sum())
    assert observed[0] < observed[1]


def test_segmentation_and_probe_scenes():
    for scene in render(30, seed=9, split="segmentation"):
        assert 2 <= len(scene.objects) <= 3
        assert len({o.shape for o in scene.objects}) == len({o.colour for o in scene.objects}) == len(scene.objects)
        assert {o.texture for o in scene.objects} == {"solid"}
        label_map = scene.label_map()
        for k, mask in enumerate(scene.masks, start=1):
            assert np.array_equal(label_map == k, mask)
        assert ((label_map == 0) == ~np.any(scene.masks, axis=0)).all()
    names = set(concept_names())
    for scene in render(30, seed=9, split="probe"):
        assert 1 <= len(scene.objects) <= 3
        assert scene.concepts <= names
        for obj in scene.objects:
            assert {obj.shape, obj.colour, obj.position, obj.size, obj.texture, obj.roundness} <= scene.concepts
        assert f"{scene.background.kind} background" in scene.concepts


def test_dataset_protocol_and_fingerprint():
    dataset = ShapesDataset(25, seed=4, split="test", label="colour")
    assert len(dataset) == 25 and dataset.classnames == VOCABULARY["colour"]
    scenes = render(25, seed=4, split="test")
    for index in (0, 13, 24):
        image, label = dataset[index]
        assert np.array_equal(np.asarray(image), np.asarray(scenes[index].image))
        assert dataset.classnames[label] == scenes[index].objects[0].colour
    with pytest.raises(IndexError):
        dataset[25]

    base = dict(n=25, seed=4, split="test", label="colour")
    assert ShapesDataset(**base).fingerprint == dataset.fingerprint
    variants = [dict(base, n=26), dict(base, seed=5), dict(base, split="train"), dict(base, label="shape")]
    assert len({ShapesDataset(**v).fingerprint for v in variants} | {dataset.fingerprint}) == 5

    groups = ShapesDataset(40, split="spurious-test", label="group")
    assert all(groups.classnames[label] for _, label in (groups[i] for i in range(5)))
    background = ShapesDataset(10, split="probe", label="background")
    assert background.classnames[background[3][1]] == background.scene(3).background.kind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=5, split="segmentation", label="shape"), "ambiguous"),
        (dict(n=5, split="nope"), "unknown shapes split"),
        (dict(n=5, label="weight"), "unknown label"),
        (dict(n=-1), "non-negative"),
        (dict(n=5, split="test", label="year"), "unknown label"),
    ],
)
def test_bad_requests_are_one_line_errors(kwargs, message):
    with pytest.raises(CliplensError, match=message):
        ShapesDataset(**kwargs)


def test_zero_shot_prompts_differ_from_training_captions():
    captions = {c.text.rstrip(".") for scene in render(300, seed=0, split="train") for c in scene.captions}
    for attribute in ("shape", "colour", "position", "roundness"):
        prompts = [template.format(phrase) for phrase in class_phrases(attribute) for template in TEMPLATES]
        assert not {p.rstrip(".") for p in prompts} & captions
        assert len(class_phrases(attribute)) == len(VOCABULARY[attribute])


# Pixels and captions of the first 16 scenes (seed 0) of every split. The shipped toys were trained on this exact
# stream: if a change moves any of these, bump RENDERER_VERSION and retrain the toys (see the model card).
GOLDEN = {
    "train": "d6a7f3a5e7612725", "test": "47b1151f3f086fcb", "spurious-train": "68f0d3641f1d8eea",
    "spurious-test": "7afbadbdc81d27ff", "shift": "48fcd9da7cf796c5", "segmentation": "4969251cb063dfb7",
    "probe": "286bd90fa44dbbf2",
}


@pytest.mark.parametrize("split", SPLITS)
def test_golden_stream(split):
    digest = hashlib.sha256()
    for scene in render(16, seed=0, split=split):
        digest.update(np.asarray(scene.image).tobytes())
        for caption in scene.captions:
            digest.update(caption.text.encode())
    assert digest.hexdigest()[:16] == GOLDEN[split]

"""What each split of the shapes world draws: attribute values per object, background, split-specific labels.

- `train` / `test`: one object, every attribute uniform and independent (i.i.d.; distinct random streams).
- `spurious-train` / `spurious-test`: one small object; the label y (1 = round shape, 0 = angular) is fair; the
  background "place" (0 = stripes, 1 = checker) equals y with probability 0.95 in train and 0.05 in test
  (Waterbirds-like, with the correlation reversed). group = 2 * y + place.
- `shift`: one object; image i of n has year floor(i * YEARS / n), and the colour "yellow" becomes more frequent each
  year (every other colour less), for concept tracking.
- `segmentation`: 2-3 solid objects with distinct shapes, colours and grid cells (clean per-object masks).
- `probe`: 1-3 objects in distinct cells, everything uniform; scenes carry concept annotations for neuron labelling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scene import Background
from .vocabulary import BACKGROUND_COLOURS, BACKGROUNDS, COLOURS, POSITIONS, ROUND_SHAPES, SHAPES, SIZES, TEXTURES

SPLITS: tuple[str, ...] = ("train", "test", "spurious-train", "spurious-test", "shift", "segmentation", "probe")
SINGLE_OBJECT_SPLITS = frozenset({"train", "test", "spurious-train", "spurious-test", "shift"})

SPURIOUS_PLACES: tuple[str, ...] = ("stripes", "checker")
SPURIOUS_MATCH_RATE = {"spurious-train": 0.95, "spurious-test": 0.05}
SPURIOUS_SIZE = "small"  # the label-bearing object is small next to the background, as a bird is next to a lake
SPURIOUS_GROUPS: tuple[str, ...] = ("angular on stripes", "angular on checker", "round on stripes", "round on checker")


def spurious_group(label: int, place: int) -> int:
    """Index into SPURIOUS_GROUPS of an image with this label (1 = round) on this place (1 = checker)."""
    return 2 * label + place


# The groups where the background agrees with the label: the cue helps there and misleads in the other two.
SPURIOUS_ALIGNED_GROUPS: tuple[str, ...] = tuple(SPURIOUS_GROUPS[spurious_group(y, y)] for y in (0, 1))

SHIFT_YEARS = 10
SHIFT_COLOUR = "yellow"
SHIFT_FREQUENCY = (0.05, 0.5)  # frequency of SHIFT_COLOUR in the first and the last year

_ANGULAR = tuple(s for s in SHAPES if s not in ROUND_SHAPES)
_ROUND = tuple(s for s in SHAPES if s in ROUND_SHAPES)
_COLOURS = tuple(COLOURS)
_SIZES = tuple(SIZES)
_BACKGROUND_COLOURS = tuple(BACKGROUND_COLOURS)


@dataclass(frozen=True)
class Layout:
    objects: tuple[dict[str, str], ...]  # attribute values per object: shape, colour, size, position, texture
    background: Background
    extras: dict[str, int]
    caption_style: str  # "world" or "roundness"


def shift_year(index: int, n: int, years: int = SHIFT_YEARS) -> int:
    return index * years // n


def shift_colour_probabilities(year: int, years: int = SHIFT_YEARS) -> np.ndarray:
    """Colour distribution of a shift year, in `COLOURS` order; SHIFT_COLOUR rises linearly, the rest share the rest."""
    first, last = SHIFT_FREQUENCY
    drifting = first + (last - first) * year / max(1, years - 1)
    probabilities = np.full(len(COLOURS), (1.0 - drifting) / (len(COLOURS) - 1))
    probabilities[list(COLOURS).index(SHIFT_COLOUR)] = drifting
    return probabilities


def _pick(rng: np.random.Generator, values, p: np.ndarray | None = None) -> str:
    """One value, uniform or with probabilities p (rng.choice is several times slower for these tiny draws)."""
    if p is None:
        return values[int(rng.integers(len(values)))]
    return values[min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), len(values) - 1)]


def _uniform_object(rng: np.random.Generator, position: str) -> dict[str, str]:
    return {
        "shape": _pick(rng, SHAPES), "colour": _pick(rng, _COLOURS), "size": _pick(rng, _SIZES),
        "position": position, "texture": _pick(rng, TEXTURES),
    }


def _uniform_background(rng: np.random.Generator) -> Background:
    return Background(_pick(rng, BACKGROUNDS), _pick(rng, _BACKGROUND_COLOURS))


def _spurious(split: str, rng: np.random.Generator) -> Layout:
    label = int(rng.random() < 0.5)
    place = label if rng.random() < SPURIOUS_MATCH_RATE[split] else 1 - label
    obj = _uniform_object(rng, _pick(rng, POSITIONS))
    obj["shape"] = _pick(rng, _ROUND if label else _ANGULAR)
    obj["size"] = SPURIOUS_SIZE
    background = Background(SPURIOUS_PLACES[place], _pick(rng, _BACKGROUND_COLOURS))
    extras = {"label": label, "place": place, "group": spurious_group(label, place)}
    return Layout((obj,), background, extras, "roundness")


def _several(rng: np.random.Generator, counts: tuple[int, ...], distinct: bool) -> Layout:
    k = int(rng.choice(counts))
    cells = rng.choice(len(POSITIONS), size=k, replace=False)
    objects = [_uniform_object(rng, POSITIONS[cell]) for cell in cells]
    if distinct:  # distinct shapes and colours, solid fill: every mask is a whole, nameable region
        shapes = rng.choice(len(SHAPES), size=k, replace=False)
        colours = rng.choice(len(COLOURS), size=k, replace=False)
        for obj, shape, colour in zip(objects, shapes, colours):
            obj.update(shape=SHAPES[shape], colour=_COLOURS[colour], texture="solid")
    return Layout(tuple(objects), _uniform_background(rng), {}, "world")


def sample_layout(split: str, index: int, n: int, rng: np.random.Generator) -> Layout:
    if split in ("train", "test"):
        return Layout((_uniform_object(rng, _pick(rng, POSITIONS)),), _uniform_background(rng), {}, "world")
    if split in SPURIOUS_MATCH_RATE:
        return _spurious(split, rng)
    if split == "shift":
        year = shift_year(index, n)
        obj = _uniform_object(rng, _pick(rng, POSITIONS))
        obj["colour"] = _pick(rng, _COLOURS, p=shift_colour_probabilities(year))
        return Layout((obj,), _uniform_background(rng), {"year": year}, "world")
    if split == "segmentation":
        return _several(rng, (2, 3), distinct=True)
    if split == "probe":
        return _several(rng, (1, 2, 3), distinct=False)
    raise ValueError(f"unknown split {split!r}")

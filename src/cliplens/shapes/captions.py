"""Captions of a scene, each paired with the facts it asserts.

A scene gets one full caption and several partial ones that mention a random subset of attributes ("a red shape in
the centre"). Partial captions are what teach a CLIP model the marginal concepts that zero-shot prompts ask about;
their facts let a trainer know which other images a caption is also true of. Spurious-split scenes are captioned by
their binary label ("a round shape"), never by shape name or background, the way web captions name the bird and
not the lake. Short captions ("red", "circle, top left") are a few words with no sentence around them: what probes
such as CLIP-Dissect embed raw.
"""

from __future__ import annotations

import numpy as np

from .scene import Background, Caption, ShapeObject
from .vocabulary import SCENE_ATTRIBUTES

PREFIXES = ("", "a photo of ", "an image of ", "a picture of ")
NOUNS = ("shape", "object")
PARTIAL_CAPTIONS = 3

# probability that a partial caption mentions each attribute
MENTION = {
    "shape": 0.6, "colour": 0.5, "size": 0.35, "texture": 0.3, "position": 0.45,
    "background": 0.3, "background colour": 0.25,
}
ROUNDNESS_MENTION = {"colour": 0.3, "size": 0.2, "texture": 0.2, "position": 0.3}
WORLD_ATTRIBUTES = ("shape", "colour", "size", "texture", "position", "background", "background colour")
ROUNDNESS_ATTRIBUTES = ("roundness", "colour", "size", "texture", "position")
SPELLINGS = {"centre": "center", "grey": "gray"}  # the variants a probe's word list may use
SHORT_SINGLE = 0.6  # a short caption names one value this often, else two


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(obj: ShapeObject, mentioned: frozenset[str], rng: np.random.Generator) -> str:
    adjectives = [obj.attribute(name) for name in ("size", "colour", "texture", "roundness") if name in mentioned]
    noun = obj.shape if "shape" in mentioned else NOUNS[int(rng.integers(len(NOUNS)))]
    words = " ".join(adjectives + [noun])
    phrase = f"{_article(words)} {words}"
    return phrase + (f" in the {obj.position}" if "position" in mentioned else "")


def _background_phrase(background: Background, mentioned: frozenset[str]) -> str:
    words = [background.colour] if "background colour" in mentioned else []
    words += [background.kind] if "background" in mentioned else []
    return f" on {_article(words[0])} {' '.join(words)} background" if words else ""


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _caption(
    objects: tuple[ShapeObject, ...], background: Background, mentioned: frozenset[str], rng: np.random.Generator
) -> Caption:
    body = _join([_object_phrase(obj, mentioned, rng) for obj in objects]) + _background_phrase(background, mentioned)
    text = PREFIXES[int(rng.integers(len(PREFIXES)))] + body + ("." if rng.random() < 0.3 else "")
    facts = {(k, name, obj.attribute(name)) for k, obj in enumerate(objects) for name in mentioned
             if name not in SCENE_ATTRIBUTES}
    facts |= {(-1, name, background.attribute(name)) for name in mentioned if name in SCENE_ATTRIBUTES}
    return Caption(text, frozenset(facts))


def _subset(probabilities: dict[str, float], rng: np.random.Generator, always: frozenset[str]) -> frozenset[str]:
    """A random set of attributes to mention; never empty, since `always` is added or the draw is repeated."""
    while True:
        chosen = always | {name for name, p in probabilities.items() if rng.random() < p}
        if chosen:
            return frozenset(chosen)


def world_captions(
    objects: tuple[ShapeObject, ...], background: Background, rng: np.random.Generator
) -> tuple[Caption, ...]:
    """The full caption first, then partial ones."""
    full = _caption(objects, background, frozenset(WORLD_ATTRIBUTES), rng)
    partial = [_caption(objects, background, _subset(MENTION, rng, frozenset()), rng) for _ in range(PARTIAL_CAPTIONS)]
    return (full, *partial)


def roundness_captions(obj: ShapeObject, background: Background, rng: np.random.Generator) -> tuple[Caption, ...]:
    """Captions naming only the binary label and optional non-shape object attributes."""
    full = _caption((obj,), background, frozenset(ROUNDNESS_ATTRIBUTES), rng)
    partial = [_caption((obj,), background, _subset(ROUNDNESS_MENTION, rng, frozenset({"roundness"})), rng)
               for _ in range(PARTIAL_CAPTIONS)]
    return (full, *partial)


def short_caption(obj: ShapeObject, background: Background, rng: np.random.Generator, *,
                  roundness: bool = False) -> Caption:
    """One or two attribute values of a single-object scene with no sentence around them ("red", "circle top left",
    "top left, grey background"), each word half the time in American spelling; background values carry the word
    "background", as the probe concepts do (`scene.concept_names`). A roundness scene keeps its rule: it is never
    named by shape or background."""
    names = ROUNDNESS_ATTRIBUTES if roundness else WORLD_ATTRIBUTES
    chosen = [names[i] for i in rng.choice(len(names), size=1 if rng.random() < SHORT_SINGLE else 2, replace=False)]
    values = [(name, (background if name in SCENE_ATTRIBUTES else obj).attribute(name)) for name in chosen]
    phrases = [f"{value} background" if name in SCENE_ATTRIBUTES else value for name, value in values]
    words = [" ".join(SPELLINGS.get(word, word) if rng.random() < 0.5 else word for word in phrase.split())
             for phrase in phrases]
    text = (", " if rng.random() < 0.5 else " ").join(words)
    facts = frozenset((-1 if name in SCENE_ATTRIBUTES else 0, name, value) for name, value in values)
    return Caption(text, facts)

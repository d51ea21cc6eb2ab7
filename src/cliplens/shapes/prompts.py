"""Zero-shot prompts for the shapes world, deliberately unlike the training captions.

Training captions read "a photo of a red circle in the centre"; these wrap a class phrase in templates that never
occur in training ("a rendering of a red object."), so zero-shot accuracy measures what the model learned about the
words, not a memorised sentence.
"""

from __future__ import annotations

from ..errors import CliplensError
from .vocabulary import VOCABULARY

TEMPLATES: tuple[str, ...] = (
    "a rendering of {}.", "an illustration of {}.", "this is {}.", "{}, drawn on a background.",
)

_PHRASES = {
    "shape": "{article} {value}",
    "colour": "{article} {value} object",
    "size": "{article} {value} object",
    "texture": "{article} {value} object",
    "roundness": "{article} {value} shape",
    "position": "an object in the {value}",
    "background": "an object on {article} {value} background",
    "background colour": "an object on {article} {value} background",
}


def class_phrases(attribute: str) -> list[str]:
    """One phrase per value of `attribute`, in VOCABULARY order (the class order of ShapesDataset labels)."""
    if attribute not in _PHRASES:
        raise CliplensError(f"no zero-shot prompts for {attribute!r}; choose one of {', '.join(_PHRASES)}")
    pattern = _PHRASES[attribute]
    return [
        pattern.format(article="an" if value[0] in "aeiou" else "a", value=value) for value in VOCABULARY[attribute]
    ]

"""Prompt templates: format strings with exactly one "{}" where the text goes.

The 80 OpenAI ImageNet templates (and the 7-template subset) are taken from open_clip, which stores them as lambdas;
calling each lambda with the literal "{}" turns it back into a format string. Named sets let commands say
`--templates openai` instead of listing prompts.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

from ..errors import CliplensError

TemplateSpec = Union[str, Sequence[str]]


def _as_format_strings(templates: Sequence[str | Callable[[str], str]]) -> tuple[str, ...]:
    return tuple(template("{}") if callable(template) else template for template in templates)


def openai_imagenet_templates() -> tuple[str, ...]:
    """The 80 prompt templates OpenAI used for zero-shot ImageNet ("a bad photo of a {}.", ...)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return _as_format_strings(OPENAI_IMAGENET_TEMPLATES)


def simple_imagenet_templates() -> tuple[str, ...]:
    """OpenAI's 7-template subset ("itap of a {}.", ...), cheaper and nearly as accurate."""
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return _as_format_strings(SIMPLE_IMAGENET_TEMPLATES)


TEMPLATE_SETS: dict[str, Callable[[], tuple[str, ...]]] = {
    "none": lambda: ("{}",),
    "photo": lambda: ("a photo of a {}.",),
    "simple": simple_imagenet_templates,
    "openai": openai_imagenet_templates,
}


def check_template(template: str) -> str:
    """The template itself, if it has exactly one "{}" and no other braces; otherwise a CliplensError."""
    rest = template.replace("{}", "", 1) if isinstance(template, str) else "{"
    if "{" in rest or "}" in rest or "{}" not in template:
        raise CliplensError(f'prompt template {template!r} must contain exactly one "{{}}" and no other braces')
    return template


def resolve_templates(spec: TemplateSpec) -> tuple[str, ...]:
    """Templates from a set name ("none", "photo", "simple", "openai") or an explicit list of format strings."""
    if isinstance(spec, str):
        if spec in TEMPLATE_SETS:
            return TEMPLATE_SETS[spec]()
        if "{}" not in spec:
            raise CliplensError(
                f"unknown template set {spec!r}: use one of {', '.join(TEMPLATE_SETS)} or a format string with {{}}"
            )
        return (check_template(spec),)
    templates = tuple(check_template(template) for template in spec)
    if not templates:
        raise CliplensError("the template list is empty; pass at least one template such as '{}'")
    return templates


def fill(template: str, text: str) -> str:
    """The prompt for one text; replaces the placeholder without interpreting braces inside the text."""
    return template.replace("{}", text, 1)

"""Concept discovery in one image, the call behind `cliplens discover` (docs/methods/discovery.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..apps.discovery import Discovery, discover, discovery_figure
from ..data.folders import Unreadable, open_image, printable
from ..data.loader import as_source
from ..errors import CliplensError
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..text.candidates import HEAD_POOL, candidate_texts, check_candidates
from ..text.embed import embed_texts

if TYPE_CHECKING:
    from ..lens import Lens

TABLE, FIGURE = "discovery.csv", "discovery.png"


@dataclass
class DiscoveryResult:
    discovery: Discovery
    image: Image.Image
    metadata: dict[str, Any]


def pick_image(image: Any, data_path: Any, index: int | None) -> tuple[Image.Image, str]:
    """The image to explain: a file, or image `index` of `data_path`; and how to name it."""
    if (image is None) == (index is None):
        raise CliplensError("give an IMAGE file or --index (an image of --data-path), not both and not neither")
    if image is not None:
        try:
            return open_image(image), str(image)
        except Unreadable as exc:
            raise CliplensError(f"cannot read the image {printable(os.fspath(image))!s}: {exc}") from None
    source = as_source(data_path)
    if not 0 <= index < len(source):
        raise CliplensError(f"--index {index} is out of range: {data_path} has {len(source)} images")
    item = source[index]
    return (item[0] if isinstance(item, tuple) else item), f"{data_path}[{index}]"


def discover_image(
    lens: Lens, image: Any = None, *, data_path: Any = "shapes:test:512", index: int | None = None,
    text: str | None = None, pool: str | os.PathLike | None = None, pool_size: int | None = None,
    pool_templates: str = "none", top: int = 8, words: int = 3, granularity: str | None = None,
) -> DiscoveryResult:
    """The image's largest pieces for `text` (default: the pool text it scores highest), their words and maps."""
    pool_data = data_path if image is None else image
    check_candidates(pool_data, HEAD_POOL, pool=pool, pool_templates=pool_templates)
    picture, name = pick_image(image, data_path, index)
    pool_name, texts, embeddings = candidate_texts(lens, pool_data, HEAD_POOL, pool=pool, pool_size=pool_size,
                                                   pool_templates=pool_templates)
    text_embedding = None if text is None else embed_texts(lens, [text], templates=pool_templates)[0]
    found = discover(lens, picture, texts, embeddings, text=text, text_embedding=text_embedding, top=top,
                     words=words, granularity=granularity)
    metadata = {"model": lens.describe(), "image": name, "text": found.text, "score": found.score,
                "text_given": text is not None, "pool": {"name": str(pool_name), "size": len(texts),
                                                          "templates": pool_templates},
                "top": top, "words": words, "granularity": granularity, "convention": "separate"}
    return DiscoveryResult(found, picture, metadata)


def write_discovery(result: DiscoveryResult, output_dir: str | os.PathLike) -> Path:
    """`discovery.csv` (the listed pieces, then the rest), `discovery.png` and `metadata.json`."""
    return write_folder(output_dir, {
        TABLE: lambda file: write_table(file, "discovery", result.discovery.rows),
        FIGURE: lambda file: discovery_figure(result.discovery, result.image).save(file, format="PNG"),
    }, result.metadata)

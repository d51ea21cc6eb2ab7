"""Unit text embeddings of a pool, averaged over prompt templates, cached on disk per model.

Explainers embed the same pools again and again (30,000 words × 80 templates is 2.4 M text forward passes), so the
result is stored as an artifact keyed by everything that determines it: the model fingerprint, the texts in order,
the templates and the text precision. The metadata repeats those fields and loading checks them, so an entry made
for one model is refused for another even if a file is copied or renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch

from ..errors import CliplensError, require_positive_int
from ..io.artifacts import check_shapes, load_artifact, save_artifact
from ..io.atomic import stamped_record
from ..progress import progress_bar
from .templates import TemplateSpec, fill, resolve_templates

EncodeText = Callable[[list[str]], torch.Tensor]
KIND = "text_embeddings"


class TextEncoder(Protocol):
    """What `embed_texts` needs from a lens."""

    name: str
    fingerprint: str
    precision: str

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...


def template_average(
    encode_text: EncodeText, texts: Sequence[str], templates: Sequence[str] = ("{}",), batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """[M, d] float32: per text, the renormalised mean of its unit template embeddings (CLIP's zero-shot recipe).

    Each encoder call takes whole texts, batch_size // K of them (at least one) with all K templates, so every text
    is averaged in one fixed-order reduction (deterministic on any device) and memory stays O(M·d).
    """
    if not texts or not templates:
        raise CliplensError("template averaging needs at least one text and one template")
    texts_per_call = max(1, batch_size // len(templates))
    rows = []
    bar = progress_bar(len(texts), f"embed texts x {len(templates)} templates", "text", progress)
    with torch.no_grad():
        for start in range(0, len(texts), texts_per_call):
            chunk = texts[start : start + texts_per_call]
            prompts = [fill(template, text) for text in chunk for template in templates]
            embeddings = encode_text(prompts).float().reshape(len(chunk), len(templates), -1)
            embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
            centroids = embeddings.mean(1)
            rows.append(centroids / centroids.norm(dim=-1, keepdim=True))
            bar.update(len(chunk))
    bar.close()
    return torch.cat(rows)


def default_cache_dir() -> Path:
    """`$CLIPLENS_CACHE/text`, or `~/.cache/cliplens/text` when the variable is unset."""
    return Path(os.environ.get("CLIPLENS_CACHE", "~/.cache/cliplens")).expanduser() / "text"


def _identity(lens: TextEncoder, texts: list[str], templates: tuple[str, ...]) -> dict[str, object]:
    return {
        "kind": KIND,
        "fingerprint": lens.fingerprint,
        "precision": lens.precision,
        "templates": list(templates),
        "texts": texts,
    }


def cache_path(
    lens: TextEncoder,
    texts: Sequence[str],
    templates: TemplateSpec = "none",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """The cache folder for these texts under this lens: a SHA-256 of (fingerprint, texts, templates, precision)."""
    identity = _identity(lens, list(texts), resolve_templates(templates))
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / digest[:32]


def _checked_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
        raise CliplensError("no texts to embed; pass at least one text")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise CliplensError(f"cannot embed {text!r}: every text must be a non-empty string (strip your pool first)")
    return texts


def _predates_digests(path: Path) -> bool:
    """An entry cached before artifacts recorded tensor digests cannot be verified: it is rebuilt in place."""
    record = stamped_record(path)
    return record is not None and "files" not in record


def embed_texts(
    lens: TextEncoder,
    texts: Sequence[str],
    *,
    templates: TemplateSpec = "none",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> torch.Tensor:
    """Unit-norm float32 text embeddings [M, d] on the CPU, one row per text, loaded from the cache when present
    (with `progress`, a bar while they are computed)."""
    texts = _checked_texts(texts)
    templates = resolve_templates(templates)
    require_positive_int("batch_size", batch_size)
    identity = _identity(lens, texts, templates)
    path = cache_path(lens, texts, templates, cache_dir)
    if path.exists() and not _predates_digests(path):
        tensors, metadata = load_artifact(path, expect=identity, fields={"dim": int})
        check_shapes(path, tensors, {"embeddings": (len(texts), metadata["dim"])})
        return tensors["embeddings"]
    embeddings = template_average(lens.encode_text, texts, templates, batch_size, progress).cpu()
    save_artifact(path, {"embeddings": embeddings}, {**identity, "model": lens.name, "dim": embeddings.shape[1]})
    return embeddings

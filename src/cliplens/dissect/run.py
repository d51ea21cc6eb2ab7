"""The CLIP-Dissect pipeline: judge the probe images and concepts with CLIP, record the target's activations on the
same images, and match every neuron to its best concept (docs/methods/dissect.md#pipeline)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..data.loader import LoadReport, batches, fingerprint, stream
from ..errors import CliplensError, require_positive_int
from ..io.tables import SCHEMAS
from ..progress import progress_over
from ..text.embed import template_average
from ..text.templates import resolve_templates
from .cache import Cache
from .sets import probe_source
from .similarity import DEFAULT_SIMILARITY, similarity_function
from .targets import Target, check_reduction, hooked, reduce_output

if TYPE_CHECKING:
    from ..lens import Lens

COLUMNS = SCHEMAS["dissection"]  # the reference's columns
Tensors = dict[str, torch.Tensor]


@dataclass
class LayerDissection:
    """One layer: Sim [K, M] and the reduced activations A [N, K] it was computed from."""

    layer: str
    similarity: torch.Tensor
    activations: torch.Tensor

    @property
    def labels(self) -> list[int]:
        return self.similarity.argmax(1).tolist()

    def top_images(self, unit: int, n: int) -> list[int]:
        """Rows of the probe (positions in `Dissection.positions`) that activate `unit` most, most first."""
        return self.activations[:, unit].topk(min(n, self.activations.shape[0])).indices.tolist()


@dataclass
class Dissection:
    target: str
    concepts: list[str]  # the encoded list, which labels index
    positions: torch.Tensor  # [N] probe positions of the images used (unreadable ones skipped)
    layers: dict[str, LayerDissection]
    config: dict[str, Any]
    clip_similarity: torch.Tensor  # P [N, M]: the judge's image–concept cosines every layer was matched against
    seconds: dict[str, float] = field(default_factory=dict)
    report: LoadReport | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One row per neuron in the CLIP-Dissect schema layer,unit,description,similarity."""
        rows = []
        for name, layer in self.layers.items():
            best, index = layer.similarity.max(1)
            rows += [{"layer": name, "unit": unit, "description": self.concepts[c], "similarity": float(value)}
                     for unit, (value, c) in enumerate(zip(best.tolist(), index.tolist()))]
        return rows

    def table(self) -> Any:
        """The rows as a pandas DataFrame when pandas is installed, else as a list of dicts."""
        try:
            import pandas
        except ImportError:
            return self.rows()
        return pandas.DataFrame(self.rows(), columns=list(COLUMNS))


def _text_embeddings(judge: Lens, concepts: list[str], templates: tuple[str, ...], cache: Cache) -> torch.Tensor:
    key = {"model": str(judge.fingerprint), "precision": judge.precision, "texts": concepts,
           "templates": list(templates)}
    return cache.fetch("text", key, lambda: {"embeddings": template_average(judge.encode_text, concepts, templates)}
                       )["embeddings"]


def _image_embeddings(judge: Lens, source: Any, probe_key: str, cache: Cache, options: dict) -> Tensors:
    def compute() -> dict[str, torch.Tensor]:
        report = LoadReport()
        chunks, positions = [], []
        for batch in stream(judge, source, report=report, description="CLIP pass", **options):
            chunks.append(judge.encode_image(batch.images).float().cpu())
            positions.append(batch.indices)
        return {"embeddings": torch.cat(chunks), "positions": torch.cat(positions)}

    key = {"model": str(judge.fingerprint), "precision": judge.precision, "preprocess": repr(judge.preprocess),
           "probe": probe_key}
    return cache.fetch("images", key, compute)


@torch.no_grad()
def record(target: Target, source: Any, layers: Sequence[str], *, pool: str = "avg", tokens: str = "cls",
           batch_size: int = 32, num_workers: int = 0, progress: bool = False) -> dict[str, torch.Tensor]:
    """{layer: A [N, K]} plus "positions" [N]: one forward pass over `source`, batch by batch, hooks removed after."""
    check_reduction(pool, tokens)
    modules = target.layers(list(layers))
    report = LoadReport()
    positions = []
    with hooked(modules, lambda output: reduce_output(output, pool, tokens, target.sequence_first)) as recorded:
        for batch in batches(source, target.preprocess, batch_size=batch_size, num_workers=num_workers,
                             report=report, progress=progress, description="target pass"):
            target.module(batch.images.to(target.device, target.dtype))
            positions.append(batch.indices)
    if report.loaded == 0:
        raise CliplensError(f"no readable images in the probe set ({report.summary()}); check the path")
    return {"positions": torch.cat(positions), **{name: torch.cat(chunks) for name, chunks in recorded.items()}}


def _activations(target: Target, source: Any, probe_key: str, layers: list[str], cache: Cache, pool: str,
                 tokens: str, options: dict) -> Tensors:
    """Per-layer cache entries; one pass records all the layers that missed."""
    keys = {name: {"model": target.fingerprint, "probe": probe_key, "layer": name, "pool": pool, "tokens": tokens}
            for name in layers}
    fresh: Tensors = {}

    def compute(name: str) -> Tensors:
        if not fresh:  # the first miss records every layer without an entry, in one pass
            stored = [layer for layer in layers if cache.folder and cache.path("activations", keys[layer]).exists()]
            fresh.update(record(target, source, [layer for layer in layers if layer not in stored], pool=pool,
                                tokens=tokens, **options))
        return {"activations": fresh[name], "positions": fresh["positions"]}

    entries = {name: cache.fetch("activations", keys[name], lambda name=name: compute(name)) for name in layers}
    positions = entries[layers[0]]["positions"]
    if any(not torch.equal(entry["positions"], positions) for entry in entries.values()):
        raise CliplensError("cached activations of these layers cover different probe images; pass --no-cache")
    return {"positions": positions, **{name: entry["activations"] for name, entry in entries.items()}}


def dissect(
    target: Target, judge: Lens, probe: Any, concepts: Sequence[str], layers: Sequence[str], *,
    similarity: str = DEFAULT_SIMILARITY, similarity_options: dict[str, Any] | None = None, pool: str = "avg",
    tokens: str = "cls", template: str = "none", batch_size: int = 32, num_workers: int = 0,
    cache_dir: Any = None, progress: bool = False,
) -> Dissection:
    """Label every neuron of `layers` of `target` with its best concept as judged by the CLIP `judge`.

    `probe`: anything `probe_source` takes; `concepts`: the concept strings (empty ones refused: see
    `sets.concept_set`); `template`: "none" (raw concepts, as the reference), a template set name or a format
    string with {}; `cache_dir`: a folder for the caches, or None for none."""
    function = similarity_function(similarity)
    options = dict(similarity_options or {})
    check_reduction(pool, tokens)
    require_positive_int("--batch-size", batch_size)
    concepts = list(concepts)
    if not concepts or any(not isinstance(c, str) or not c.strip() for c in concepts):
        raise CliplensError("the concept set is empty or has empty entries; drop empty lines before dissecting")
    templates = resolve_templates(template)
    layers = list(dict.fromkeys(layers))
    target.layers(layers)  # names checked before any pass
    source = probe_source(probe)
    probe_key = fingerprint(source)
    cache = Cache(cache_dir)
    passes = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    seconds = {}
    started = time.perf_counter()
    text = _text_embeddings(judge, concepts, templates, cache)
    seconds["clip_text"] = time.perf_counter() - started
    started = time.perf_counter()
    images = _image_embeddings(judge, source, probe_key, cache, passes)
    seconds["clip_images"] = time.perf_counter() - started
    started = time.perf_counter()
    activations = _activations(target, source, probe_key, layers, cache, pool, tokens, passes)
    seconds["target"] = time.perf_counter() - started
    common, in_clip, in_target = _common(images["positions"], activations["positions"])
    image_features = torch.nn.functional.normalize(images["embeddings"][in_clip].float(), dim=-1)
    P = image_features @ torch.nn.functional.normalize(text.float(), dim=-1).T  # [N, M] cosines
    started = time.perf_counter()
    results = {}
    for name in progress_over(layers, "similarity", "layer", progress):
        A = activations[name][in_target]
        results[name] = LayerDissection(name, function(P, A, **options), A)
    seconds["similarity"] = time.perf_counter() - started
    config = {"target": target.name, "target_fingerprint": target.fingerprint, "judge": judge.name,
              "judge_fingerprint": str(judge.fingerprint), "probe": str(probe), "probe_fingerprint": probe_key,
              "images": len(common), "concepts": len(concepts), "layers": layers, "similarity": similarity,
              "similarity_options": options, "pool": pool, "tokens": tokens, "templates": list(templates),
              "cache": {"hits": cache.hits, "misses": cache.misses}}
    return Dissection(target.name, concepts, common, results, config, P, seconds)


def _common(clip: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Probe positions both passes could read, and where each pass holds them (a file one preprocess refuses is
    dropped from both)."""
    if torch.equal(clip, target):
        every = torch.arange(len(clip))
        return clip, every, every
    common = clip[torch.isin(clip, target)]
    if len(common) == 0:
        raise CliplensError("no probe image was readable by both the judge and the target")
    return common, torch.searchsorted(clip, common), torch.searchsorted(target, common)

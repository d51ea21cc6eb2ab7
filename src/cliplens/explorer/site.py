"""Writing the explorer: a folder that opens from the file system with no server and no network.

Browsers refuse `fetch()` of `file://` URLs, so data travels as small JavaScript files that call back into the page
(`explorer.overview({...})`), added as <script> tags when needed: the overview's file at once, a unit family's file
when one of its pages opens, the search index on the first search. The folder is flat (the atomic folder writer
replaces only flat folders it wrote) and written as one unit.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from ..io.atomic import write_folder
from ..labels import match_label
from .sources import Findings

CHUNK = 256  # neurons (or pairs) per unit data file: a page loads one file of this many units, never a whole layer
THUMB_WIDTH = 960  # pixels: grids are shown at most this wide
SEARCH_HITS = 50  # units kept per word of the search index, the strongest texts first
TOP = 12  # units listed per family and score on the overview
STATIC = ("index.html", "explorer.js", "explorer.css")


def chunk_key(label: str) -> str:
    """The data file a unit's page reads (explorer.js's `chunkKey` is the same rule)."""
    piece = match_label(label)
    if piece is None:
        return "other"
    if piece.kind == "head" and piece.layer is not None:
        return f"L{piece.layer}H"
    if piece.kind == "neuron":
        return f"L{piece.layer}N{piece.neuron // CHUNK}" if piece.layer is not None else f"N{piece.neuron // CHUNK}"
    if piece.kind == "pair":
        return f"H{piece.head}N{piece.neuron // CHUNK}"
    return "other"


def family(label: str) -> str:
    """Which overview list a unit belongs to."""
    piece = match_label(label)
    if piece is None:
        return "other pieces"
    if piece.kind == "head":
        return "heads" if piece.layer is not None else "pool heads"
    return {"neuron": "neurons", "pair": "pairs"}.get(piece.kind, "other pieces")


def _compact(value: Any) -> Any:
    """Floats to 4 significant digits: the report shows scores, not bits, and the ViT-H overview stays small."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_compact(item) for item in value]
    return value


def _script(call: str, payload: Any) -> str:
    text = json.dumps(_compact(payload), ensure_ascii=False, separators=(",", ":"))
    return f"explorer.{call}({text.replace('</', '<' + chr(92) + '/')});\n"  # no "</script>" inside a page


def overview(findings: Findings) -> dict[str, Any]:
    """What the first page needs: the layer × head grid, per-layer strips of neuron and pair scores, the strongest
    units per score, the whole-model tables; no texts (those load with each unit's page)."""
    layers, heads = findings.shape.get("layers", 0), findings.shape.get("heads", 0)
    grid: dict[str, list[list[float | None]]] = {}
    strips: dict[str, dict[str, dict[str, list[float | None]]]] = defaultdict(lambda: defaultdict(dict))
    sizes = {"L": findings.shape.get("neurons", 0), "H": findings.shape.get("pool neurons", 0)}
    others, by_family = [], defaultdict(list)
    for label, unit in findings.units.items():
        piece, scores = match_label(label), unit["scores"]
        kind = family(label)
        by_family[kind].append(label)
        if kind == "heads" and piece.layer < layers and piece.head < heads:
            for name, value in scores.items():
                grid.setdefault(name, [[None] * heads for _ in range(layers)])[piece.layer][piece.head] = value
        elif kind in ("neurons", "pairs") and (piece.layer is not None or piece.head is not None) and scores:
            row = f"L{piece.layer}" if piece.layer is not None else f"H{piece.head}"
            for name, value in scores.items():
                strip = strips[kind][row].setdefault(name, [None] * sizes[row[0]])
                if piece.neuron < len(strip):
                    strip[piece.neuron] = value
        elif scores or kind == "pool heads":
            others.append([label, scores])
    return {
        "model": findings.model, "runs": findings.runs, "shape": findings.shape, "chunk": CHUNK, "grid": grid,
        "strips": {kind: _levels(dict(sorted(rows.items(), key=lambda row: int(row[0][1:]))))  # L0, L1, ... / H0, ...
                   for kind, rows in strips.items()},
        "others": others, "top": _top(findings, by_family),
        "ablations": findings.ablations, "tables": findings.tables,
    }


def _levels(rows: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    """Strips carry colours, not values (those are on each unit's page): a level 0-99 on one scale per score shared
    by every row (-1: no value), a third of the size of the numbers for a ViT-H's 163,840 neurons."""
    scale, levels = {}, defaultdict(dict)
    for name in sorted({name for scores in rows.values() for name in scores}):
        values = [v for scores in rows.values() for v in scores.get(name, []) if v is not None]
        low, high = (min(values), max(values)) if values else (0.0, 0.0)
        scale[name] = [low, high]
        for key, scores in rows.items():
            if name in scores:
                levels[key][name] = [-1 if v is None else round(99 * (v - low) / ((high - low) or 1)) for v in
                                     scores[name]]
    return {"scale": scale, "rows": levels}


def _top(findings: Findings, by_family: dict[str, list[str]]) -> dict[str, dict[str, list[list[Any]]]]:
    """The TOP units per family and score, largest first."""
    top: dict[str, dict[str, list[list[Any]]]] = {}
    for kind, labels in by_family.items():
        names = {name for label in labels for name in findings.units[label]["scores"]}
        for name in sorted(names):
            scored = [(findings.units[label]["scores"][name], label) for label in labels
                      if name in findings.units[label]["scores"]]
            scored.sort(reverse=True)
            top.setdefault(kind, {})[name] = [[label, value] for value, label in scored[:TOP]]
    return top


def search_index(findings: Findings) -> dict[str, dict[str, list[str]]]:
    """Per two-letter prefix (one data file each, loaded when a query starts with it): word -> units whose texts hold
    it, SEARCH_HITS at most per word, those where it ranks highest among the unit's texts first (values of different
    methods are not comparable; ranks are), heads before the many neurons."""
    order = {"heads": 0, "pool heads": 1, "pairs": 2, "neurons": 3}
    hits: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for label, unit in findings.units.items():
        poles = unit.get("poles", {}).values()
        lists = [*unit["texts"].values(), *(side for pole in poles for side in pole.values())]
        best: dict[str, int] = {}
        for texts in lists:
            for rank, (text, _) in enumerate(texts):
                for word in _words(text):
                    best[word] = min(best.get(word, rank), rank)
        for word, rank in best.items():
            hits[word].append((rank, order.get(family(label), 4), label))
    index: dict[str, dict[str, list[str]]] = defaultdict(dict)
    for word, found in sorted(hits.items()):
        index[word[:2]][word] = [label for *_, label in sorted(found)[:SEARCH_HITS]]
    return index


def _words(text: str) -> set[str]:
    """Lower-case words of two or more ASCII letters or digits (a data file name is made from their first two)."""
    return {word for word in "".join(c.lower() if c.isascii() and c.isalnum() else " " for c in text).split()
            if len(word) > 1}


def _thumbnail(source: Path) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        with Image.open(source) as image:
            if image.width <= THUMB_WIDTH:
                shutil.copyfile(source, target)
            else:
                image.resize((THUMB_WIDTH, round(image.height * THUMB_WIDTH / image.width))).save(target, format="PNG")
    return write


def _static(name: str) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        with resources.as_file(resources.files(__package__) / "static" / name) as source:
            shutil.copyfile(source, target)
    return write


def _text(text: str) -> Callable[[Path], None]:
    return lambda target: target.write_text(text, encoding="utf-8")


def write_site(findings: Findings, output_dir: Path) -> Path:
    """index.html, the script and style, data-*.js and thumb-*.png in `output_dir`, written as one unit."""
    chunks: dict[str, dict[str, Any]] = defaultdict(dict)
    for label, unit in findings.units.items():
        chunks[chunk_key(label)][label] = unit
    writers: dict[str, Callable[[Path], None]] = {name: _static(name) for name in STATIC}
    index = search_index(findings)
    writers["data-overview.js"] = _text(_script("overview", {**overview(findings), "chunks": sorted(chunks),
                                                             "searchable": sorted(index)}))
    writers.update({f"data-search-{prefix}.js": _text(_script("search", words)) for prefix, words in index.items()})
    for key, units in chunks.items():
        writers[f"data-{key}.js"] = _text(_script("units", units))
    writers.update({name: _thumbnail(source) for name, source in findings.images.items()})
    writers.update(findings.renders)
    record = {"kind": "report", "model": findings.model, "runs": findings.runs}
    return write_folder(output_dir, writers, record)

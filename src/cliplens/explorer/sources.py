"""Reading the output folders of cliplens commands: the one module that knows their file names and columns.

Artifacts (statistics) are read with the library's loaders, which check them; CSV tables are read by the column names
below, so a renamed column is a one-place change here. Everything is gathered per unit label (`L3H1`, `L1N5`,
`H2N7`, `N7`, `H2`, see `cliplens.labels`) into plain dictionaries the site writer turns into JSON.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import ImageOps
from safetensors import SafetensorError, safe_open

from ..data.loader import analyzed_fit_source
from ..errors import CliplensError
from ..io.artifacts import ANALYSIS, load_artifact
from ..io.atomic import METADATA, stamped_record
from ..io.compat import MODEL_KEY, describe_model
from ..labels import match_component, match_label, neuron_label, pair_label
from ..report.grids import to_image
from ..stats.collect import load_stats

# columns of the tables read here (docs/outputs.md describes them)
DESCRIPTION, METHOD, DIRECTION, POLE = "description", "method", "direction", "pole"
TEXT_VALUES = ("similarity", "coefficient", "variance_explained")  # a description row fills the one its method gives
TEXTSPAN, EXPLAINED = "textspan", "variance_explained"
KEPT = "textspan variance kept"  # a head's score: the share of its variance its TextSpan texts reconstruct
LABEL_COLUMNS = ("label", "piece", "component")  # the columns that name a row's unit
POLES = ("+", "-")
WHOLE_TABLE_ROWS = 100  # a smaller table that is neither texts nor a ranking is about the model: shown whole
LINKS_PER_NEURON = 3  # heads a neuron is linked to: the largest head coordinates of its principal direction
LINKS_PER_HEAD = 20  # neurons listed on a head's page: those with the largest coordinates on it
MAPS = "-maps"  # retrieve's maps over each top image: <label>-maps.safetensors and its overlay grid <label>-maps.png
MAP_TENSORS = ("patches", "other_tokens", "index", "score")
HEAD_IMAGES = "head-images"  # an analysis's part: the images at both ends of each head's principal components
THUMB = 64  # pixels: those images are shown small, each distinct image once
ENDS = (("top", "dominant"), ("bottom", "opposite"))  # which kept end lies towards which text pole


@dataclass
class Findings:
    """Everything the report shows: per unit, and the tables that are about the whole model."""

    model: dict[str, Any]
    runs: list[dict[str, str]] = field(default_factory=list)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    ablations: list[dict[str, Any]] = field(default_factory=list)  # variant, pieces, accuracy, full accuracy
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "folder/file.csv" -> its rows
    images: dict[str, Path] = field(default_factory=dict)  # thumbnail name -> source PNG
    renders: dict[str, Callable[[Path], None]] = field(default_factory=dict)  # thumbnail name -> its writer
    shape: dict[str, int] = field(default_factory=dict)  # layers, heads (ViT) or pool heads (ResNet)

    def unit(self, label: str) -> dict[str, Any]:
        return self.units.setdefault(label, {"scores": {}, "texts": {}})

    def score(self, label: str, name: str, value: float) -> None:
        if math.isfinite(value):
            self.unit(label)["scores"][name] = value


def model_of(folder: Path) -> dict[str, Any] | None:
    """The model record (model, pretrained, fingerprint) of a command's output folder or artifact, else None."""
    record = stamped_record(folder) or _json(folder / METADATA)
    if not isinstance(record, dict):
        return None
    described = record.get("model")
    if isinstance(described, dict) and MODEL_KEY in described:
        return {key: described.get(key) for key in ("model", "pretrained", MODEL_KEY)}
    if MODEL_KEY in record:
        return {key: record.get(key) for key in ("model", "pretrained", MODEL_KEY)}
    return None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _folders(run: Path) -> Iterator[Path]:
    """The run folder and every folder below it (outputs nest artifacts one or two levels down)."""
    yield run
    for root, names, _ in os.walk(run):
        names[:] = sorted(name for name in names if not name.startswith("."))
        yield from (Path(root) / name for name in names)


def gather(runs: list[Path]) -> Findings:
    """Read every output folder under `runs`; refuse folders of different models, or ones that record none."""
    found: dict[str, Any] = {}
    for run in runs:
        models = [model for model in map(model_of, _folders(run)) if model is not None]
        if not models:
            raise CliplensError(f"{run} holds no cliplens output that records its model (no metadata.json with a "
                                "model fingerprint); pass the folders cliplens commands wrote")
        for model in models:
            if not found:
                found = model
            elif model[MODEL_KEY] != found[MODEL_KEY]:
                raise CliplensError(f"{run} is an output of {describe_model(*model.values())}, the others of "
                                    f"{describe_model(*found.values())}: a report shows one model; pass the folders "
                                    "of one model")
    findings = Findings(model=found)
    for run in runs:
        for folder in _folders(run):
            _read_folder(findings, folder)
        findings.runs.append({"folder": str(run), "command": _command(run)})
    for label, unit in findings.units.items():
        if "links" in unit and match_label(label).kind == "head":
            unit["links"] = sorted(unit["links"], key=lambda link: -link[1])[:LINKS_PER_HEAD]
    return findings


def _command(run: Path, nested: bool = True) -> str:
    """The commands (or artifact kinds) whose records are in a run folder (and below it, when `nested`)."""
    found = []
    for folder in _folders(run) if nested else [run]:
        record = _json(folder / METADATA)
        if isinstance(record, dict) and (record.get("command") or record.get("kind")):
            found.append(str(record.get("command") or record.get("kind")))
    return ", ".join(dict.fromkeys(found))


def _read_folder(findings: Findings, folder: Path) -> None:
    record = _json(folder / METADATA)
    kind = record.get("kind") if isinstance(record, dict) else None
    parts = record.get("parts") if kind == ANALYSIS else {None: record}  # an analysis holds several statistics
    readers = {"piece-stats": _read_piece_stats, "pair-stats": _read_pair_stats,
               "second-order-stats": _read_second_order, HEAD_IMAGES: _read_head_images}
    for part, held in parts.items() if isinstance(parts, dict) else ():
        reader = readers.get(held.get("kind")) if isinstance(held, dict) else None
        if reader is not None:
            reader(findings, folder, part)
    if isinstance(record, dict) and record.get("command") == "ablate":
        _read_ablation(findings, folder, record)
    for table in sorted(folder.glob("*.csv")):
        _read_table(findings, table)
    query = record.get("query_text") if isinstance(record, dict) else None
    for picture in sorted(folder.glob("*.png")):
        unit = ranked_unit(picture.stem)
        if unit is not None:  # a ranking's grid: retrieve, second-order --grids
            name = f"thumb-{len(findings.images)}-{picture.stem}.png"
            findings.images[name] = picture
            caption = f"{folder.name}/{picture.name}" + (f", query: {query!r}" if query else "")
            findings.unit(unit).setdefault("images", []).append({"src": name, "caption": caption})
    for numbers in sorted(folder.glob(f"*{MAPS}.safetensors")):
        _read_maps(findings, numbers, query)


def ranked_unit(name: str) -> str | None:
    """The unit a ranking named `name` is about: its label, or the head of a principal component's end
    (`L3H1.pc0+`, retrieve's); None for other files."""
    if match_label(name) is not None:
        return name
    principal = match_component(name[:-1]) if name.endswith(("+", "-")) else None
    return principal[0].label if principal is not None else None


def _read_maps(findings: Findings, path: Path, query: str | None) -> None:
    """retrieve's per-token maps over a component's top images (docs/outputs.md#retrieve, docs/methods/retrieval.md
    #maps): per image its position, score, patch map and the share of the tokens that are not places, with the grid
    of the images with their maps drawn over them."""
    label = path.name[: -len(f"{MAPS}.safetensors")]
    unit = ranked_unit(label)
    if unit is None:
        return
    try:
        with safe_open(path, "pt") as stored:
            missing = [name for name in MAP_TENSORS if name not in stored.keys()]
            if missing:
                raise CliplensError(f"{path} holds no {', '.join(missing)}; rerun `cliplens retrieve` to rewrite it")
            tensors = {name: stored.get_tensor(name) for name in MAP_TENSORS}
            measure = (stored.metadata() or {}).get("measure", "")
    except (OSError, SafetensorError) as exc:
        raise CliplensError(f"cannot read {path} ({exc}); rerun `cliplens retrieve` to rewrite it") from None
    patches = tensors["patches"].double()
    entry = {"measure": measure, "side": patches.shape[-1], "caption": f"{path.parent.name}/{label}{MAPS}.png" + (
        f", query: {query!r}" if query else ""), "images": [
        {"index": int(index), "score": float(score), "other": float(other), "values": row.flatten().tolist()}
        for index, score, other, row in zip(tensors["index"], tensors["score"], tensors["other_tokens"], patches)]}
    overlay = path.with_name(f"{label}{MAPS}.png")
    if overlay.is_file():
        entry["src"] = f"thumb-{len(findings.images)}-{label}{MAPS}.png"
        findings.images[entry["src"]] = overlay
    findings.unit(unit).setdefault("maps", []).append(entry)


# statistics ---------------------------------------------------------------------------------------------------------
def _read_piece_stats(findings: Findings, folder: Path, part: str | None) -> None:
    """Variance and its share per piece (docs/methods/statistics.md); per-patch sizes of spatial statistics."""
    stats = load_stats(folder, part=part)
    variance = torch.diagonal(stats.covariance, dim1=-2, dim2=-1).sum(-1)
    total = float(variance.sum()) or 1.0
    for label, value in zip(stats.labels, variance.tolist()):
        findings.score(label, "variance", value)
        findings.score(label, "variance share", value / total)
        piece = match_label(label)
        if piece is not None and piece.kind == "head" and piece.layer is not None:
            findings.shape["layers"] = max(findings.shape.get("layers", 0), piece.layer + 1)
            findings.shape["heads"] = max(findings.shape.get("heads", 0), piece.head + 1)
    if stats.token_mean is None:
        return
    patches = stats.token_mean[:, 1:].norm(dim=-1)  # [C, N - 1]: token 0 is the class token
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        return
    for label, row in zip(stats.labels, patches.tolist()):
        findings.unit(label)["tokens"] = {"side": side, "values": [round(value, 5) for value in row]}


def _read_pair_stats(findings: Findings, folder: Path, part: str | None) -> None:
    """ResNet neuron×head pairs: each pair's score (docs/methods/resnet-pairs.md#ablation) and coefficient spread."""
    stats = load_stats(folder, part=part)
    scores, spread = stats.scores(), stats.coef_variance.clamp_min(0).sqrt()
    findings.shape["pool heads"] = stats.heads
    findings.shape["pool neurons"] = stats.neurons
    for h in range(stats.heads):
        for n, (score, std) in enumerate(zip(scores[h].tolist(), spread[h].tolist())):
            findings.score(pair_label(h, n), "score", score)
            findings.score(pair_label(h, n), "coef_std", std)


def _read_second_order(findings: Findings, folder: Path, part: str | None) -> None:
    """Neurons of one MLP layer: their size, and the later heads their principal direction goes through most
    (the largest |head coordinates| of the top-k principal direction, docs/methods/second-order.md#statistics)."""
    tensors, metadata = load_artifact(folder, fields={"layer": int, "heads": list}, part=part)
    layer, heads = metadata["layer"], metadata["heads"]
    findings.shape["neurons"] = tensors["mean"].shape[0]
    if "mean_effects" in tensors:
        for n, value in enumerate(tensors["mean_effects"].norm(dim=-1).tolist()):
            findings.score(neuron_label(layer, n), "mean effect norm", value)
    if "variance_explained" in tensors:
        for n, value in enumerate(tensors["variance_explained"].tolist()):
            findings.score(neuron_label(layer, n), "PC1 variance share", value)
    if "principal_coordinates" not in tensors:
        return
    through = tensors["principal_coordinates"][:, : len(heads)].abs()  # [F, J]
    weights, order = through.topk(min(LINKS_PER_NEURON, len(heads)), dim=1)
    for n, (picked, values) in enumerate(zip(order.tolist(), weights.tolist())):
        links = [[heads[j], round(w, 5)] for j, w in zip(picked, values) if w > 0]
        label = neuron_label(layer, n)
        findings.unit(label)["links"] = links
        for head, weight in links:
            findings.unit(head).setdefault("links", []).append([label, weight])


def _read_head_images(findings: Findings, folder: Path, part: str | None) -> None:
    """Per head, each kept principal component's two ends (docs/methods/retrieval.md#principal): the texts of the pole
    each end lies towards, and its images with their scores, each distinct image one thumbnail read from the
    analysis's fit data (none when those images can no longer be read: the positions and scores remain)."""
    tensors, metadata = load_artifact(folder, fields={"heads": list, "poles": dict, "data_fingerprint": str},
                                      part=part)
    try:
        source = analyzed_fit_source(folder)
    except CliplensError:
        source = None
    prefix = f"pc-{hashlib.sha256(metadata['data_fingerprint'].encode()).hexdigest()[:12]}-"  # one set per data
    for u, head in enumerate(metadata["heads"]):
        components = []
        for j in range(int(tensors["components"][u])):
            ends = []
            for end, pole in ENDS:
                images = [[int(i), float(v)] for i, v in zip(tensors[f"{end}_index"][u, j].tolist(),
                                                             tensors[f"{end}_values"][u, j].tolist())]
                for position, _ in images if source is not None else ():
                    findings.renders.setdefault(f"{prefix}{position}.png", _thumbnail_of(source, position))
                ends.append({"pole": pole, "texts": metadata["poles"][head][j][pole], "images": images})
            components.append({"component": j, "ends": ends})
        findings.unit(head)["principal"] = {"score": metadata.get("score", ""), "count": metadata.get("count"),
                                            "thumbs": prefix if source is not None else None,
                                            "components": components}


def _thumbnail_of(source: Any, position: int) -> Callable[[Path], None]:
    def write(target: Path) -> None:
        item = source[position]
        image = to_image(item[0] if isinstance(item, tuple) else item)
        ImageOps.fit(image, (THUMB, THUMB)).save(target, format="PNG")
    return write


# tables -------------------------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def row_label(row: dict[str, str]) -> str | None:
    """The unit a table row is about, from its label column; None where it names no unit with a page (a CLIP-Dissect
    row's `layer,unit` is a neuron of another network)."""
    for column in LABEL_COLUMNS:
        if row.get(column):
            return row[column] if match_label(row[column]) is not None else None
    return None


def _read_table(findings: Findings, path: Path) -> None:
    """Description tables become texts; per-unit rankings are read with their grids; other small tables (accuracies
    of reconstructions and ablations) are shown whole. Larger per-unit tables repeat what the artifacts hold."""
    rows = _rows(path)
    if not rows or match_label(path.stem) is not None:
        return
    if DESCRIPTION in rows[0]:
        _read_descriptions(findings, rows)
    elif len(rows) <= WHOLE_TABLE_ROWS and _command(path.parent, nested=False) != "ablate":  # that one: _read_ablation
        findings.tables[f"{path.parent.name}/{path.name}"] = [{key: _plain(value) for key, value in row.items()}
                                                             for row in rows]


def _plain(text: str) -> Any:
    value = _number(text)
    return text if math.isnan(value) else value


def _read_descriptions(findings: Findings, rows: list[dict[str, str]]) -> None:
    """Texts per unit and method (and principal direction), in rank order; SVD poles grouped by component and sign.

    A head's TextSpan shares sum to the share of its variance that its reconstruction from the texts keeps: each
    share is the variance along a direction orthogonal to the earlier picks (docs/methods/textspan.md#outputs), so
    they add up to tr(Q Σ Q) / tr Σ, 1 minus the reconstruction's relative squared error. One table gives it; a later
    table of the same head replaces it rather than adds to it."""
    kept: dict[str, float] = {}
    for row in rows:
        label = row_label(row)
        if label is None:
            continue
        if row.get(METHOD) == TEXTSPAN:
            kept[label] = kept.get(label, 0.0) + _number(row.get(EXPLAINED))
        value = next((_number(row[c]) for c in TEXT_VALUES if row.get(c)), math.nan)
        value = None if math.isnan(value) else round(value, 5)
        unit, method, direction = findings.unit(label), row.get(METHOD) or "texts", row.get(DIRECTION, "")
        if row.get(POLE) in POLES:
            poles = unit.setdefault("poles", {}).setdefault(direction or "0", {"+": [], "-": []})
            poles[row[POLE]].append([row[DESCRIPTION], value])
        else:
            unit["texts"].setdefault(f"{method} pc{direction}" if direction else method, []).append(
                [row[DESCRIPTION], value])
    for label, share in kept.items():
        findings.score(label, KEPT, share)


def _read_ablation(findings: Findings, folder: Path, record: dict[str, Any]) -> None:
    """Mean-ablation variants (docs/methods/mean-ablation.md#definition): which pieces each removed, and its
    accuracy next to the full model's; a variant that removes one unit alone is that unit's ablation effect."""
    table = folder / "ablation.csv"
    variants = record.get("variants")
    if not table.is_file() or not isinstance(variants, dict):
        return
    rows = _rows(table)
    full = next((_number(row["accuracy"]) for row in rows if row.get("variant") == "full model"), math.nan)
    for row in rows:
        pieces = variants.get(row.get("variant"))
        if not isinstance(pieces, list):
            continue
        accuracy = _number(row.get("accuracy"))
        entry = {"variant": row["variant"], "pieces": pieces, "accuracy": accuracy, "full": full}
        findings.ablations.append(entry)
        for piece in pieces:
            if match_label(piece) is not None:
                findings.unit(piece).setdefault("ablations", []).append(entry)
        if len(pieces) == 1 and match_label(pieces[0]) is not None:
            findings.score(pieces[0], "ablation effect", full - accuracy)


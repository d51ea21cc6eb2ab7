"""The demo's summary (`summary.md`): what each step found, read back from the files it wrote, its notation explained
in words, and an index of every file written with its kind (docs/outputs.md).

Only the written outputs are read, so the summary says what a person opening the folder would find.
"""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path
from typing import Callable, Sequence

from ..io.tables import SCHEMAS

SUMMARY = "summary.md"
Step = tuple[str, str, list[str]]  # (title, subcommand, arguments), as cli/demo.py runs them
Rows = list[dict[str, str]]

PAIR_SCORE = (
    "`|s - mean s|*|u|` ranks the images of a ResNet pair H{h}N{n} (pool head h reading input channel n): s is the "
    "pair's coefficient on an image (how strongly the channel fires, as that head reads it), mean s its average over "
    "the data, and |u| the length of the direction the pair writes into the embedding. So the score is how far, in "
    "embedding units, the pair pushes that image's embedding away from where it pushes an average image; a pair's "
    "own score (pairs.csv) is the mean of this over its top images."
)
NEURON_SCORE = (
    "`|sum_h r^{n,h}|` ranks images by the length of everything neuron n writes into the embedding through all pool "
    "heads together."
)
HEAD_SCORE = (
    "`<p, q>` ranks images by the dot product of the head's piece p of the image embedding with the query q (the "
    "query text's unit embedding): how much of what the head writes points the way of the text."
)


def read_rows(path: Path) -> Rows:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def percent(value: str | float) -> str:
    return f"{100 * float(value):.1f} %"


def accuracy_lines(rows: Rows, name: str = "variant") -> list[str]:
    return [f"| {row[name]}{' m=' + row['texts'] if row.get('texts') else ''} | {percent(row['accuracy'])} |"
            for row in rows]


def table(header: str, lines: list[str]) -> list[str]:
    return ["", f"| {header} | accuracy |", "|---|---|", *lines, ""]


def head_texts(folder: Path) -> list[str]:
    rows = read_rows(folder / "textspan.csv")
    heads: dict[str, list[str]] = {}
    for row in rows:
        heads.setdefault(row["label"], []).append(row["description"])
    lines = ["Each head's texts in TextSpan's picking order: the first is the direction along which the head varies "
             "most, each next one the most variance left once the earlier ones are removed.", ""]
    lines += [f"- {label}: {', '.join(texts)}" for label, texts in heads.items()]
    return lines


def reconstruction(folder: Path) -> list[str]:
    rows = read_rows(folder / "reconstruction.csv")
    metadata = json.loads((folder / "metadata.json").read_text())
    reference = {row["method"]: row for row in rows if not row["texts"]}
    chance = float(reference["chance"]["accuracy"])
    lines = table("heads rebuilt from m texts per head", accuracy_lines(rows, "method"))
    earlier = metadata["mean_ablated"]
    if earlier:
        lines.append(f"The mean-ablation baseline keeps the {len(metadata['analysed_heads'])} analysed heads whole and "
                     f"mean-ablates the {len(earlier)} heads of the earlier layers; every method starts from it.")
    else:
        lines.append(f"The mean-ablation baseline mean-ablates the heads of the layers before the last "
                     f"{metadata['num_last_layers']}; this model has no earlier layers, so nothing is ablated and the "
                     "baseline equals the full model.")
    below = [row for row in rows if row["texts"] and float(row["accuracy"]) < chance]
    if below:
        lines += [
            "",
            f"Chance ({percent(chance)}) is what a guess spread evenly over the {metadata['classes']} classes scores. "
            f"Rebuilt from too few texts (or from random directions), the heads keep almost nothing that tells the "
            f"images apart, so the classifier gives nearly all of them the same class: the accuracy is then that "
            f"class's share of the data, which can be far below chance (here as low as "
            f"{percent(min(float(row['accuracy']) for row in below))})."
        ]
    return lines


def ablation(folder: Path, name: str = "ablation.csv") -> list[str]:
    rows = read_rows(folder / name)
    lines = table("variant", accuracy_lines(rows))
    sample = "on the evaluation images themselves" if rows[0]["in_sample"] == "True" else "on a separate set"
    return lines + [f"Mean-ablating a unit replaces it by its mean (computed {sample}); a variant that ablates nothing "
                    "is the full model, so its accuracy must match the first row."]


def second_order(folder: Path) -> list[str]:
    layer = json.loads((folder / "metadata.json").read_text())["layer"]
    words = read_rows(folder / f"neuron_words_L{layer}.csv")
    lines = ablation(folder, f"ablation_L{layer}.csv")
    lines += ["", "`without_significant` removes, on each image, only the neurons whose effect there exceeds their "
              "threshold; `pc_reconstruction` keeps each neuron's effect along its principal direction only.", "",
              f"Words of three of the neurons with the strongest effects (their top images are in "
              f"top_images_L{layer}/):", ""]
    strongest = [path.stem for path in sorted((folder / f"top_images_L{layer}").glob("*.csv"))][:3]
    for label in strongest:
        texts = [f"{row['description']} ({float(row['coefficient']):+.2f})" for row in words if row["label"] == label]
        lines.append(f"- {label}: {', '.join(texts[:5])}")
    return lines + ["", "The words of a neuron are signed: + the direction points toward the text, - away from it."]


def rankings(folder: Path) -> list[str]:
    lines = []
    for path in sorted(folder.glob("*.csv")):
        rows = read_rows(path)
        lines += [f"{path.stem}, top images by {rows[0]['ranked_by']}:", ""]
        lines += [f"{int(row['rank']) + 1}. {row['item']} (score {float(row['score']):.3g})" for row in rows[:3]]
        lines.append("")
    scores = [read_rows(path)[0]["ranked_by"] for path in folder.glob("*.csv")]
    notes = {"|s - mean s|*|u|": PAIR_SCORE, "|sum_h r^{n,h}|": NEURON_SCORE, "<p, q>": HEAD_SCORE}
    return lines + [line for key, text in notes.items() if any(score.startswith(key) for score in scores)
                    for line in (text, "")]


def pairs(folder: Path) -> list[str]:
    top = read_rows(folder / "pairs.csv")[:5]
    words = read_rows(folder / "pair_words.csv")
    lines = ["The five pairs with the largest scores and their words (OMP coefficients, signed):", ""]
    for row in top:
        texts = [f"{w['description']} ({float(w['coefficient']):+.2f})" for w in words if w["label"] == row["label"]]
        lines.append(f"- {row['label']} (score {float(row['score']):.3g}): {', '.join(texts[:5])}")
    return lines + ["", PAIR_SCORE] + ablation(folder)


def statistics(folder: Path) -> list[str]:
    return [f"`{path.relative_to(folder)}`: the count, mean and covariance of every piece over the data, which the "
            "next steps read with `--stats` instead of passing over the images again." for path in
            sorted(folder.glob("*/tensors.safetensors"))]


def analysis(folder: Path) -> list[str]:
    record = json.loads((folder / "analysis" / "metadata.json").read_text(encoding="utf-8"))
    passes, evaluation = record["passes"], record["evaluation"]
    scored = (f"; {evaluation['variants']} variants ({', '.join(evaluation['questions'])}) scored for the labels "
              f"{', '.join(str(label or 'of the data') for label in evaluation['labels'])} in {passes['evaluation']} "
              f"pass over the {evaluation['images']} evaluation images" if evaluation else "")
    return [f"`analysis/` holds {', '.join(record['parts'])}: {record['fit']['images']} fit images read in "
            f"{passes['fit']} pass(es){scored}. The next steps pass it as `--data-path`, `--stats` or `--fit-path` "
            "and read their statistics and scores from it instead of the images; each number equals the one the "
            "step's own pass would give."]


FINDINGS: dict[str, Callable[[Path], list[str]]] = {
    "collect": statistics, "analyze": analysis, "textspan": head_texts, "reconstruct": reconstruction,
    "ablate": ablation, "second-order": second_order, "retrieve": rankings, "pairs": pairs, "neuron-ablate": ablation,
}


def kind_of(path: Path) -> str:
    """What a written file is: a table's kind (from its header), a grid or figure, a record, an artifact's part."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as stream:
            header = tuple(next(csv.reader(stream)))
        return next((f"{kind} table" for kind, columns in SCHEMAS.items() if columns == header), "table")
    if path.name == "metadata.json":
        return "record of the run" if not any(path.parent.glob("*.safetensors")) else "artifact record"
    return {".png": "image", ".safetensors": "artifact tensors", ".npy": "array"}.get(path.suffix, "file")


def file_index(root: Path) -> list[str]:
    """One line per file under `root`, and summary.md itself (written after the index is made)."""
    files = sorted(path for path in root.rglob("*") if path.is_file() and path != root / SUMMARY)
    return [f"- `{path.relative_to(root)}`: {kind_of(path)}" for path in files] + [f"- `{SUMMARY}`: this summary"]


def demo_summary(steps: Sequence[Step], root: Path, seconds: float) -> str:
    """The markdown of summary.md for the demo's `steps`, whose outputs are under `root`."""
    lines = ["# cliplens demo: what it found", "",
             f"{len(steps)} steps on the shipped toy models and the shapes world, {seconds:.0f} s in all. Each step is "
             "the real command; its files are in the folder named after it. Accuracies are top-1 zero-shot "
             "accuracies. Every table's columns are explained in docs/outputs.md.", ""]
    for number, (title, name, arguments) in enumerate(steps, 1):
        folder = Path(arguments[arguments.index("--output-dir") + 1])
        lines += [f"## {number}. {title}", "", f"`cliplens {name} {shlex.join(arguments)}`", ""]
        findings = FINDINGS.get(name)
        lines += findings(folder) if findings else [f"Wrote {', '.join(sorted(p.name for p in folder.iterdir()))}."]
        lines.append("")
    lines += ["## Files written", "", *file_index(root), ""]
    return "\n".join(lines)


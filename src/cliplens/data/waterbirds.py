"""Waterbirds (Sagawa et al. 2020) from a local folder, labelled by group (docs/methods/spurious.md#waterbirds).

The layout is the one the dataset ships in: `<root>/metadata.csv` with columns img_filename (a path relative to
root), y (0 landbird, 1 waterbird), place (0 land, 1 water) and split (0 train, 1 val, 2 test), next to the images.
Each item's label is its group 2·y + place, the convention every spurious-cue table here uses; the class is y.
Data spec: `waterbirds:<folder>[:<split>]`, split train, val or test (default test).
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from PIL import Image

from ..errors import CliplensError
from .folders import Unreadable, open_image, printable

WATERBIRDS_PREFIX = "waterbirds:"
COLUMNS = ("img_filename", "y", "place", "split")
SPLITS = {"train": 0, "val": 1, "test": 2}
CLASSES = ("landbird", "waterbird")
GROUPS = ("landbird on land", "landbird on water", "waterbird on land", "waterbird on water")


def _binary(value: str, column: str, line: int, allowed: range) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number not in allowed:
        raise CliplensError(f"metadata.csv line {line}: {column}={value!r}; it must be one of "
                            f"{', '.join(map(str, allowed))}")
    return number


class WaterbirdsDataset:
    """(image, group) for the images of one split; unreadable files are skipped by the loader with their reason."""

    def __init__(self, root: str | os.PathLike, split: str = "test"):
        if split not in SPLITS:
            raise CliplensError(f"unknown Waterbirds split {split!r}; choose one of {', '.join(SPLITS)}")
        self.root, self.split = Path(root), split
        table = self.root / "metadata.csv"
        if not table.is_file():
            raise CliplensError(f"no metadata.csv in {printable(str(self.root))}; point at the Waterbirds folder "
                                f"(metadata.csv with columns {', '.join(COLUMNS)}, and the images)")
        self.paths: list[Path] = []
        self.labels: list[int] = []
        with open(table, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise CliplensError(f"{printable(str(table))} lacks column(s) {', '.join(missing)}; it needs "
                                    f"{', '.join(COLUMNS)}")
            for line, row in enumerate(reader, start=2):
                y = _binary(row["y"], "y", line, range(2))
                place = _binary(row["place"], "place", line, range(2))
                if _binary(row["split"], "split", line, range(3)) == SPLITS[split]:
                    self.paths.append(self.root / row["img_filename"])
                    self.labels.append(2 * y + place)
        if not self.paths:
            raise CliplensError(f"{printable(str(table))} has no rows with split={SPLITS[split]} ({split})")
        self.classnames = list(GROUPS)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> tuple[Image.Image, int]:
        if not self.paths[i].is_file():
            raise Unreadable("missing")
        return open_image(self.paths[i]), self.labels[i]

    def __getitem__(self, i: int) -> tuple[Image.Image | None, int]:
        try:
            return self.read(i)
        except Unreadable:
            return None, self.labels[i]

    def describe(self, i: int) -> str:
        return printable(str(self.paths[i]))

    @property
    def fingerprint(self) -> str:
        """Hash of the split, the listed files (relative names) and their groups."""
        digest = hashlib.sha256(f"waterbirds|{self.split}".encode())
        for path, label in zip(self.paths, self.labels):
            digest.update(os.fsencode(path.relative_to(self.root)) + f"\0{label}\n".encode())
        return f"waterbirds:{digest.hexdigest()[:16]}"


def waterbirds_source(spec: str) -> WaterbirdsDataset:
    """`waterbirds:<folder>[:<split>]` (the split after the last colon when it names one)."""
    body = spec.removeprefix(WATERBIRDS_PREFIX)
    folder, _, split = body.rpartition(":")
    if split not in SPLITS:
        folder, split = body, "test"
    if not folder:
        raise CliplensError(f"bad Waterbirds data spec {spec!r}; write waterbirds:<folder>[:train|val|test]")
    return WaterbirdsDataset(folder, split)

"""Stanford Cars in the layout of its devkit, with per-image metadata for concept tracking
(docs/methods/tracking.md#stanford-cars).

`stanford-cars:<root>[:<split>[:<colours.csv>]]`, split `train` (default) or `test`:
- `<root>/devkit/cars_meta.mat`: `class_names`, a 1 × 196 cell of names such as "Audi TT RS Coupe 2012";
- `<root>/devkit/cars_train_annos.mat` (train) or `<root>/cars_test_annos_withlabels.mat` / `<root>/devkit/...` (test):
  `annotations`, a 1 × N struct with fields bbox_x1, bbox_y1, bbox_x2, bbox_y2, class (1-based) and fname;
- images in `<root>/cars_train/` or `<root>/cars_test/`.
These are MATLAB v5 files (scipy.io reads them). The optional refined-colour CSV (morrisfl/stanford_cars_refined) has
columns `image` and `Class` = "<class name>_<colour>"; images it does not list have no colour and are skipped.
Metadata per image: class, year (the class name's last token), convertible (the name contains "Convertible") and,
with the CSV, colour.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import CliplensError
from ..extras import require
from .folders import ImageFolder, printable

STANFORD_CARS_PREFIX = "stanford-cars:"
ANNOTATIONS = {"train": ("devkit/cars_train_annos.mat",),
               "test": ("cars_test_annos_withlabels.mat", "devkit/cars_test_annos_withlabels.mat")}
IMAGES = {"train": "cars_train", "test": "cars_test"}


def _load_mat(path: Path, key: str) -> Any:
    require("cars", "scipy", user="reading Stanford Cars .mat files")
    import scipy.io

    try:
        content = scipy.io.loadmat(path, squeeze_me=True)
    except NotImplementedError:
        raise CliplensError(f"{printable(str(path))} is a MATLAB v7.3 file; the devkit's files are v5: re-download "
                            "the devkit") from None
    except (OSError, ValueError) as exc:
        raise CliplensError(f"cannot read {printable(str(path))} as a MATLAB file ({exc}); pass the devkit's file")
    if key not in content:
        raise CliplensError(f"{printable(str(path))} has no {key!r}; is it the Stanford Cars devkit's file?")
    return content[key]


def _colours(path: Path) -> dict[str, str]:
    """image file name → colour, from the refined CSV (`image`, `Class` = "<class>_<colour>")."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise CliplensError(f"cannot read the colour CSV {printable(str(path))} ({exc})") from exc
    if not rows or not {"image", "Class"} <= set(rows[0]):
        raise CliplensError(f"{printable(str(path))} needs the columns image and Class (\"<class>_<colour>\")")
    return {Path(row["image"]).name: row["Class"].rpartition("_")[2].strip() for row in rows}


class StanfordCars:
    """(image, class index) per annotated image, with `metadata(i)`: class, year, convertible (and colour)."""

    def __init__(self, root: str | Path, split: str = "train", colours: str | Path | None = None) -> None:
        if split not in ANNOTATIONS:
            raise CliplensError(f"unknown Stanford Cars split {split!r}; choose train or test")
        self.root = Path(root)
        names = _load_mat(self.root / "devkit" / "cars_meta.mat", "class_names")
        self.classnames = [str(name).strip() for name in names]
        found = [self.root / candidate for candidate in ANNOTATIONS[split] if (self.root / candidate).is_file()]
        if not found:
            raise CliplensError(f"no {' or '.join(ANNOTATIONS[split])} under {printable(str(root))}; pass the folder "
                                "holding devkit/ and the image folders")
        annotations = _load_mat(found[0], "annotations")
        if annotations.dtype.names is None or not {"class", "fname"} <= set(annotations.dtype.names):
            raise CliplensError(f"{printable(str(found[0]))} annotations need the fields class and fname")
        entries = [(str(entry["fname"]), int(entry["class"]) - 1) for entry in annotations.reshape(-1)]
        bad = [label for _, label in entries if not 0 <= label < len(self.classnames)]
        if bad:
            raise CliplensError(f"an annotation has class {bad[0] + 1}, outside the {len(self.classnames)} class names")
        self.colours = _colours(Path(colours)) if colours is not None else None
        if self.colours is not None:
            entries = [entry for entry in entries if entry[0] in self.colours]
            if not entries:
                raise CliplensError("the colour CSV lists none of the annotated images; check its image column")
        self.names, self.labels = [name for name, _ in entries], [label for _, label in entries]
        self.images = ImageFolder([self.root / IMAGES[split] / name for name in self.names])
        self.fingerprint = f"stanford-cars:{split}:{self.images.fingerprint}"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[Image.Image | None, int]:
        return self.images[index][0], self.labels[index]

    def describe(self, index: int) -> str:
        return self.images.describe(index)

    def metadata(self, index: int) -> dict[str, Any]:
        name = self.classnames[self.labels[index]]
        year = name.split()[-1]
        values = {"class": name, "year": int(year) if year.isdigit() else year,
                  "convertible": "Convertible" in name}
        if self.colours is not None:
            values["colour"] = self.colours[self.names[index]]
        return values


def stanford_cars(spec: str) -> StanfordCars:
    """`stanford-cars:<root>[:<split>[:<colours.csv>]]` as a source."""
    parts = spec.removeprefix(STANFORD_CARS_PREFIX).split(":")
    if not parts[0] or len(parts) > 3:
        raise CliplensError(f"bad Stanford Cars spec {spec!r}; write stanford-cars:<root>[:<split>[:<colours.csv>]]")
    return StanfordCars(parts[0], parts[1] if len(parts) > 1 and parts[1] else "train",
                        parts[2] if len(parts) > 2 else None)

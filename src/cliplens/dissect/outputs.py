"""What `cliplens dissect` writes, as one atomic folder: `<target>_<layer>.csv` per layer (layer,unit,description,
similarity), `config.json` (the run's configuration) and a PNG per requested neuron with its top probe images."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import CliplensError
from ..io.atomic import write_folder
from ..io.tables import write_table
from ..report.grids import save_grid
from .run import Dissection
from .sets import probe_source


def file_stem(name: str) -> str:
    """A name safe in a file name: toy:cnn -> toy-cnn, transformer.resblocks.3 stays."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "target"


def _image(source: Any, position: int):
    read = getattr(source, "read", None)
    item = read(position) if read is not None else source[position]
    return item[0] if isinstance(item, tuple) else item


def write_dissection(result: Dissection, output_dir: str | Path, *, probe: Any = None,
                     neurons: list[tuple[str, int]] = (), top: int = 8) -> dict[str, Path]:
    """Write the folder; `neurons` (layer, unit) get a PNG of their `top` probe images, titled with the label."""
    for layer, unit in neurons:
        if layer not in result.layers or not 0 <= unit < result.layers[layer].similarity.shape[0]:
            sizes = ", ".join(f"{name} (0..{d.similarity.shape[0] - 1})" for name, d in result.layers.items())
            raise CliplensError(f"no neuron {layer}:{unit} was dissected; units of the dissected layers: {sizes}")
    stem = file_stem(result.target)
    rows = result.rows()
    writers = {}
    for layer in result.layers:
        layer_rows = [row for row in rows if row["layer"] == layer]
        writers[f"{stem}_{file_stem(layer)}.csv"] = lambda file, rows=layer_rows: write_table(file, "dissection", rows)
    config = {**result.config, "seconds": {k: round(v, 3) for k, v in result.seconds.items()}}
    writers["config.json"] = lambda file: file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    source = probe_source(probe) if neurons else None
    for layer, unit in neurons:
        dissection = result.layers[layer]
        label = result.concepts[dissection.labels[unit]]
        shown = dissection.top_images(unit, top)
        images = [_image(source, int(result.positions[row])) for row in shown]
        captions = [f"{float(dissection.activations[row, unit]):.3g}" for row in shown]
        title = f"{result.target} {layer} unit {unit}: {label}"
        writers[f"{stem}_{file_stem(layer)}_{unit}.png"] = (
            lambda file, images=images, captions=captions, title=title: save_grid(file, images, captions, title=title))
    write_folder(output_dir, writers, {"kind": "dissection", **config})
    return {name: Path(output_dir) / name for name in writers}

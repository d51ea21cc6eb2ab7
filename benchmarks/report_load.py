"""How fast the explorer's first page opens for a ViT-H-14-sized model, in headless Chromium from the file system.

The inputs are synthesized (no model is run; statistics of ViT-H would be gigabytes): a `Findings` of the size the
readers would produce for 32 layers × 16 heads and 32 MLP layers × 5,120 second-order neurons, with texts, SVD poles,
per-patch maps, links and some top-image grids with retrieve's maps over each of their 16 images. `write_site` writes
the same folder `cliplens report` would; the page is opened afresh (a new browser context each time, so nothing is
cached) and timed from navigation start to the `overview-shown` mark explorer.js sets once the grid and every neuron
strip are drawn. A toy-sized report (4 × 4 heads, 1 × 256 neurons) is the baseline. Then: opening one neuron's page
(its data file loads), one head's page with its 16 per-image maps drawn (its layer's data file loads), and the first
search (the index loads).

    python benchmarks/report_load.py [--repeats 5] [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cliplens.explorer.site import write_site
from cliplens.explorer.sources import Findings
from cliplens.labels import head_label, neuron_label

CHROMIUM = "/usr/bin/chromium"


def synthetic(layers: int, heads: int, neuron_layers: int, neurons: int, grids: int, folder: Path, seed: int = 0
              ) -> Findings:
    """Findings of the given size: every score, text list and map a full set of command outputs would give."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = ["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(20_000)]  # all two-letter prefixes
    pool = [" ".join(vocabulary[i] for i in row) for row in rng.integers(0, len(vocabulary), (50_000, 3))]

    def text() -> str:
        return pool[rng.integers(len(pool))]

    findings = Findings(model={"model": f"synthetic {layers}x{heads}", "pretrained": None, "fingerprint": "0" * 16},
                        shape={"layers": layers, "heads": heads, "neurons": neurons})
    picture = folder / "grid.png"
    Image.fromarray(rng.integers(0, 255, (300, 800, 3), dtype=np.uint8)).save(picture)
    head_labels = [head_label(l, h) for l in range(layers) for h in range(heads)]
    for index, label in enumerate(head_labels):
        unit = findings.unit(label)
        for name in ("variance", "variance share", "ablation effect"):
            findings.score(label, name, float(rng.random()))
        unit["texts"]["textspan"] = [[text(), float(rng.random())] for _ in range(10)]
        unit["poles"] = {str(c): {"+": [[text(), 0.5]] * 5, "-": [[text(), -0.5]] * 5} for c in range(2)}
        unit["tokens"] = {"side": 16, "values": rng.random(256).round(5).tolist()}
        if index < grids:
            findings.images[f"thumb-{index}-{label}.png"] = picture
            unit["images"] = [{"src": f"thumb-{index}-{label}.png", "caption": "retrieve"}]
            images = [{"index": int(i), "score": float(rng.random()), "other": float(rng.normal()),
                       "values": rng.normal(size=256).tolist()} for i in rng.integers(0, 10**6, 16)]
            unit["maps"] = [{"measure": "<p_t, q>", "side": 16, "caption": "retrieve", "images": images,
                             "src": f"thumb-{index}-{label}.png"}]
    for layer in range(neuron_layers):
        for n in range(neurons):
            label = neuron_label(layer, n)
            findings.score(label, "mean effect norm", float(rng.random()))
            findings.score(label, "PC1 variance share", float(rng.random()))
            unit = findings.unit(label)
            unit["texts"]["omp-k8"] = [[text(), float(rng.normal())] for _ in range(8)]
            unit["links"] = [[head_labels[j], 1.0] for j in rng.choice(len(head_labels), 3, replace=False)]
    return findings


def timings(index: Path, neuron: str, word: str, repeats: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    found: dict[str, list[float]] = {"first page (ms)": [], "neuron page (ms)": [], "head page with maps (ms)": [],
                                     "first search (ms)": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(index.as_uri())
            page.wait_for_function("performance.getEntriesByName('overview-shown').length > 0")
            shown = page.evaluate("performance.getEntriesByName('overview-shown')[0].startTime")
            found["first page (ms)"].append(shown)
            started = time.perf_counter()
            page.evaluate(f"location.hash = '{neuron}'")
            page.wait_for_selector(f"h1:text-is('{neuron}')")
            found["neuron page (ms)"].append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            page.evaluate("location.hash = 'L0H0'")  # the first heads have grids and maps
            page.wait_for_function("document.querySelectorAll('canvas.image-map').length === 16")
            found["head page with maps (ms)"].append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            page.fill("#search", word)
            page.wait_for_selector("#hits li")
            found["first search (ms)"].append(1000 * (time.perf_counter() - started))
            context.close()
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None,
                        help="Build the reports in this folder and keep them; reports already there are reused.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for name, size in (("toy (4x4 heads, 1x256 neurons)", (4, 4, 1, 256, 4)),
                           ("ViT-H-14 (32x16 heads, 32x5120 neurons)", (32, 16, 32, 5120, 64))):
            folder = root / name.split()[0]
            folder.mkdir(parents=True, exist_ok=True)
            site = folder / "report"
            if not (site / "index.html").is_file():
                findings = synthetic(*size, folder)
                started, cpu = time.perf_counter(), time.process_time()
                write_site(findings, site)
                print(f"{name}: built in {time.perf_counter() - started:.1f} s "
                      f"({time.process_time() - cpu:.1f} s of CPU)")
            files = list(site.iterdir())
            total = sum(path.stat().st_size for path in files)
            search = [path.stat().st_size for path in files if path.name.startswith("data-search-")]
            print(f"{name}: {len(files)} files, {total / 2**20:.1f} MiB; overview data "
                  f"{(site / 'data-overview.js').stat().st_size / 2**10:.0f} KiB; search index "
                  f"{sum(search) / 2**20:.1f} MiB in {len(search)} files, the largest {max(search) / 2**10:.0f} KiB")
            neuron = neuron_label(size[2] - 1, size[3] - 1)
            word = re.search(r'"textspan":\[\["(\w{3})', (site / "data-L0H.js").read_text())[1]
            for what, values in timings(site / "index.html", neuron, word, args.repeats).items():
                print(f"  {what}: median {statistics.median(values):.0f}, range {min(values):.0f}-{max(values):.0f} "
                      f"over {len(values)} fresh loads")


if __name__ == "__main__":
    main()

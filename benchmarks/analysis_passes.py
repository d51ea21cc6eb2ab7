"""Passes over the data and wall time of the demo's analysis, before and after `cliplens analyze`, in one run.

Before: the commands the demo ran until analyze existed, each reading the fit, evaluation and segmentation splits
itself (collect, then textspan, reconstruct, ablate, second-order and segment on toy:vit; pairs, neuron-ablate and
segment on toy:rn). After: the demo's own first steps (`cliplens.cli.demo`): one analyze per model, then the same
commands reading its folder. Every
stream over the data is counted by the data's fingerprint; the outputs of the two runs are compared file by file.

    python benchmarks/analysis_passes.py --images 512
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner

from cliplens.cli import cli, demo
from cliplens.data import loader
from cliplens.data.segmentation import segmentation_source


def before(out: Path, fit: str, evaluation: str) -> list[list[str]]:
    vit, rn = ["--model", "toy:vit"], ["--model", "toy:rn"]
    stats, pair_stats = out / "vit-collect" / "stats", out / "rn-pairs" / "pair_stats"
    words = ["--pool", "shapes", "--pool-templates", "photo"]
    return [
        ["collect", *vit, "--data-path", fit, "--spatial", "--output-dir", out / "vit-collect"],
        ["textspan", *vit, "--data-path", fit, "--stats", stats, *words, "--texts-per-head", "5",
         "--num-last-layers", "4", "--output-dir", out / "vit-textspan"],
        ["reconstruct", *vit, "--data-path", evaluation, "--fit-path", fit, "--label", "colour", "--num-last-layers",
         "4", "--texts", "1,2,4,8", *words, "--output-dir", out / "vit-reconstruct"],
        ["ablate", *vit, "--data-path", evaluation, "--fit-path", fit, "--preset", "cls", "--preset", "layer-curve",
         "--output-dir", out / "vit-ablate"],
        ["second-order", *vit, "--data-path", fit, "--eval-data-path", evaluation, "--mlp-layer", "1", "--omp-atoms",
         "8", "--output-dir", out / "vit-second-order"],
        ["pairs", *rn, "--data-path", evaluation, "--fit-path", fit, "--pool", "shapes", "--omp-atoms", "8",
         "--keep", "10", "--output-dir", out / "rn-pairs"],
        ["neuron-ablate", *rn, "--data-path", evaluation, "--stats", pair_stats, "--pool", "shapes", "--omp-atoms",
         "8", "--keep", "1", "--keep", "5", "--keep", "10", "--keep", "50", "--output-dir", out / "rn-neuron-ablate"],
        ["segment", *vit, "--data-path", demo.SEGMENT, *demo.VIT_LENSES, "--mlp-layer", "1", "--examples", "4",
         "--output-dir", out / "vit-segment"],
        ["segment", *rn, "--data-path", demo.SEGMENT, *demo.RN_LENSES, "--examples", "4",
         "--output-dir", out / "rn-segment"],
    ]


def after(out: Path) -> list[list[str]]:
    return [[name, *arguments] for _, name, arguments in demo.vit_steps(out)[:6] + demo.rn_steps(out)[:4]]


def run(steps: list[list[str]]) -> float:
    started = time.perf_counter()
    for step in steps:
        result = CliRunner().invoke(cli, [str(arg) for arg in step])
        if result.exit_code != 0:
            raise SystemExit(f"{step[0]} failed: {result.output}{result.exception!r}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    fit, evaluation = f"shapes:test:{args.images}:0", f"shapes:test:{args.images}:1"
    demo.FIT, demo.EVAL = fit, evaluation
    names = {loader.fingerprint(loader.as_source(spec)): role for spec, role in ((fit, "fit"), (evaluation, "eval"))}
    names[loader.fingerprint(segmentation_source(demo.SEGMENT))] = "segment"
    counts: dict[str, int] = {}
    batches = loader.batches

    def counted(source, *rest, **options):
        role = names.get(loader.fingerprint(source), "other")
        counts[role] = counts.get(role, 0) + 1
        return batches(source, *rest, **options)

    loader.batches = counted
    with tempfile.TemporaryDirectory() as folder:
        os.environ.setdefault("CLIPLENS_CACHE", str(Path(folder) / "cache"))
        run(before(Path(folder) / "warm", "shapes:test:32:0", "shapes:test:32:1"))  # text caches, imports
        results = {}
        for name, steps in (("before", before(Path(folder) / "before", fit, evaluation)),
                            ("after", after(Path(folder) / "after"))):
            counts.clear()
            load = os.getloadavg()[0]
            seconds = run(steps)
            results[name] = (dict(counts), seconds, load, os.getloadavg()[0])
        same = []
        for table in ("vit-textspan/textspan.csv", "vit-reconstruct/reconstruction.csv", "vit-ablate/ablation.csv",
                      "vit-second-order/neurons_L1.csv", "vit-second-order/ablation_L1.csv", "rn-pairs/pairs.csv",
                      "rn-pairs/ablation.csv", "rn-pairs/pair_words.csv", "rn-pairs/neuron_words.csv",
                      "rn-neuron-ablate/ablation.csv", "vit-segment/metrics.csv", "vit-segment/overlays.png",
                      "rn-segment/metrics.csv", "rn-segment/overlays.png"):
            same.append((table, (Path(folder) / "before" / table).read_bytes() == (Path(folder) / "after" /
                                                                                 table).read_bytes()))
    print(f"# the demo's analysis steps, {args.images} fit and {args.images} evaluation images, {demo.SEGMENT}, "
          "same process")
    print(f"{'':8} {'fit passes':>10} {'eval passes':>11} {'seg passes':>10} {'wall s':>7}  load average (start, end)")
    for name, (passes, seconds, start, end) in results.items():
        print(f"{name:8} {passes.get('fit', 0):10d} {passes.get('eval', 0):11d} {passes.get('segment', 0):10d} "
              f"{seconds:7.1f}  {start:.1f}, {end:.1f}")
    for table, equal in same:
        print(f"{table}: {'identical' if equal else 'DIFFERENT'}")


if __name__ == "__main__":
    main()

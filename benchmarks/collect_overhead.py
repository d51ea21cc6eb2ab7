"""How much a statistics pass costs over the plain forward pass it rides on.

For each model: the backend's own `encode_image` over a set of images and `lens.collect` over the same images at
each granularity, in the same process, interleaved (each repeat runs every phase once, so load changes on a shared
machine hit all phases alike). Ratios are the median of the per-repeat ratios to the plain forward of the same repeat,
with their range, in wall time and in process CPU time (with --threads 1, the work done, which other jobs on a shared
machine disturb less); memory is the process's peak RSS after each phase's first run, which only grows. The load averages
are printed before and after. Random-init full-size models on CPU: the numbers are about computation, not weights.

    nice python benchmarks/collect_overhead.py --images 64 --batch-size 16
    nice python benchmarks/collect_overhead.py --models timm:vit_small_patch14_reg4_dinov2,EVA02-B-16,ViT-B-16-SigLIP \
        --modes head   # one model per family beyond CLIP (docs/methods/families.md)
"""

from __future__ import annotations

import argparse
import platform
import statistics
from typing import Callable

import torch

import cliplens
from measure import interleaved, load

MODES = {"vit": [("head", False), ("layer", False), ("head", True)], "resnet": [("head", False), ("pair", False)]}


def bench_model(name: str, images: int, batch_size: int, repeats: int, modes: set[str] | None = None
                ) -> list[dict[str, object]]:
    """One row per phase: median img/s, the median of the per-round ratios to the plain forward of the same round
    (and their range) in wall time and in process CPU time, and the peak memory after the phase's first call."""
    lens = cliplens.load(name, seed=0)
    size = lens.spec.image_size
    data = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    dataset = [(image, 0) for image in data]
    batches = data.split(batch_size)

    def plain() -> None:
        with torch.no_grad():
            for batch in batches:
                lens.encode_image(batch)

    def collect(granularity: str, spatial: bool) -> Callable[[], object]:
        return lambda: lens.collect(dataset, granularity=granularity, spatial=spatial, batch_size=batch_size)

    runs = {"encode_image": plain}
    for granularity, spatial in MODES[lens.kind]:
        if modes is None or granularity + ("-spatial" if spatial else "") in modes:
            runs[f"collect {granularity}" + (" spatial" if spatial else "")] = collect(granularity, spatial)
    plain(), lens.collect(dataset[:batch_size], batch_size=batch_size)  # warm-up
    wall, cpu, peaks = interleaved(runs, repeats)
    rows = []
    for mode, seconds in wall.items():
        row = {"model": name, "mode": mode, "img/s": images / statistics.median(seconds), "peak GiB": peaks[mode]}
        for clock, times in (("wall", wall), ("cpu", cpu)):
            ratios = [t / base for t, base in zip(times[mode], times["encode_image"])]
            row.update({clock: statistics.median(ratios), f"{clock} range": f"{min(ratios):.2f}-{max(ratios):.2f}"})
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ViT-B-32,RN50")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--modes", default=None, help="comma list of head, layer, head-spatial, pair (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"{args.images} images, batch {args.batch_size}, median of {args.repeats} interleaved repeats")
    print(f"# load before: {load()}")
    print(f"{'model':34} {'mode':22} {'img/s':>8} {'wall':>6} {'range':>10} {'cpu':>6} {'range':>10} {'peak GiB':>9}")
    modes = None if args.modes is None else set(args.modes.split(","))
    for name in args.models.split(","):
        for row in bench_model(name, args.images, args.batch_size, args.repeats, modes):
            print(f"{row['model']:34} {row['mode']:22} {row['img/s']:8.1f} {row['wall']:6.2f} {row['wall range']:>10} "
                  f"{row['cpu']:6.2f} {row['cpu range']:>10} {row['peak GiB']:9.2f}", flush=True)
    print(f"# load after: {load()}")


if __name__ == "__main__":
    main()

"""Pair statistics vs a plain forward pass for a random-init ResNet CLIP (issue 5;
docs/methods/resnet-pairs.md#closed-forms).

Times `lens.encode_image` (the backend's own forward) and `lens.collect(granularity="pair")` (trunk, attention pool
from the spec, coefficients s = A·T, streaming moments and top-k extremes) on the same images in the same process,
alternating the two so that load from other processes hits both alike, and keeping each mode's best repeat. Peak
memory is the largest resident-set growth seen by a sampling thread during each mode. The statistics artifact does
not grow with the number of images once every pair holds its top-k extremes (k = 50), so its size at saturation is
the disk used per 1,000 images, next to the reference's per-pair memmap of 1000 × H × C × O fp32 values.

    python benchmarks/pair_overhead.py --model RN50x16 --images 2 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import torch

import cliplens

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * PAGE


class PeakMemory:
    """Largest resident-set size above the starting one while the block runs (sampled every 5 ms)."""

    def __enter__(self) -> "PeakMemory":
        self.start = self.peak = resident_bytes()
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(model: str, images: int, batch_size: int, repeats: int, top_k: int) -> dict:
    started = time.perf_counter()
    lens = cliplens.load(model)
    lens.fingerprint  # hashing every weight happens once per model, not per image: keep it out of the timings
    load_s = time.perf_counter() - started
    spec = lens.spec
    size = spec.image_size
    pixels = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = [(image, 0) for image in pixels]
    lens.encode_image(pixels[:1])  # warm-up: first-call allocations and kernel selection
    lens.decompose(pixels[:1], granularity="pair")

    def plain() -> None:
        for start in range(0, images, batch_size):
            lens.encode_image(pixels[start:start + batch_size])

    def statistics():
        return lens.collect(data, granularity="pair", top_k=top_k, batch_size=batch_size)

    best = {"plain": float("inf"), "pair stats": float("inf")}
    peak = {"plain": 0, "pair stats": 0}
    for _ in range(repeats):
        for name, run in (("plain", plain), ("pair stats", statistics)):
            with PeakMemory() as memory:
                tick = time.perf_counter()
                result = run()
                elapsed = time.perf_counter() - tick
            best[name] = min(best[name], elapsed)
            peak[name] = max(peak[name], memory.growth)
            if name == "pair stats":
                stats = result

    with tempfile.TemporaryDirectory() as tmp:
        measured = folder_bytes(stats.save(Path(tmp) / "pair_stats"))
    slots = min(images, top_k)  # extremes kept per pair and side so far; they stop growing at top_k
    per_slot = spec.heads * spec.channels * 2 * (8 + 8)  # high and low lists, float64 value + int64 position each
    saturated = measured + (top_k - slots) * per_slot
    reference = 1000 * spec.heads * spec.channels * spec.output_dim * 4
    return {
        "model": model,
        "image_size": size,
        "heads": spec.heads,
        "channels": spec.channels,
        "output_dim": spec.output_dim,
        "images": images,
        "batch_size": batch_size,
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 1),
        "plain_images_per_s": images / best["plain"],
        "pair_stats_images_per_s": images / best["pair stats"],
        "ratio": best["pair stats"] / best["plain"],
        "plain_peak_growth_mb": peak["plain"] / 2**20,
        "pair_stats_peak_growth_mb": peak["pair stats"] / 2**20,
        "artifact_mb_measured": measured / 2**20,
        "artifact_mb_per_1000_images": saturated / 2**20,
        "reference_gb_per_1000_images": reference / 1e9,
        "top_k": top_k,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50x16")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.no_grad():
        print(json.dumps(measure(args.model, args.images, args.batch_size, args.repeats, args.top_k), indent=2))


if __name__ == "__main__":
    main()

"""`segment --lens heads` vs a plain forward over the same images, in one process (issue 12;
docs/methods/segmentation.md#lenses).

Two ratios, alternating the modes so that load from other processes hits both alike, best of `--repeats` each:
- maps: the heads lens's maps and zero-shot classes of preprocessed batches (`Segmenter`, one factorised forward per
  batch) vs `lens.encode_image` (the backend's own forward) on the same tensors;
- study: `segmentation_study(..., ["heads"])` over a shapes-world segmentation source (rendering, masks, metrics
  included) vs a plain pass over the same source (rendering, preprocessing, `lens.encode_image`).
Memory: the study's peak resident-set growth at N and 2N images (flat when nothing grows with the number of images).

    python benchmarks/segment_overhead.py --model toy:vit --images 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from pair_overhead import PeakMemory

import cliplens
from cliplens.apps.segmentation import Segmenter, Selection
from cliplens.data.loader import stream
from cliplens.data.segmentation import segmentation_source
from cliplens.workflows.segmentation import chosen_heads, segmentation_study


def best_of(runs: dict, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            tick = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - tick)
    return best


def measure(model: str, images: int, batch_size: int, repeats: int, seed: int) -> dict:
    lens = cliplens.load(model)
    data = f"shapes:segmentation:{images}:{seed}"
    batches = [batch.images for batch in stream(lens, segmentation_source(data), batch_size=batch_size)]
    directions = torch.nn.functional.normalize(torch.randn(6, lens.spec.output_dim), dim=-1).to(lens.dtype)
    segmenter = Segmenter(lens, ["heads"], directions, Selection(heads=tuple(chosen_heads(lens, 4))))

    def maps() -> None:
        for pixels in batches:
            segmenter(pixels, single_object=False)

    def plain_tensors() -> None:
        for pixels in batches:
            lens.encode_image(pixels)

    def study() -> None:
        segmentation_study(lens, data, ["heads"], examples=0, batch_size=batch_size)

    def plain_pass() -> None:
        for batch in stream(lens, segmentation_source(data), batch_size=batch_size):  # renders, as the study does
            lens.encode_image(batch.images)

    with torch.no_grad():
        plain_tensors(), maps()  # warm-up
        compute = best_of({"plain": plain_tensors, "heads maps": maps}, repeats)
        whole = best_of({"plain pass": plain_pass, "segment": study}, repeats)
        growth = {}
        for count in (images, 2 * images):
            with PeakMemory() as memory:
                segmentation_study(lens, f"shapes:segmentation:{count}:{seed}", ["heads"], examples=0,
                                   batch_size=batch_size)
            growth[count] = memory.growth / 2**20
    return {
        "model": model, "images": images, "batch_size": batch_size, "threads": torch.get_num_threads(),
        "plain_forward_s": compute["plain"], "heads_maps_s": compute["heads maps"],
        "maps_ratio": compute["heads maps"] / compute["plain"],
        "plain_pass_s": whole["plain pass"], "segment_s": whole["segment"],
        "study_ratio": whole["segment"] / whole["plain pass"],
        "peak_growth_mb": {str(count): round(mb, 1) for count, mb in growth.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy:vit")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.model, args.images, args.batch_size, args.repeats, args.seed)
    print(json.dumps(result, indent=2))
    print(f"segment --lens heads / plain forward: maps {result['maps_ratio']:.2f}x, whole pass "
          f"{result['study_ratio']:.2f}x")


if __name__ == "__main__":
    main()

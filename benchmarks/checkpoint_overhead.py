"""What checkpoints cost a `collect` pass, against the same pass without them, in one process.

For each model: the pass without checkpoints and the same pass writing a checkpoint every k batches, for each k in
`--every`, alternated and repeated (best of the repeats). Three ratios per interval: the end-to-end time against the
pass without checkpoints (on a shared machine this one is noisy: other jobs' load moves it by more than the effect),
the time inside the checkpoint writes of the same run as a share of that run (robust to the load), and the write
time of one checkpoint of the model's real running state (median of five) over k batch times. A checkpoint costs the
same whatever the interval, so the last ratio also gives the overhead at the default interval of 100 batches, which
shows end to end only in runs of hundreds of batches: the toy model allows that, a full-size one on 2 CPU cores not.

    python benchmarks/checkpoint_overhead.py --models ViT-B-32 --images 64 --batch-size 16 --every 1,4
    python benchmarks/checkpoint_overhead.py --models toy:vit --images 3232 --batch-size 16 --every 100
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import torch

import cliplens
from cliplens.data.loader import LoadReport
from cliplens.settings import Settings
from cliplens.stats.accumulate import HeadReducer, PairReducer
from cliplens.stats.checkpoint import EVERY, Checkpoints

GRANULARITY = {"vit": "head", "resnet": "pair"}


def write_seconds(lens, batch: torch.Tensor, folder: str) -> tuple[float, float]:
    """(median seconds of one checkpoint write of the model's collect state, its size in MB)."""
    settings = Settings(GRANULARITY[lens.kind])
    reducer = (HeadReducer(lens.decomposer, settings) if lens.kind == "vit"
               else PairReducer(lens.decomposer, settings, top_k=50))
    with torch.no_grad():
        reducer.update(lens.images_to_tensor(batch), torch.arange(len(batch)))
    checkpoints = Checkpoints(folder, "bench", {"pass": "bench"}, every=1)
    state = reducer.state()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        checkpoints.save("collect", len(batch), state, {"labels": reducer.labels}, LoadReport())
        times.append(time.perf_counter() - start)
    return statistics.median(times), sum(t.numel() * t.element_size() for t in state.values()) / 1e6


def bench(name: str, images: int, batch_size: int, intervals: list[int], repeats: int) -> None:
    lens = cliplens.load(name, seed=0)
    size = lens.spec.image_size
    data = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    dataset = [(image, 0) for image in data]
    options = dict(granularity=GRANULARITY[lens.kind], batch_size=batch_size)
    batches = -(-images // batch_size)
    saving = [0.0]
    save = Checkpoints.save

    def timed_save(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return save(self, *args, **kwargs)
        finally:
            saving[0] += time.perf_counter() - start

    Checkpoints.save = timed_save
    with tempfile.TemporaryDirectory() as folder:
        lens.collect(dataset[:batch_size], **options)  # warm-up
        best = {0: (float("inf"), 0.0), **{k: (float("inf"), 0.0) for k in intervals}}
        for _ in range(repeats):
            for every in best:
                saving[0], start = 0.0, time.perf_counter()
                lens.collect(dataset, checkpoint_dir=folder if every else None, checkpoint_every=every, **options)
                best[every] = min(best[every], (time.perf_counter() - start, saving[0]))
        write, megabytes = write_seconds(lens, data[:batch_size], folder)
    Checkpoints.save = save
    plain = best[0][0]
    per_batch = plain / batches
    print(f"{name}: {batches} batches of {batch_size}, {per_batch:.3f} s per batch without checkpoints; one "
          f"checkpoint ({megabytes:.0f} MB of state) takes {write:.3f} s to write")
    for every in intervals:
        seconds, inside = best[every]
        print(f"  every {every:>4} batches ({batches // every} written): × {seconds / plain:.4f} end to end, "
              f"× {seconds / (seconds - inside):.4f} from the time inside the writes, "
              f"× {1 + write / (every * per_batch):.4f} from the write time")
    print(f"  default (every {EVERY}): × {1 + write / (EVERY * per_batch):.4f} from the write time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--every", default="1,4", help="checkpoint intervals to time end to end, in batches")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"best of {args.repeats}")
    for name in args.models.split(","):
        bench(name, args.images, args.batch_size, [int(k) for k in args.every.split(",")], args.repeats)


if __name__ == "__main__":
    main()

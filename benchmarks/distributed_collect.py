"""`collect` in one process against two torchrun processes (gloo) on the same images, with each process's memory.

The launcher runs the same worker three ways: one process on all threads, one process on one thread, and
`torchrun --nproc-per-node 2` (torchrun gives each rank one thread). Every worker builds the same random images,
warms up on one batch by itself, waits for the other ranks, times its `lens.collect(..., distributed=None)` call (for the ranks: their own slice, the exchange and rank 0's
merge) and reports its peak RSS; the launcher prints one row per run, with the slowest rank's time.

    python benchmarks/distributed_collect.py --model ViT-B-32 --images 64 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from cliplens.stats.distributed import launched
from measure import peak_rss_gib


def worker(args: argparse.Namespace) -> None:
    import cliplens

    torch.set_num_threads(args.threads)
    lens = cliplens.load(args.model, seed=0)
    size = lens.spec.image_size
    data = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    dataset = [(image, 0) for image in data]
    granularity = "head" if lens.kind == "vit" else "pair"
    lens.collect(dataset[: args.batch_size], granularity=granularity, batch_size=args.batch_size)  # warm-up, alone
    if launched():  # start the clocks together: ranks finish loading at different times
        dist.init_process_group("gloo")
        dist.barrier()
    start = time.perf_counter()
    stats = lens.collect(dataset, granularity=granularity, batch_size=args.batch_size, distributed=None)
    seconds = time.perf_counter() - start
    if launched():
        dist.destroy_process_group()
    print(json.dumps({"rank": int(os.environ.get("RANK", 0)), "seconds": seconds, "peak_gib": peak_rss_gib(),
                      "count": None if stats is None else stats.count, "threads": torch.get_num_threads()}))


def launch(args: argparse.Namespace, processes: int, threads: int) -> list[dict]:
    here = os.path.abspath(__file__)
    command = [here, "--worker", "--model", args.model, "--images", str(args.images), "--batch-size",
               str(args.batch_size), "--threads", str(threads)]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] + command
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, check=True)
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{args.model}, {args.images} images, batch {args.batch_size}")
    print(f"{'processes × threads':20} {'seconds':>8} {'img/s':>7} {'speed-up':>8}  peak RSS per rank (GiB)")
    base = None
    for processes, threads in ((1, args.threads), (1, 1), (2, 1)):
        ranks = launch(args, processes, threads)
        seconds = max(rank["seconds"] for rank in ranks)
        base = base or seconds
        memory = ", ".join(f"{rank['peak_gib']:.2f}" for rank in sorted(ranks, key=lambda rank: rank["rank"]))
        print(f"{f'{processes} × {threads}':20} {seconds:8.1f} {args.images / seconds:7.2f} {base / seconds:8.2f}  "
              f"{memory}")


if __name__ == "__main__":
    main()

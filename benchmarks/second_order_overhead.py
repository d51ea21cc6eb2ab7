"""What the second-order statistics of one MLP layer cost next to the plain forward pass they ride on.

Random-init ViT-B-32 (full size, fp32, CPU) and random images, all in one process: the backend's own `encode_image`,
then the phases of `collect_second_order` for layer 9 (J = 24 later heads): building the fixed directions U and their
Gram matrices once, pass 1 (moments: one forward per batch + coordinate moments), pass 2 (exact centred norms from the
pass-1 mean + top-k) and the per-neuron results (top-k and all-image principal directions, thresholds), and finally
the whole `collect_second_order` call through the data loader. Times are medians over repeats; memory is the
process's peak RSS after each phase (it only grows).

    PYTHONPATH=src python benchmarks/second_order_overhead.py --images 32 --batch-size 16

(about 2 minutes on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import cliplens
from measure import peak_rss_gib, timed
from cliplens.decompose.second_order import SecondOrderLens
from cliplens.stats.second_order import DERIVED, SecondOrderStats, collect_second_order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--convention", default="reference", choices=["reference", "separate"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    lens = cliplens.load(args.model, seed=0)
    size = lens.spec.image_size
    data = torch.randn(args.images, 3, size, size, generator=torch.Generator().manual_seed(0))
    batches = data.split(args.batch_size)
    settings = dict(scale=100.0, normalize=True)

    def plain() -> None:
        with torch.no_grad():
            for batch in batches:
                lens.encode_image(batch)

    build_start = time.perf_counter()
    second_order = SecondOrderLens(lens.decomposer, args.layer, args.convention)
    second_order.basis.gram  # noqa: B018 (cached: computed once per model and layer)
    build = time.perf_counter() - build_start
    state: dict[str, SecondOrderStats] = {}

    def first_pass() -> None:
        state["stats"] = SecondOrderStats(second_order.basis, top_k=args.top_k, **settings)
        for batch in batches:
            state["stats"].update(second_order(batch, **settings))

    def second_pass() -> None:
        state["stats"].start_ranking()
        for start, batch in zip(range(0, args.images, args.batch_size), batches):
            state["stats"].rank(second_order(batch, **settings), torch.arange(start, start + len(batch)))

    def results() -> None:  # timed once, right after a second pass: nothing is cached yet
        for name in DERIVED:
            getattr(state["stats"], name)

    basis = second_order.basis
    print(f"# {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"{args.model} random init fp32, layer {args.layer}: J = {basis.num_heads}, F = {basis.num_neurons}, "
          f"J + K = {basis.dim} ({args.convention}), top-k {args.top_k}; {args.images} images, batch "
          f"{args.batch_size}, median of {args.repeats} (one-off phases: once)")
    print(f"{'phase':34} {'seconds':>8} {'img/s':>8} {'× plain':>8} {'peak GiB':>9}", flush=True)

    def report(name: str, seconds: float, per_image: bool = True) -> None:
        rate = f"{args.images / seconds:8.1f}" if per_image else ""
        print(f"{name:34} {seconds:8.2f} {rate:>8} {seconds / base:8.2f} {peak_rss_gib():9.2f}", flush=True)

    plain(), first_pass()  # warm-up
    base = timed(plain, args.repeats)
    report("encode_image (plain forward)", base)
    report("  directions U + Gram (once)", build, per_image=False)
    report("  pass 1: moments", timed(first_pass, args.repeats))
    report("  pass 2: norms + top-k", timed(second_pass, args.repeats))
    report("  per-neuron results (once)", timed(results, 1), per_image=False)
    dataset = [(image, 0) for image in data]
    report("collect_second_order (all, once)", timed(lambda: collect_second_order(
        lens, dataset, layer=args.layer, convention=args.convention, top_k=args.top_k, batch_size=args.batch_size,
        **settings), 1))

if __name__ == "__main__":
    main()

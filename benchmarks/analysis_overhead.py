"""What each statistic of `cliplens analyze` costs over a plain forward pass through the same data loader.

Every configuration streams the same images through `cliplens.data.loader.stream` (the loader every pass uses), and
the configurations are interleaved within each repeat (plain, head, spatial, ..., plain, head, ...) so that a change
in the machine's load hits them alike; the load average is printed before and after (a loaded machine flatters the
ratios: the forward waits for the CPU as much as the statistics do). Ratios are per pass: the second-order and
`analyze --all` rows make two passes and are divided by two. `--head-images` adds the rows of `--ask head-images`:
its pass 2 alone (directions fixed beforehand) and the fit passes with and without it, so the extra work it puts on
a shared pass 2 is the difference of two rows; it also prints the part's size on disk. `--checkpoint-every N` adds
the `--all` fit checkpointed every N batches (what `analyze --checkpoint-every` writes, to a temporary folder).

    python benchmarks/analysis_overhead.py --model ViT-B-32 --images 64 --batch-size 16 --repeats 3
    python benchmarks/analysis_overhead.py --memory toy:vit   # peak memory at 128 and 1,024 images, one process each
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import cliplens
from cliplens.apps.principal_images import PrincipalImages, head_directions
from cliplens.data.loader import stream
from cliplens.evaluate.piece_edits import head_labels
from cliplens.stats.checkpoint import Checkpoints, Passes
from cliplens.stats.fit_passes import FitRequest, fit_statistics, one_pass
from cliplens.text.candidates import HEAD_POOL, candidate_texts
from measure import peak_rss_gib


def head_images(lens: cliplens.Lens, data: list, batch_size: int, layer: int) -> dict[str, tuple[object, int]]:
    """The rows of `analyze --ask head-images` (directions oriented by the shapes vocabulary)."""
    _, texts, embeddings = candidate_texts(lens, None, HEAD_POOL, pool="shapes")

    def later(pieces):
        return PrincipalImages(head_directions(pieces, head_labels(pieces.labels), embeddings, texts, pool={},
                                               spans=lens.decomposer.head_spans(pieces.settings)))

    reducer = later(lens.collect(data, spatial=True, batch_size=batch_size))

    def fixed(batch):
        reducer.update(lens, batch.images, batch.indices)

    fit = {"batch_size": batch_size}
    return {
        "head images: pass 2 alone": (lambda: one_pass(lens, data, fixed, description="head images",
                                                       batch_size=batch_size, num_workers=0, progress=False), 1),
        "fit: per-token heads + head images": (
            lambda: fit_statistics(lens, data, FitRequest(head_images=True), later=later, **fit), 2),
        f"fit: per-token heads + L{layer} + head images": (
            lambda: fit_statistics(lens, data, FitRequest(mlp_layers=(layer,), head_images=True), later=later, **fit),
            2),
    }


def part_size(lens: cliplens.Lens, data: list, batch_size: int) -> None:
    """The part `head-images` on disk at the defaults (its tensors as saved; fixed by the model, not the images)."""
    _, texts, embeddings = candidate_texts(lens, None, HEAD_POOL, pool="shapes")
    pieces = lens.collect(data, spatial=True, batch_size=batch_size)
    reducer = PrincipalImages(head_directions(pieces, head_labels(pieces.labels), embeddings, texts, pool={},
                                              spans=lens.decomposer.head_spans(pieces.settings)))
    report = one_pass(lens, data, lambda batch: reducer.update(lens, batch.images, batch.indices),
                      description="head images", batch_size=batch_size, num_workers=0, progress=False)
    tensors, _ = reducer.artifact(lens, data, report)
    size = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
    print(f"# part head-images: {size} bytes ({size / 2**20:.2f} MiB) for {len(reducer.directions.heads)} heads, "
          f"{reducer.components} components, {reducer.top_k} images per end")


def configurations(lens: cliplens.Lens, data: list, batch_size: int, layer: int,
                   checkpoint_every: int) -> dict[str, tuple[object, int]]:
    """name -> (run, passes)."""
    def plain() -> None:
        with torch.no_grad():
            for batch in stream(lens, data, batch_size=batch_size):
                lens.encode_image(batch.images)

    def checkpointed() -> None:
        with tempfile.TemporaryDirectory() as folder:
            passes = Passes(Checkpoints(folder, "analyze", {}, checkpoint_every))
            fit_statistics(lens, data, FitRequest(mlp_layers=(layer,)), batch_size=batch_size, passes=passes)

    every = {f"the same, a checkpoint every {checkpoint_every} batches": (checkpointed, 2)} if checkpoint_every else {}
    return {
        "plain forward": (plain, 1),
        "head statistics": (lambda: lens.collect(data, batch_size=batch_size), 1),
        "head statistics, per token": (lambda: lens.collect(data, spatial=True, batch_size=batch_size), 1),
        f"second-order L{layer}": (lambda: fit_statistics(lens, data, FitRequest(pieces=False, mlp_layers=(layer,)),
                                                         batch_size=batch_size), 2),
        f"analyze --all fit (per-token heads + L{layer})": (
            lambda: fit_statistics(lens, data, FitRequest(mlp_layers=(layer,)), batch_size=batch_size), 2),
        **every,
    }


def overhead(model: str, images: int, batch_size: int, repeats: int, layer: int | None, images_rows: bool,
             checkpoint_every: int) -> None:
    lens = cliplens.load(model, seed=0)
    size = lens.spec.image_size
    pixels = torch.rand(images, 3, size, size, generator=torch.Generator().manual_seed(0))
    data = [(image, 0) for image in pixels]
    layer = lens.spec.layers // 2 if layer is None else layer
    runs = configurations(lens, data, batch_size, layer, checkpoint_every)
    if images_rows:
        runs.update(head_images(lens, data, batch_size, layer))
    for run, _ in runs.values():  # warm-up: folded read-outs, second-order bases, allocator
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    load_before = os.getloadavg()
    for _ in range(repeats):
        for name, (run, passes) in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / passes)
    load_after = os.getloadavg()
    base = statistics.median(times["plain forward"])
    print(f"# {model}: {images} images, batch {batch_size}, {torch.get_num_threads()} threads, median of {repeats} "
          f"interleaved repeats; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'configuration':48} {'s per pass':>10} {'ratio':>6} {'range':>13}")
    for name, values in times.items():
        ratios = [value / base for value in values]
        print(f"{name:48} {statistics.median(values):10.2f} {statistics.median(values) / base:6.2f} "
              f"{min(ratios):6.2f}-{max(ratios):.2f}")
    if images_rows:
        part_size(lens, data, batch_size)


def child(model: str, images: int, layer: int) -> None:
    lens = cliplens.load(model, seed=0)
    fit_statistics(lens, f"shapes:test:{images}:0", FitRequest(mlp_layers=(layer,)), batch_size=32)
    print(f"{peak_rss_gib():.3f}")


def memory(model: str, layer: int) -> None:
    """Peak resident memory of the whole fit (per-token heads + one second-order layer) at two data sizes."""
    print(f"# {model}: peak RSS of `analyze` fit passes (per-token heads + L{layer}), one fresh process per size")
    for images in (128, 1024):
        out = subprocess.run([sys.executable, __file__, "--child", model, str(images), str(layer)], check=True,
                             capture_output=True, text=True).stdout.split()[-1]
        print(f"{images:6d} images: {float(out):.3f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=None, help="second-order MLP layer [default: the middle one]")
    parser.add_argument("--memory", default=None, metavar="MODEL")
    parser.add_argument("--head-images", action="store_true", help="add the rows of analyze --ask head-images")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="add the --all fit with a checkpoint every this many batches (written to a temporary "
                             "folder)")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    if args.memory:
        memory(args.memory, 1 if args.layer is None else args.layer)
        return
    overhead(args.model, args.images, args.batch_size, args.repeats, args.layer, args.head_images,
             args.checkpoint_every)


if __name__ == "__main__":
    main()

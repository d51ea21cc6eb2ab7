"""Batched torch OMP (cliplens) vs scikit-learn on the second-order lens' problem size, with a matmul as yardstick.

Problem: 3072 random unit targets × 30,000 random unit atoms, d = 512, k = 128 non-zeros per target.

scikit-learn solves one target at a time, so it is timed on a few targets and extrapolated linearly to all of them
(per-target time × targets, plus the one-off Gram matrix of the SparseCoder route); the table marks those rows.
Two scikit-learn routes are timed:
  - `orthogonal_mp(precompute=False)`: residual-based, light on memory, scikit-learn's fastest route at this size;
  - `SparseCoder(transform_algorithm="omp")`: what the references call; it builds the 30k × 30k Gram matrix and, per
    target, copies it (3.6 GB in float32), so it is timed on fewer targets and in float32 only.
The yardstick is one [targets, d] × [d, atoms] product, the work of one OMP step; k of them are the floor of any OMP
that recomputes all correlations each step.

Shared machines: cliplens runs the full set in its batches of `--batch-size` targets (the solver works batch by batch
anyway), and each batch is timed next to its matmul yardstick and a slice of the scikit-learn targets, so all three
see the same load. The codes are checked against scikit-learn float64 on every timed target.

Run: PYTHONPATH=src python benchmarks/omp_vs_sklearn.py  (≈ 10 min on 2 idle cores; --help for smaller sizes)
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import numpy as np
import sklearn
import threadpoolctl
import torch
from sklearn.decomposition import SparseCoder
from sklearn.linear_model import orthogonal_mp

from cliplens.explain.omp import SparseCodes, orthogonal_matching_pursuit


def seconds(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def random_units(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def agreement(ids: torch.Tensor, coef: torch.Tensor, reference: np.ndarray) -> tuple[int, float]:
    """(targets whose support equals the reference's, max |coef difference|) over the rows of `reference` [n, M]."""
    same, worst = 0, 0.0
    for b, row in enumerate(reference):
        used = ids[b] >= 0
        ours = np.zeros_like(row)
        ours[ids[b][used].cpu().numpy()] = coef[b][used].double().cpu().numpy()
        same += set(np.flatnonzero(ours).tolist()) == set(np.flatnonzero(row).tolist())
        worst = max(worst, float(np.abs(ours - row).max()))
    return same, worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=3072)
    parser.add_argument("--atoms", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--sklearn-targets", type=int, default=9, help="targets timed with orthogonal_mp, per dtype")
    parser.add_argument("--coder-targets", type=int, default=2, help="targets timed with SparseCoder (float32)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    dictionary64 = random_units(args.atoms, args.dim, generator)
    targets64 = random_units(args.targets, args.dim, generator)
    blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, device {args.device}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), scikit-learn {sklearn.__version__}, "
          f"numpy {np.__version__}; numpy/scipy BLAS: {blas}")
    print(f"problem: {args.targets} targets x {args.atoms} atoms, d={args.dim}, k={args.k}")
    print("load average at start (1, 5, 15 min): %.1f %.1f %.1f\n" % os.getloadavg())

    rows: list[tuple[str, str, int, float, float, str]] = []  # name, dtype, timed targets, time, time for all, note
    checks: list[str] = []
    batches = range(0, args.targets, args.batch_size)
    sklearn_slices = np.array_split(np.arange(args.sklearn_targets), len(batches))
    exact: np.ndarray | None = None  # scikit-learn float64 codes of the timed targets [n, M]
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).removeprefix("torch.")
        dictionary = dictionary64.to(args.device, dtype)
        atoms_t = np.asfortranarray(dictionary64.numpy().T.astype(name))
        sync = torch.cuda.synchronize if dictionary.is_cuda else (lambda: None)
        orthogonal_matching_pursuit(dictionary[:8], dictionary, 2)  # warm-up
        product = ours = sklearn_time = 0.0
        parts: list[SparseCodes] = []
        sklearn_parts: list[np.ndarray] = []
        for start, timed in zip(batches, sklearn_slices):
            batch = targets64[start : start + args.batch_size].to(args.device, dtype)
            product += seconds(lambda: (batch @ dictionary.T, sync()))[0]
            elapsed, codes = seconds(lambda: (orthogonal_matching_pursuit(batch, dictionary, args.k), sync())[0])
            ours += elapsed
            parts.append(codes)
            if len(timed):
                few = targets64[timed].numpy().astype(name).T
                elapsed, coefs = seconds(lambda: orthogonal_mp(atoms_t, few, n_nonzero_coefs=args.k, precompute=False))
                sklearn_time += elapsed
                sklearn_parts.append(np.atleast_2d(coefs.T))
            print(f"{name}: targets {start}+{len(batch)} done, cliplens {ours:.1f} s, "
                  f"scikit-learn {sklearn_time:.1f} s for {sum(len(p) for p in sklearn_parts)} targets", flush=True)
        ids, coef = torch.cat([p.ids for p in parts]), torch.cat([p.coef for p in parts])
        rows.append((f"one matmul [B,d]x[d,M], x{args.k} = {args.k * product:.1f} s", name, args.targets,
                     product, product, "yardstick"))
        rows.append(("cliplens orthogonal_matching_pursuit", name, args.targets, ours, ours,
                     f"{ours / (args.k * product):.2f}x the k-matmul floor"))
        rows.append(("sklearn orthogonal_mp (precompute=False)", name, args.sklearn_targets, sklearn_time,
                     sklearn_time / args.sklearn_targets * args.targets,
                     f"extrapolated x{args.targets / args.sklearn_targets:.0f}"))
        sklearn_codes = np.concatenate(sklearn_parts)
        exact = sklearn_codes if exact is None else exact
        same, worst = agreement(ids, coef, exact)
        checks.append(f"cliplens {name} vs sklearn orthogonal_mp float64: {same}/{len(exact)} identical supports, "
                      f"max |coef diff| {worst:.1e}")
        if name == "float32":
            same = sum(set(np.flatnonzero(a)) == set(np.flatnonzero(b)) for a, b in zip(sklearn_codes, exact))
            checks.append(f"sklearn orthogonal_mp float32 vs its float64: {same}/{len(exact)} identical supports, "
                          f"max |coef diff| {np.abs(sklearn_codes - exact).max():.1e}")

    dictionary32 = dictionary64.numpy().astype(np.float32)
    gram_time = seconds(lambda: dictionary32 @ dictionary32.T)[0]
    coder = SparseCoder(dictionary=dictionary32, transform_algorithm="omp", transform_n_nonzero_coefs=args.k)
    few = targets64[: args.coder_targets].numpy().astype(np.float32)
    elapsed, coefs = seconds(lambda: coder.transform(few))
    rows.append(("sklearn SparseCoder omp (the references' route)", "float32", len(few), elapsed,
                 gram_time + (elapsed - gram_time) / len(few) * args.targets,
                 f"Gram {gram_time:.1f} s once + extrapolated x{args.targets / len(few):.0f}"))
    same, worst = agreement(ids, coef, coefs)  # ids/coef: the float32 run, the last one above
    checks.append(f"cliplens float32 vs sklearn SparseCoder float32: {same}/{len(few)} identical supports, "
                  f"max |coef diff| {worst:.1e}")

    ours_total = {r[1]: r[4] for r in rows if r[0].startswith("cliplens")}
    print(f"\n| method | dtype | targets timed | measured (s) | for {args.targets} targets (s) | speed-up | note |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, dtype, timed, elapsed, total, note in rows:
        speedup = "" if name.startswith("one matmul") else f"{total / ours_total[dtype]:.1f}x"
        print(f"| {name} | {dtype} | {timed} | {elapsed:.2f} | {total:.1f} | {speedup} | {note} |")
    for dtype, ours in ours_total.items():
        fastest = min(r[4] for r in rows if r[0].startswith("sklearn") and r[1] == dtype)
        print(f"\n{dtype}: cliplens is {fastest / ours:.1f}x faster than the fastest scikit-learn route", end="")
    print("\n\nload average at end (1, 5, 15 min): %.1f %.1f %.1f" % os.getloadavg())
    print("agreement on the timed targets:")
    for line in checks:
        print(f"  {line}")


if __name__ == "__main__":
    main()

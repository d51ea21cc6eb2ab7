"""Text for a model without text, checked offline: toy:vit's image tower aligned to toy:rn's space on shapes images.

Fits the ridge map toy:vit → toy:rn (docs/methods/families.md#alignment), reports the held-out explained variance
(baseline: 0 for predicting the mean), then runs TextSpan (2 texts per head, shapes vocabulary) on toy:vit's heads
twice: with toy:vit's own text tower, and mapped into toy:rn's space with toy:rn's text. Prints both per head and the
overlap of the colour heads (a colour among the two texts) and of the position heads (likewise), and how often an
overlap as large arises when the aligned run's findings are dealt to the 16 heads at random.

    python benchmarks/alignment_check.py --fit 1024 --held-out 256 --stats 256 --seeds 3,4,0

tests/test_families.py asserts the overlap on a smaller run (`check`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

import cliplens
from cliplens.explain.base import fit_pieces
from cliplens.explain.textspan import TextSpan
from cliplens.factory import align
from cliplens.shapes.vocabulary import VOCABULARY
from cliplens.stats.alignment import Alignment, fit_alignment
from cliplens.text import embed_texts, get_pool


def head_texts(lens, data: str) -> dict[str, list[str]]:
    pool = get_pool("shapes")
    stats = lens.collect(data, granularity="head")
    heads = [label for label in stats.labels if label.startswith("L") and "H" in label]
    fitted = fit_pieces(TextSpan(n_texts=2), stats.moments, stats.labels, embed_texts(lens, pool, templates="photo"),
                        pool, only=heads)
    return {label: list(span.texts_) for label, span in fitted.items()}


KINDS = ("colour", "position")  # a head is of a kind when one of its two texts is a word of that kind


@dataclass
class Check:
    alignment: Alignment
    own: dict[str, list[str]]  # head -> TextSpan's texts with toy:vit's own text
    aligned: dict[str, list[str]]  # head -> the same through the alignment, with toy:rn's text

    def heads(self, kind: str) -> tuple[set[str], set[str]]:
        """(own, aligned) heads of a kind."""
        return tuple({head for head, texts in found.items() if set(texts) & set(VOCABULARY[kind])}
                     for found in (self.own, self.aligned))

    def shared(self) -> int:
        """Heads of a kind in both runs, summed over the kinds."""
        return sum(len(own & aligned) for own, aligned in map(self.heads, KINDS))

    def chance(self, draws: int = 100_000, seed: int = 0) -> float:
        """How often `shared` would be at least this large if the aligned run's findings were dealt to the heads at
        random (a permutation of the heads; Monte Carlo over `draws` permutations)."""
        labels = list(self.own)
        own = np.array([[label in self.heads(kind)[0] for label in labels] for kind in KINDS])  # [kinds, heads]
        aligned = np.array([[label in self.heads(kind)[1] for label in labels] for kind in KINDS])
        order = np.random.default_rng(seed).permuted(np.tile(np.arange(len(labels)), (draws, 1)), axis=1)
        shared = (own[None] & aligned[:, order].transpose(1, 0, 2)).sum((1, 2))  # [draws]
        return float((shared >= self.shared()).mean())


def check(fit: int, held_out: int, stats: int, seeds: tuple[int, int, int] = (3, 4, 0), batch_size: int = 64) -> Check:
    """Align on `fit` shapes train images, score on `held_out` test images, run TextSpan on `stats` test images
    (the data seeds of the three, in that order)."""
    vit, rn = cliplens.load("toy:vit"), cliplens.load("toy:rn")
    alignment = fit_alignment(vit, rn, f"shapes:train:{fit}:{seeds[0]}", f"shapes:test:{held_out}:{seeds[1]}",
                              batch_size=batch_size)
    data = f"shapes:test:{stats}:{seeds[2]}"
    return Check(alignment, head_texts(vit, data), head_texts(align(vit, rn, alignment), data))


def jaccard(a: set[str], b: set[str]) -> str:
    return f"{len(a & b)}/{len(a | b)} (own {sorted(a)}, aligned {sorted(b)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=1024)
    parser.add_argument("--held-out", type=int, default=256)
    parser.add_argument("--stats", type=int, default=256)
    parser.add_argument("--seeds", default="3,4,0", help="data seeds of the fit, held-out and TextSpan images")
    args = parser.parse_args()
    result = check(args.fit, args.held_out, args.stats, tuple(int(seed) for seed in args.seeds.split(",")))
    alignment = result.alignment
    print(f"# explained variance of toy:rn's embedding by toy:vit's, ridge {alignment.ridge:g}: held-out "
          f"{alignment.explained_variance:.3f} ({alignment.held_out_images} images), fit "
          f"{alignment.fit_explained_variance:.3f} ({alignment.fitted_images} images); baseline (the mean) 0")
    for label, texts in result.own.items():
        print(f"{label:6} own: {', '.join(texts):28} aligned: {', '.join(result.aligned[label])}")
    for kind in KINDS:
        print(f"# {kind} heads shared: " + jaccard(*result.heads(kind)))
    print(f"# {result.shared()} shared in all; as many or more by chance (the aligned findings dealt to random heads): "
          f"{result.chance():.1e}")


if __name__ == "__main__":
    main()

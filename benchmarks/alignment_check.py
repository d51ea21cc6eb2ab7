"""Text for a model without text, checked offline: toy:vit's image tower aligned to toy:rn's space on shapes images.

Fits the ridge map toy:vit → toy:rn (docs/methods/families.md#alignment), reports the held-out explained variance
(baseline: 0 for predicting the mean), then runs TextSpan (2 texts per head, shapes vocabulary) on toy:vit's heads
twice: with toy:vit's own text tower, and mapped into toy:rn's space with toy:rn's text. Prints both per head and the
overlap of the colour heads (first text a colour) and of the position heads (a position among the first two texts).

    python benchmarks/alignment_check.py --fit 1024 --held-out 256 --stats 256
"""

from __future__ import annotations

import argparse

import cliplens
from cliplens.explain.base import fit_pieces
from cliplens.explain.textspan import TextSpan
from cliplens.factory import align
from cliplens.shapes.vocabulary import VOCABULARY
from cliplens.stats.alignment import fit_alignment
from cliplens.text import embed_texts, get_pool


def head_texts(lens, data: str) -> dict[str, list[str]]:
    pool = get_pool("shapes")
    stats = lens.collect(data, granularity="head")
    heads = [label for label in stats.labels if label.startswith("L") and "H" in label]
    fitted = fit_pieces(TextSpan(n_texts=2), stats.moments, stats.labels, embed_texts(lens, pool, templates="photo"),
                        pool, only=heads)
    return {label: list(span.texts_) for label, span in fitted.items()}


def jaccard(a: set[str], b: set[str]) -> str:
    return f"{len(a & b)}/{len(a | b)} (own {sorted(a)}, aligned {sorted(b)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=int, default=1024)
    parser.add_argument("--held-out", type=int, default=256)
    parser.add_argument("--stats", type=int, default=256)
    args = parser.parse_args()
    vit, rn = cliplens.load("toy:vit"), cliplens.load("toy:rn")
    alignment = fit_alignment(vit, rn, f"shapes:train:{args.fit}:3", f"shapes:test:{args.held_out}:4", batch_size=64)
    print(f"# explained variance of toy:rn's embedding by toy:vit's, ridge {alignment.ridge:g}: held-out "
          f"{alignment.explained_variance:.3f} ({alignment.held_out_images} images), fit "
          f"{alignment.fit_explained_variance:.3f} ({alignment.fitted_images} images); baseline (the mean) 0")
    own = head_texts(vit, f"shapes:test:{args.stats}:0")
    mapped = head_texts(align(vit, rn, alignment), f"shapes:test:{args.stats}:0")
    for label in own:
        print(f"{label:6} own: {', '.join(own[label]):28} aligned: {', '.join(mapped[label])}")
    colours, positions = set(VOCABULARY["colour"]), set(VOCABULARY["position"])
    for name, test in (("colour", lambda texts: texts[0] in colours),
                       ("position", lambda texts: bool(set(texts) & positions))):
        print(f"# {name} heads shared: " + jaccard({h for h, t in own.items() if test(t)},
                                                   {h for h, t in mapped.items() if test(t)}))


if __name__ == "__main__":
    main()

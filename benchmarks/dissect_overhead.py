"""CLIP-Dissect's cost against plain forward passes, in one run: a random-init torchvision ResNet-50, layers
conv1, layer1..layer4 (3,904 neurons), N probe images, a large concept set, toy:vit as the judge.

Prints the plain forwards of both networks over the same images (same loader, no hooks), then `dissect` with no
cache: text encoding, CLIP image pass, target pass (hooks), similarity; and the ratio of the image passes to the
plain forwards.

    python benchmarks/dissect_overhead.py --images 2000 --concepts words:20000   # as measured in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import time

import torch

import cliplens
from cliplens.data.loader import batches, stream
from cliplens.dissect.run import dissect
from cliplens.dissect.sets import concept_set, probe_source
from cliplens.dissect.targets import torchvision_target

LAYERS = ["conv1", "layer1", "layer2", "layer3", "layer4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--concepts", default="words:20000")
    parser.add_argument("--similarity", default="soft_wpmi")
    parser.add_argument("--judge", default="toy:vit")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    probe = f"shapes:test:{args.images}"
    judge = cliplens.load(args.judge)
    target = torchvision_target("resnet50", seed=0)
    concepts = concept_set(args.concepts)
    source = probe_source(probe)
    with torch.no_grad():
        started = time.perf_counter()
        for batch in stream(judge, source, batch_size=args.batch_size):
            judge.encode_image(batch.images)
        plain_clip = time.perf_counter() - started
        started = time.perf_counter()
        for batch in batches(source, target.preprocess, batch_size=args.batch_size):
            target.module(batch.images)
        plain_target = time.perf_counter() - started
    result = dissect(target, judge, probe, concepts, LAYERS, similarity=args.similarity, batch_size=args.batch_size)
    s = result.seconds
    neurons = sum(layer.similarity.shape[0] for layer in result.layers.values())
    print(f"{args.images} images, {len(concepts)} concepts, {neurons} neurons, judge {args.judge}, {args.similarity}, "
          f"{torch.get_num_threads()} threads")
    print(f"plain forwards: CLIP image tower {plain_clip:.1f}s, ResNet-50 {plain_target:.1f}s")
    print(f"dissect: text {s['clip_text']:.1f}s, CLIP images {s['clip_images']:.1f}s, target {s['target']:.1f}s, "
          f"similarity {s['similarity']:.1f}s")
    passes = s["clip_images"] + s["target"]
    print(f"image passes / plain forwards = {passes / (plain_clip + plain_target):.2f}; "
          f"(passes + similarity) / plain = {(passes + s['similarity']) / (plain_clip + plain_target):.2f}; "
          f"total with text / plain = {sum(s.values()) / (plain_clip + plain_target):.2f}")


if __name__ == "__main__":
    main()

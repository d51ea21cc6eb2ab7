"""How well the toy CLIPs understand bare concept words (CLIP-Dissect's default, no template) against the shapes
world's held-out prompts: zero-shot accuracy on held-out `test` scenes for colour, shape and position.

    python benchmarks/toy_bare_words.py [--images 1000]
"""

from __future__ import annotations

import argparse

import torch

from cliplens.evaluate.zeroshot import accuracy, classifier
from cliplens.models.toy import load_toy
from cliplens.shapes import VOCABULARY, render
from cliplens.shapes.prompts import TEMPLATES, class_phrases
from cliplens.toys.evaluate import encode_images, text_encoder

ATTRIBUTES = ("colour", "shape", "position")
PROMPTS = {  # name -> (class names of an attribute, templates)
    "bare word": (lambda attribute: VOCABULARY[attribute], ("{}",)),
    "a photo of a {}": (lambda attribute: VOCABULARY[attribute], ("a photo of a {}",)),
    "held-out prompts (model card)": (class_phrases, TEMPLATES),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenes = render(args.images, seed=args.seed, split="test")
    print(f"{args.images} test scenes, seed {args.seed}; chance: colour 1/8, shape 1/6, position 1/9")
    for toy in ("vit", "rn"):
        model, preprocess, tokenizer, _ = load_toy(toy)
        embeddings = encode_images(model, preprocess, [scene.image for scene in scenes])
        encode = text_encoder(model, tokenizer)
        for name, (classes, templates) in PROMPTS.items():
            cells = []
            for attribute in ATTRIBUTES:
                labels = torch.tensor([VOCABULARY[attribute].index(s.objects[0].attribute(attribute)) for s in scenes])
                weights = classifier(encode, classes(attribute), templates)
                cells.append(f"{attribute} {accuracy(embeddings, weights, labels):.3f}")
            print(f"toy:{toy:3s} {name:30s} " + "  ".join(cells))


if __name__ == "__main__":
    main()

"""CLIP-Dissect against ground truth on toy:cnn in the shapes world (docs/methods/dissect.md#evaluation).

- Final layer `fc` (neuron k = shape k): top-1 / top-5 / mean rank / label–class cosine, per judge (toy:vit, toy:rn),
  raw concept words and a template, per similarity function.
- Hidden layers: agreement of the label with the attribute value that best explains each neuron's top probe images,
  per layer and similarity function, against a random label (1/M) and against Network Dissection's labels.

    python benchmarks/dissect_shapes.py [--images 1000] [--seed 2]
"""

from __future__ import annotations

import argparse
import functools
import tempfile

import torch

import cliplens
from cliplens.dissect.evaluate import (
    agreement, best_explaining_values, final_layer_scores, network_dissection, shapes_values,
)
from cliplens.dissect.run import dissect
from cliplens.dissect.sets import concept_set, probe_source
from cliplens.dissect.similarity import SIMILARITIES, soft_wpmi, wpmi
from cliplens.dissect.targets import toy_cnn_target
from cliplens.shapes.vocabulary import SHAPES, VOCABULARY
from cliplens.text.embed import template_average
from cliplens.text.templates import resolve_templates

LAYERS = ["layer1", "layer2", "layer3", "layer4", "fc"]
TEMPLATES = ("none", "a photo of a {}")
ATTRIBUTE_OF = {value: attribute for attribute, values in VOCABULARY.items() for value in values}
FUNCTIONS = {**SIMILARITIES, "soft_wpmi uniform": functools.partial(soft_wpmi, marginal="uniform"),
             "wpmi uniform": functools.partial(wpmi, marginal="uniform")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--top", type=int, default=50, help="top images that define a neuron's ground truth")
    args = parser.parse_args()
    torch.set_num_threads(1)
    probe = f"shapes:test:{args.images}:{args.seed}"
    source = probe_source(probe)
    target = toy_cnn_target()
    concepts = concept_set("shapes")
    cache = tempfile.mkdtemp(prefix="dissect-shapes-")
    print(f"probe {probe}, {len(concepts)} shapes-vocabulary concepts; random label agrees with p = "
          f"1/{len(concepts)} = {1 / len(concepts):.3f}; ground truth over each neuron's top {args.top} images")
    hidden = {}
    truth = None
    for judge_name in ("toy:vit", "toy:rn"):
        judge = cliplens.load(judge_name)
        for template in TEMPLATES:
            result = dissect(target, judge, probe, concepts, LAYERS, template=template, cache_dir=cache)
            if truth is None:
                values = shapes_values(source, result.positions)
                truth = {name: best_explaining_values(layer.activations, values, args.top)
                         for name, layer in result.layers.items()}
            text = template_average(judge.encode_text, concepts, resolve_templates(template))
            for function_name, function in FUNCTIONS.items():
                sims = {name: function(result.clip_similarity, layer.activations)
                        for name, layer in result.layers.items()}
                scores = final_layer_scores(sims["fc"], concepts, SHAPES, text)
                print(f"fc  {judge_name} {template!r:18} {function_name:21} top1 {scores['top1']:.3f} top5 "
                      f"{scores['top5']:.3f} mean rank {scores['mean_rank']:.2f} cosine {scores['cosine']:.3f}")
                for name, sim in sims.items():
                    labels = [concepts[c] for c in sim.argmax(1).tolist()]
                    same_attribute = sum(ATTRIBUTE_OF.get(label) == attribute
                                         for label, attribute in zip(labels, truth[name].attributes))
                    hidden[(judge_name, template, function_name, name)] = (
                        agreement(labels, truth[name].values), same_attribute / len(labels), labels)
    print("\nhidden layers: label == ground-truth value (label in the ground truth's attribute)")
    for name in LAYERS:
        gt = truth[name]
        counts = {}
        for attribute in gt.attributes:
            counts[attribute] = counts.get(attribute, 0) + 1
        print(f"{name}: {len(gt.values)} neurons, ground truth strength mean {gt.strength.mean():.2f}; "
              f"attributes {counts}")
        for (judge_name, template, function_name, layer), (exact, attr, _) in hidden.items():
            if layer == name:
                print(f"  {judge_name} {template!r:18} {function_name:21} {exact:.3f} ({attr:.3f})")
        if name != "fc":
            nd_labels, _ = network_dissection(target, name, source, result.positions)
            nd_attr = sum(ATTRIBUTE_OF.get(label) == attribute for label, attribute in zip(nd_labels, gt.attributes))
            clip_labels = hidden[("toy:vit", "none", "soft_wpmi", name)][2]
            print(f"  Network Dissection (IoU, top 0.5%)            {agreement(nd_labels, gt.values):.3f} "
                  f"({nd_attr / len(nd_labels):.3f}); CLIP-Dissect toy:vit raw soft_wpmi == NetDissect: "
                  f"{agreement(clip_labels, nd_labels):.3f}")


if __name__ == "__main__":
    main()

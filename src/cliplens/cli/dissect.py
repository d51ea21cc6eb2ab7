"""`cliplens dissect`: label every neuron of a vision network with CLIP-Dissect (docs/methods/dissect.md)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import click

from ..dissect.cache import default_cache_dir
from ..dissect.outputs import write_dissection
from ..dissect.run import dissect
from ..dissect.sets import concept_set, probe_source
from ..dissect.similarity import DEFAULT_SIMILARITY, MARGINALS, SIMILARITIES
from ..dissect.targets import POOLS, TOKENS, default_layers, target_from_spec
from ..errors import CliplensError
from ..factory import load
from .options import batch_options, device_option, output_option


def _neuron(text: str, layers: list[str] | None) -> tuple[str, int]:
    layer, _, unit = text.rpartition(":")
    if not layer or not unit.isdecimal() or (layers is not None and layer not in layers):
        raise CliplensError(f"--neuron {text!r}: write <layer>:<unit> with a layer named in --layers, e.g. fc:3")
    return layer, int(unit)


@click.command("dissect")
@click.option("--target", required=True, help="toy:cnn, torchvision:<name> (resnet50, ...), a CLIP id (toy:vit, "
              "ViT-B-32, hf:...) for its image tower, or package.module:factory returning a torch module.")
@click.option("--target-weights", default=None, help="torchvision: a .safetensors or state-dict file [default: random "
              "init from --seed]; toy:cnn: a `train-toy --model cnn` folder.")
@click.option("--target-pretrained", default=None, help="CLIP target: its open_clip tag or checkpoint.")
@click.option("--layers", default=None, help="Comma-separated module paths (layer4, layer4.1.conv2, fc; L3, L3.mlp "
              "for CLIP ViTs) [default: conv1,layer1..layer4, or toy:cnn's layer1..layer4,fc].")
@click.option("--probe", default="shapes:test:1000", show_default=True, help="Probe images: a folder (ImageNet val, "
              "CIFAR-100 exported as images), a file list, shapes:<split>[:<n>], or broden:<dir>.")
@click.option("--concepts", default="words", show_default=True, help="A text file (one concept per line), "
              "words[:<n>] (default 20,000 common words), imagenet, shapes, or broden:<dir>.")
@click.option("--clip", default="toy:vit", show_default=True, help="The judge: any CLIP model cliplens loads.")
@click.option("--clip-pretrained", default=None, help="The judge's open_clip tag or checkpoint.")
@click.option("--template", default="none", show_default=True,
              help="none (raw concepts, as the reference), a template set (photo, openai) or a format string.")
@click.option("--similarity", type=click.Choice(list(SIMILARITIES)), default=DEFAULT_SIMILARITY, show_default=True,
              help="How a neuron's activations are scored against each concept's CLIP similarities "
                   "(docs/methods/dissect.md; soft_wpmi is the reference's best).")
@click.option("--marginal", type=click.Choice(MARGINALS), default=None,
              help="(soft_)wpmi's concept marginal: over the layer's neurons (reference) or neuron-free "
                   "[default: layer].")
@click.option("--conv-reduction", type=click.Choice(POOLS), default="avg", show_default=True,
              help="How a conv map [C, H, W] becomes one activation per channel: spatial mean or max.")
@click.option("--tokens", type=click.Choice(TOKENS), default="cls", show_default=True, help="Token outputs: reduction.")
@click.option("--neuron", "neurons", multiple=True, help="<layer>:<unit> to draw with its top probe images; repeat.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Images per neuron grid.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the embedding and activation caches [default: $CLIPLENS_CACHE/dissect].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write any cache.")
@device_option
@click.option("--seed", type=int, default=0, show_default=True, help="Random init of a torchvision target; "
              "rank_reorder's permutations.")
@batch_options
@output_option("cliplens-out/dissect")
def command(**o: Any) -> None:
    """Name what each neuron of any vision network responds to, with a CLIP model as the judge."""
    layers = [name.strip() for name in o["layers"].split(",")] if o["layers"] is not None else None
    neurons = [_neuron(text, layers) for text in o["neurons"]]
    options = {"marginal": o["marginal"]} if o["marginal"] is not None else {}
    if o["marginal"] is not None and o["similarity"] not in ("wpmi", "soft_wpmi"):
        raise CliplensError(f"--marginal is an option of wpmi and soft_wpmi, not of {o['similarity']}")
    if o["similarity"] == "rank_reorder":
        options["seed"] = o["seed"]
    concepts = concept_set(o["concepts"])
    probe_source(o["probe"])  # a missing or empty probe folder stops here, before any model is loaded
    target = target_from_spec(o["target"], weights=o["target_weights"], seed=o["seed"],
                              load_clip=partial(load, pretrained=o["target_pretrained"], device=o["device"]))
    layers = layers or default_layers(target)
    target.layers(layers)  # an unknown layer stops here, before the judge is loaded
    judge = load(o["clip"], o["clip_pretrained"], device=o["device"])
    cache_dir = None if o["no_cache"] else (o["cache_dir"] or default_cache_dir())
    result = dissect(target, judge, o["probe"], concepts, layers, similarity=o["similarity"],
                     similarity_options=options, pool=o["conv_reduction"], tokens=o["tokens"], template=o["template"],
                     batch_size=o["batch_size"], num_workers=o["num_workers"], cache_dir=cache_dir, progress=True)
    write_dissection(result, o["output_dir"], probe=o["probe"], neurons=neurons, top=o["top"])
    for name, layer in result.layers.items():
        labels = [result.concepts[c] for c in layer.labels]
        click.echo(f"{name}: {len(labels)} neurons; first: {', '.join(labels[:6])}{' ...' if len(labels) > 6 else ''}")
    timing = ", ".join(f"{key} {value:.1f}s" for key, value in result.seconds.items())
    click.echo(f"{result.config['images']} probe images, {len(concepts)} concepts ({timing}) -> {o['output_dir']}")

"""Semantic adversarial images from the second-order lens (docs/methods/adversarial.md): the words whose neurons push
an image of a source class toward a target class, prompts that use them, a generator that draws the prompts, and the
success rate of the drawn images against random words and against no words.

Word selection (docs/methods/adversarial.md#words): δ = w(target) − w(source), the difference of the two classes'
zero-shot columns. A neuron's score is m_n ⟨pc_n, δ⟩: its principal second-order direction pc_n (oriented so that
its top images project positively) times m_n, the mean projection of its top images on pc_n (how far it typically moves
the embedding when it fires). The `neurons` largest |score| are kept; each is written as OMP text atoms and a word
weighs coef · score (positive: pushes toward the target); a word keeps its largest weight over the neurons. The
target's and the source's names, and every word whose unit text embedding has cosine ≥ `threshold` with the target's
column, are never chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import CliplensError
from ..explain.omp import SparseTextDecomposition
from ..report.grids import image_grid

CONDITIONS = ("selected", "random", "none")
class Generator(Protocol):
    """Anything that turns prompts into images: `per_prompt` images of each prompt, prompt by prompt, reproducibly."""

    def generate(self, prompts: Sequence[str], per_prompt: int, seed: int) -> list[Image.Image]: ...


@dataclass
class WordChoice:
    """The chosen words (largest weight first), their weights, the neurons kept and their scores."""

    words: list[str]
    weights: list[float]
    neurons: list[int]
    scores: list[float]
    allowed: list[str]  # the pool after the name and threshold filters: random words are drawn from it


def neuron_scores(directions: torch.Tensor, typical: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """m_n ⟨pc_n, δ⟩ [F] for principal directions [F, d], typical projections m [F] and δ [d]."""
    return typical.to(directions) * (directions @ delta.to(directions))


def allowed_words(texts: Sequence[str], embeddings: torch.Tensor, target: str, target_embedding: torch.Tensor,
                  threshold: float, names: Sequence[str] = ()) -> list[bool]:
    """Per pool text, whether it may be chosen: not the target's name (nor any of `names`), not containing it as a
    word, and text cosine with the target below `threshold`."""
    unit = torch.nn.functional.normalize(embeddings.double(), dim=-1)
    cosine = (unit @ torch.nn.functional.normalize(target_embedding.double(), dim=0)).tolist()
    banned = {name.strip().lower() for name in (target, *names)}
    return [not (banned & ({text.strip().lower()} | set(text.strip().lower().split()))) and c < threshold
            for text, c in zip(texts, cosine)]


def select_words(directions: torch.Tensor, typical: torch.Tensor, texts: Sequence[str], embeddings: torch.Tensor,
                 source_embedding: torch.Tensor, target_embedding: torch.Tensor, *, source: str, target: str,
                 neurons: int = 50, words: int = 20, atoms: int = 16, threshold: float = 0.6) -> WordChoice:
    """The `words` allowed pool texts of highest weight among the `neurons` neurons of largest |score|."""
    if not -1.0 <= threshold <= 1.0:
        raise CliplensError(f"--threshold {threshold} is not a cosine; give a value in [-1, 1]")
    allowed = allowed_words(texts, embeddings, target, target_embedding, threshold, names=(source,))
    if not any(allowed):
        raise CliplensError(f"no pool text is allowed for target {target!r} at --threshold {threshold}; raise it")
    scores = neuron_scores(directions, typical, target_embedding - source_embedding)
    alive = directions.norm(dim=-1) > 0
    order = torch.where(alive, scores.abs(), torch.full_like(scores, -1)).argsort(descending=True, stable=True)
    kept = order[: min(neurons, int(alive.sum()))].tolist()
    if not kept:
        raise CliplensError("no neuron of this layer ever moved the embedding: there is nothing to choose words from")
    omp = SparseTextDecomposition(atoms, dtype=torch.float64)
    omp.fit(directions[kept], embeddings, list(texts))
    index = {text: i for i, text in enumerate(texts)}
    best: dict[str, float] = {}
    for n, pairs in zip(kept, omp.texts_):
        for text, coef in pairs:
            weight = coef * scores[n].item()
            if allowed[index[text]] and weight > 0 and weight > best.get(text, 0.0):
                best[text] = weight
    ranked = sorted(best.items(), key=lambda item: (-item[1], index[item[0]]))[:words]
    return WordChoice([w for w, _ in ranked], [v for _, v in ranked], kept, [scores[n].item() for n in kept],
                      [text for text, ok in zip(texts, allowed) if ok])


def random_words(choice: WordChoice, rng: np.random.Generator) -> list[str]:
    """As many words as were chosen, uniformly from the allowed pool: the baseline's words."""
    count = min(len(choice.words), len(choice.allowed))
    return [choice.allowed[i] for i in sorted(rng.choice(len(choice.allowed), size=count, replace=False))]


def compose_prompts(source: str, words: Sequence[str], count: int, per_prompt: int,
                    rng: np.random.Generator) -> list[str]:
    """`count` prompts that mention the source first, each followed by `per_prompt` of the words in random order
    (all of them if fewer); no words: the bare source."""
    if not words:
        return [f"a {source}"] * count
    take = min(per_prompt, len(words))
    return [", ".join([f"a {source}"] + [words[i] for i in rng.choice(len(words), size=take, replace=False)])
            for _ in range(count)]


@dataclass
class Outcome:
    """One condition of one pair: its words, prompts, images and which were classified as the target."""

    source: str
    target: str
    condition: str
    words: list[str]
    prompts: list[str]
    predictions: list[int]
    margins: list[float]  # per image, score(target) − score(source) of the zero-shot classifier
    target_index: int
    examples: list[Image.Image]

    @property
    def images(self) -> int:
        return len(self.predictions)

    @property
    def successes(self) -> int:
        return sum(p == self.target_index for p in self.predictions)

    @property
    def rate(self) -> float:
        return self.successes / self.images

    @property
    def stderr(self) -> float:
        """The binomial standard error √(p(1 − p)/n)."""
        return math.sqrt(self.rate * (1 - self.rate) / self.images)

    @property
    def mean_margin(self) -> float:
        return float(np.mean(self.margins))

    @property
    def margin_stderr(self) -> float:
        return float(np.std(self.margins, ddof=1) / math.sqrt(len(self.margins))) if len(self.margins) > 1 else 0.0

    def row(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "condition": self.condition,
                "words": " | ".join(self.words), "prompts": " | ".join(dict.fromkeys(self.prompts)),
                "images": self.images, "successes": self.successes, "success_rate": self.rate, "stderr": self.stderr,
                "mean_margin": self.mean_margin, "margin_stderr": self.margin_stderr}


def run_condition(generator: Generator, scores: Any, prompts: list[str], per_prompt: int, seed: int,
                  source_index: int, target_index: int) -> tuple[list[int], list[float], list[Image.Image]]:
    """Draw the prompts' images and score them (`scores`: images → zero-shot scores [B, classes]): each image's
    predicted class and its margin score(target) − score(source), and the images."""
    images = generator.generate(prompts, per_prompt, seed)
    if not images:
        raise CliplensError("the generator returned no images")
    logits = scores(images)
    margins = logits[:, target_index] - logits[:, source_index]
    return logits.argmax(-1).tolist(), margins.tolist(), images


def adversarial_figure(outcomes: Sequence[Outcome], classnames: Sequence[str], columns: int = 8) -> Image.Image:
    """One row of example images per (pair, condition), each captioned with its predicted class, the row titled with
    its success rate and words."""
    rows = [image_grid(o.examples[:columns], [classnames[p] for p in o.predictions[: len(o.examples[:columns])]],
                       columns=columns, size=80,
                       title=f"{o.source} -> {o.target}, {o.condition}: {o.successes}/{o.images} = "
                             f"{100 * o.rate:.1f}%; {', '.join(o.words) or 'no words'}")
            for o in outcomes]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    top = 0
    for r in rows:
        sheet.paste(r, (0, top))
        top += r.height
    return sheet

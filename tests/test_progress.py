"""Progress bars: text embedding, OMP and per-piece fits draw one when asked and on a terminal, and never otherwise."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from cliplens.explain.base import fit_pieces
from cliplens.explain.omp import SparseTextDecomposition
from cliplens.explain.textspan import TextSpan
from cliplens.stats.moments import Moments
from cliplens.text.embed import template_average


class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def encode(texts: list[str]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(len(texts))
    return torch.randn(len(texts), 8, generator=generator)


def omp_fit(progress: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    SparseTextDecomposition(2, batch_size=3).fit(torch.randn(7, 8, generator=generator),
                                                 torch.randn(20, 8, generator=generator), progress=progress)


def pieces_fit(progress: bool) -> None:
    generator = torch.Generator().manual_seed(2)
    data = torch.randn(50, 2, 8, generator=generator, dtype=torch.float64)
    moments = Moments(2, 8)
    moments.update(data)
    fit_pieces(TextSpan(n_texts=2, rank=4), moments, ["L0H0", "L0H1"], torch.randn(10, 8, dtype=torch.float64),
               [f"text {i}" for i in range(10)], progress=progress)


STEPS = {
    "embed texts": lambda progress: template_average(encode, [f"t{i}" for i in range(9)], ("{}", "a {}"), 4,
                                                     progress=progress),
    "OMP, 2 atoms": omp_fit,
    "fit TextSpan": pieces_fit,
}


@pytest.mark.parametrize("title", list(STEPS))
@pytest.mark.parametrize("progress, tty", [(True, True), (True, False), (False, True)])
def test_a_bar_only_when_asked_and_on_a_terminal(monkeypatch, title, progress, tty):
    stream = Terminal(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    STEPS[title](progress)
    assert (title in stream.getvalue()) == (progress and tty), stream.getvalue()

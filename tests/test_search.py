"""Head-specific search (docs/methods/head-search.md): the index against the literal pieces, chunked exact search
against a full sort, precision against a loop, and the toy result (colour heads find same-colour neighbours)."""

from __future__ import annotations

import csv

import pytest
import torch
from click.testing import CliRunner

from cliplens.apps.search import (
    EMBEDDING, ApproximateSearch, HeadIndex, build_indexes, chance_precision, image_query, nearest,
    neighbour_precision, parse_head_set, search, searcher, span_projector, text_query,
)
from cliplens.cli import search as search_cli
from cliplens.errors import CliplensError
from cliplens.workflows.head_search import head_search, parse_heads_for
from conftest import random_images

TOL = 1e-5  # float32 index


@pytest.fixture(scope="module")
def images():
    return random_images(12, 32, seed=3)


@pytest.fixture(scope="module")
def indexes(vit_lens, images):
    sets = [("L2H0",), ("L1H1", "L2H0"), ()]
    return build_indexes(vit_lens, [(image, -1) for image in images], sets, batch_size=5)


def random_index(n=40, d=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centred = torch.randn(n, d, generator=generator)
    return HeadIndex("random", ("L0H0",), centred, torch.zeros(d, dtype=torch.float64), torch.arange(n))


def test_index_holds_the_centred_sum_of_the_heads_pieces(vit_lens, images, indexes):
    pieces = vit_lens.decompose(images, granularity="head", convention="reference")
    for name, heads in (("L2H0", ["L2H0"]), ("L1H1+L2H0", ["L1H1", "L2H0"]), (EMBEDDING, None)):
        literal = pieces.embedding if heads is None else sum(pieces[label] for label in heads)
        literal = literal - literal.mean(0)
        torch.testing.assert_close(indexes[name].centred.double(), literal, rtol=0, atol=TOL)
    assert indexes[EMBEDDING].positions.tolist() == list(range(len(images)))


def test_chunked_search_equals_a_full_sort():
    index = random_index()
    queries = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    cosine = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(index.centred, dim=1).T
    values, rows = nearest(index, queries, 7, chunk=9)
    full = cosine.argsort(dim=1, descending=True)[:, :7]
    assert rows.tolist() == full.tolist()
    torch.testing.assert_close(values, cosine.gather(1, full))
    exclude = full[:, 0]
    _, without = nearest(index, queries, 7, chunk=4, exclude=exclude)
    assert without.tolist() == cosine.argsort(dim=1, descending=True)[:, 1:8].tolist()


def test_ties_keep_the_earlier_row_across_chunks():
    index = HeadIndex("ties", (), torch.ones(10, 3), torch.zeros(3, dtype=torch.float64), torch.arange(10))
    _, rows = nearest(index, torch.ones(1, 3), 4, chunk=3)
    assert rows.tolist() == [[0, 1, 2, 3]]


def test_image_query_finds_the_image_itself_first(vit_lens, images, indexes):
    ranking = search(indexes["L1H1+L2H0"], image_query(indexes["L1H1+L2H0"], vit_lens, images[4:5],
                                                        convention="reference"), 3, score="cos")
    assert int(ranking.positions[0]) == 4 and float(ranking.values[0]) == pytest.approx(1.0, abs=1e-5)


def test_a_text_query_is_projected_into_the_span(vit_lens, indexes):
    texts = ["red", "green", "blue", "a dog", "a cat", "a square", "a ring", "a star"]
    embeddings = torch.nn.functional.normalize(vit_lens.encode_text(texts).double(), dim=1)
    index = indexes["L2H0"]
    span = span_projector(index, embeddings, texts, n_texts=3, rank=10)
    query = embeddings[0]
    projected = text_query(span, query)
    torch.testing.assert_close(projected.double(), span.projector() @ query, rtol=0, atol=TOL)
    assert torch.allclose(span.projector() @ projected.double(), projected.double(), atol=TOL)  # already in the span
    literal = torch.nn.functional.cosine_similarity(index.centred.double(), projected.double()[None], dim=1)
    ranking = search(index, projected, 5, score="cos")
    assert ranking.positions.tolist() == literal.argsort(descending=True)[:5].tolist()


def test_precision_equals_a_loop_over_the_images():
    index = random_index(n=30)
    labels = torch.randint(0, 3, (30,), generator=torch.Generator().manual_seed(2))
    measured = neighbour_precision(index, labels, top=4, chunk=7)
    cosine = torch.nn.functional.normalize(index.centred, dim=1)
    cosine = cosine @ cosine.T
    for i in range(30):
        others = [j for j in cosine[i].argsort(descending=True).tolist() if j != i][:4]
        assert measured[i] == pytest.approx(sum(int(labels[j] == labels[i]) for j in others) / 4)
    counts = torch.bincount(labels).double()
    assert chance_precision(labels) == pytest.approx(float((counts * (counts - 1)).sum() / (30 * 29)))


def test_faiss_finds_the_exact_neighbours_and_never_the_excluded_row():
    """HNSW is approximate: on 5,000 clustered points (200 clusters, the spread of real embeddings' neighbourhoods) it
    must find at least 97 % of the exact 10 nearest (measured 99.99 % at 20,000 points and 99.0 % at 100,000, 1,000
    queries each); it returns scores sorted like the exact ones, and the queried image itself is never a neighbour."""
    generator = torch.Generator().manual_seed(4)
    centres = torch.randn(200, 32, generator=generator)
    points = centres[torch.randint(0, 200, (5000,), generator=generator)] + 0.5 * torch.randn(5000, 32,
                                                                                             generator=generator)
    index = HeadIndex("clusters", ("L0H0",), points, points.double().mean(0), torch.arange(5000))
    queries = torch.arange(0, 5000, 25)
    exact_values, exact = nearest(index, points[queries], 10, exclude=queries)
    values, found = ApproximateSearch(index)(points[queries], 10, exclude=queries)
    recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, found)) / found.numel()
    assert recall >= 0.97
    assert not (found == queries[:, None]).any()
    assert (values[:, :-1] >= values[:, 1:] - 1e-6).all()
    assert torch.allclose(values[:, 0], exact_values[:, 0], atol=1e-4)  # the best neighbour is found with its score
    labels = torch.randint(0, 3, (5000,), generator=generator)
    assert torch.allclose(neighbour_precision(index, labels, 5, find=searcher(index, "faiss")),
                          neighbour_precision(index, labels, 5), atol=0.2)
    with pytest.raises(CliplensError, match="unknown search engine"):
        searcher(index, "annoy")


def test_bad_requests_are_refused(vit_lens):
    with pytest.raises(CliplensError, match="twice"):
        parse_head_set("L1H1+L1H1", vit_lens)
    with pytest.raises(CliplensError, match="out of range"):
        parse_head_set("L9H0", vit_lens)
    with pytest.raises(CliplensError, match="ATTRIBUTE:SIZE"):
        parse_heads_for(["colour:x"], 1)
    with pytest.raises(CliplensError, match="at most"):
        nearest(random_index(n=5), torch.ones(1, 6), 5, exclude=torch.tensor([0]))
    with pytest.raises(CliplensError, match="shapes"):
        head_search(vit_lens, [(torch.zeros(3, 32, 32), -1)], heads_for=["colour"])
    with pytest.raises(CliplensError, match="unknown attribute"):
        head_search(vit_lens, "shapes:test:8", heads_for=["flavour"])


def test_colour_heads_find_same_colour_neighbours_more_often_than_the_embedding(tmp_path):
    """toy:vit, 256 test images of seed 20 (heads chosen by TextSpan on seed 21; the set size 2 was chosen on seed 1).

    Measured at 512 images of seed 10 (fit seed 11): in the colour heads L0H1+L1H2 65.5 % of an image's 10 neighbours
    share its colour, in the whole embedding 28.7 %, chance 12.5 %. Per query the precision averages 10 draws, so over
    256 queries its standard error is at most sqrt(0.25 / 2560) ≈ 1 point (about 3 allowing for neighbours that are not
    independent); the 20-point margin asserted sits over 5 of those below the measured 37-point gap.
    """
    runner = CliRunner()
    out = tmp_path / "search"
    result = runner.invoke(search_cli.command, ["--model", "toy:vit", "--data-path", "shapes:test:256:20",
                                                "--heads-for", "colour:2", "--attribute", "colour",
                                                "--query-text", "red", "--top", "8", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "precision.csv").read_text().splitlines()))
    colour = next(row for row in rows if row["chosen_for"] == "colour")
    assert float(colour["precision"]) >= float(colour["baseline_embedding"]) + 0.20, rows
    assert float(colour["baseline_embedding"]) > float(colour["chance"]), rows
    assert (out / "precision.png").stat().st_size > 0 and (out / f"{colour['space']}.png").exists()
    top = list(csv.DictReader((out / f"{colour['space']}.csv").read_text().splitlines()))
    assert len(top) == 8

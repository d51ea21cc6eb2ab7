"""Image retrieval per component (docs/methods/retrieval.md#scores) against brute-force sorts of literally computed
scores, in float64.

Tolerance 1e-10: fp64 scores of O(1) built from sums of a few thousand terms (~1e5 ulps of headroom).
"""

from __future__ import annotations

import csv
from functools import partial

import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

import cliplens
from cliplens.apps.retrieval import (pair_ranking_from_stats, parse_component, retrieve, write_ranking,
                                     write_token_maps)
from cliplens.cli import retrieve as retrieve_cli
from cliplens.errors import CliplensError
from cliplens.report.grids import image_grid
from test_pairs import IMAGES, literal_pairs, tiny_resnet_lens, to_tensor

TOL = 1e-10
TOP = 6


@pytest.fixture(scope="module")
def lens():
    return tiny_resnet_lens()


@pytest.fixture(scope="module")
def data():
    images = torch.randn(IMAGES, 3, 64, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return [(image, -1) for image in images]


@pytest.fixture(scope="module")
def oracle(lens, data):
    with torch.no_grad():
        return literal_pairs(lens.model, torch.stack([image for image, _ in data]))  # [B, H, C, O], reference


def brute_force(scores, top=TOP):
    """Positions and values of the `top` largest scores, by a full sort."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:top]
    return torch.tensor(order), scores[order]


def assert_ranking(ranking, scores):
    positions, values = brute_force(scores)
    assert ranking.positions.tolist() == positions.tolist()
    torch.testing.assert_close(ranking.values, values, rtol=0, atol=TOL)


def test_pair_rankings_match_a_brute_force_sort(lens, data, oracle):
    h, n = 3, 17
    pair = oracle[:, h, n]
    centred = pair - pair.mean(0)
    u = lens.decomposer.out_weight[h] @ lens.decomposer.value_weight[h, :, n]
    # |s − s̄|·‖u‖ is the centred pair's norm; the signed score is its projection on u/‖u‖
    rankings = retrieve(lens, data, ["H3N17"], top=TOP, batch_size=7)
    assert_ranking(rankings["H3N17"], centred.norm(dim=1))
    signed = retrieve(lens, data, ["H3N17"], top=TOP, signed=True, batch_size=7)
    assert_ranking(signed["H3N17"], centred @ u / u.norm())

    # statistics of the same data: read without a pass, same answer; of other data: only their mean is used
    stats = lens.collect(data, granularity="pair", top_k=10, batch_size=16)
    from_stats = retrieve(lens, data, ["H3N17"], top=TOP, stats=stats)["H3N17"]
    assert_ranking(from_stats, centred.norm(dim=1))
    assert_ranking(pair_ranking_from_stats(stats, h, n, TOP, signed=True), centred @ u / u.norm())
    other = lens.collect(data[:20], granularity="pair", convention="reference", top_k=10)  # means comparable to r
    shifted = (pair - other.means(torch.tensor([h]), torch.tensor([n]))[0]).norm(dim=1)
    assert_ranking(retrieve(lens, data, ["H3N17"], top=TOP, stats=other)["H3N17"], shifted)
    with pytest.raises(CliplensError, match="ask for fewer"):
        pair_ranking_from_stats(stats, h, n, 11)


def test_neuron_ranking_is_the_norm_of_its_heads_sum(lens, data, oracle):
    total = oracle[:, :, 40].sum(1)  # Σ_h r^{n,h}, bias shares included (reference convention)
    assert_ranking(retrieve(lens, data, ["N40"], top=TOP, batch_size=8)["N40"], total.norm(dim=1))
    separate = retrieve(lens, data, ["N40"], top=TOP, convention="separate")["N40"]
    shares = lens.decompose(data[0][0], granularity="pair", convention="reference").offsets.sum(0)
    assert_ranking(separate, (total - shares).norm(dim=1))


def tiny_vit_lens():
    torch.manual_seed(0)
    model = open_clip.CLIP(32, dict(layers=3, width=64, head_width=16, patch_size=8, image_size=32),
                           dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    return cliplens.from_openclip(model, lambda image: image, partial(open_clip.tokenize, context_length=16),
                                  name="tiny-vit", pretrained=None, precision="fp64")


def test_vit_head_rankings_for_a_text_and_an_image_query():
    lens = tiny_vit_lens()
    images = torch.randn(30, 3, 32, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    data = [(image, -1) for image in images]
    pieces = lens.decompose(images, granularity="head", convention="reference")["L2H1"]  # all at once, no batches
    text = lens.encode_text(["a red circle"])[0]
    text = text / text.norm()
    by_text = retrieve(lens, data, ["L2H1"], top=TOP, query_text="a red circle", batch_size=7)["L2H1"]
    assert_ranking(by_text, pieces @ text)
    assert by_text.score == "<p, q>, q = the text 'a red circle'"  # what was asked, for the CSV and the grid title
    query = pieces[4]
    by_image = retrieve(lens, data, ["L2H1"], top=TOP, query_image=images[4], cosine=True, batch_size=7)["L2H1"]
    assert_ranking(by_image, pieces @ query / (pieces.norm(dim=1) * query.norm()))
    assert by_image.positions[0] == 4  # an image is its own best cosine match
    with pytest.raises(CliplensError, match="exactly one query"):
        retrieve(lens, data, ["L2H1"])
    with pytest.raises(CliplensError, match="ResNet pair or neuron"):
        parse_component("H0N1", lens)


def test_bad_components_and_options_are_refused(lens, data):
    for label, message in (("L1H2", "is a ViT head"), ("H99N0", "out of range"), ("N100000", "out of range"),
                           ("head3", "cannot read")):
        with pytest.raises(CliplensError, match=message):
            parse_component(label, lens)
    with pytest.raises(CliplensError, match="positive integer"):
        retrieve(lens, data, ["N1"], top=0)
    with pytest.raises(CliplensError, match="ViT heads"):
        retrieve(lens, data, ["N1"], query_text="a dog")
    with pytest.raises(CliplensError, match="pairs"):
        retrieve(lens, data, ["N1"], signed=True)


def test_rankings_are_written_as_csv_and_png(lens, data, tmp_path):
    ranking = retrieve(lens, data, ["H1N2"], top=TOP)["H1N2"]
    table, grid = write_ranking(tmp_path, ranking, data, columns=4)
    with open(table, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [int(r["rank"]) for r in rows] == list(range(TOP))
    assert [int(r["index"]) for r in rows] == ranking.positions.tolist()
    assert rows[0]["item"] == f"item {rows[0]['index']}"  # a list of tensors knows nothing more of its images
    assert {(r["label"], r["ranked_by"]) for r in rows} == {("H1N2", "|s - mean s|*|u|")}
    assert float(rows[0]["score"]) == pytest.approx(float(ranking.values[0]), rel=1e-12)
    with Image.open(grid) as png:
        assert png.format == "PNG" and png.width > 4 * 112 and png.height > 2 * 112  # 4 columns, 2 rows
    with pytest.raises(CliplensError, match="one caption per image"):
        image_grid([Image.new("RGB", (8, 8))], [])


def test_retrieve_command_writes_a_grid_per_component(lens, tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (64, 64), (40 * i, 255 - 40 * i, 90)).save(folder / f"{i}.png")

    def load_tiny(options):  # stands in for cliplens.load: pops the model options and returns the tiny model
        for key in ("model", "pretrained", "device", "precision", "seed"):
            options.pop(key)
        return tiny_resnet_lens(to_tensor)

    monkeypatch.setattr(retrieve_cli, "load_lens", load_tiny)
    out = tmp_path / "out"
    result = CliRunner().invoke(retrieve_cli.command, ["--data-path", str(folder), "--component", "H3N17",
                                                       "--component", "N5", "--top", "3", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["H3N17-maps.png", "H3N17-maps.safetensors", "H3N17.csv",
                                                     "H3N17.png", "N5-maps.png", "N5-maps.safetensors", "N5.csv",
                                                     "N5.png", "metadata.json"]
    with open(out / "N5.csv", newline="") as stream:
        assert next(csv.DictReader(stream))["item"].endswith(".png")


def test_grid_titles_are_readable_and_wrap_instead_of_being_cut():
    """The title (component, query, ranking) is drawn in TITLE_PIXELS-high type, on more lines when it is long."""
    from cliplens.report.grids import TITLE_PIXELS

    images = [Image.new("RGB", (32, 32), (200, 200, 200))] * 2

    def title_rows(title):
        grid = image_grid(images, ["a", "b"], columns=2, size=64, title=title)
        pixels = grid.convert("L").load()
        header = next(y for y in range(grid.height) if any(pixels[x, y] == 200 for x in range(grid.width)))
        return [y for y in range(header) if any(pixels[x, y] < 128 for x in range(grid.width))], grid.height

    inked, height = title_rows("L1H2: top 2 by <p, q>")
    assert max(inked) - min(inked) + 1 >= 2 * TITLE_PIXELS // 3  # ascender to descender of 18-pixel type, not 11
    long = "L1H2: top 2 by <p, q>, q = the text 'a blue object on a white checker background'"
    _, taller = title_rows(long)
    assert taller > height  # wrapped onto more lines, nothing cut off


def map_sums(ranking):
    """Each ranked image's map summed over every token: its patches and the tokens that are not places."""
    return ranking.maps.patches.flatten(1).sum(1) + ranking.maps.other


def test_token_maps_sum_to_the_scores_they_split(lens, data, oracle):
    """A head's per-token shares sum to its score ⟨p, q⟩ (or its cosine); a pair's to s·‖u‖, its uncentred projection
    on u/‖u‖; a neuron's (separate convention: no bias shares) to its norm."""
    vit = tiny_vit_lens()
    images = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    vit_data = [(image, -1) for image in images]
    by_text = retrieve(vit, vit_data, ["L2H1"], top=TOP, query_text="a red circle", batch_size=4, maps=True)["L2H1"]
    assert by_text.maps.patches.shape == (TOP, 4, 4)  # 32-pixel images in 8-pixel patches
    torch.testing.assert_close(map_sums(by_text), by_text.values, rtol=0, atol=TOL)
    by_image = retrieve(vit, vit_data, ["L1H0"], top=TOP, query_image=images[3], cosine=True, maps=True)["L1H0"]
    torch.testing.assert_close(map_sums(by_image), by_image.values, rtol=0, atol=TOL)

    pairs = retrieve(lens, data, ["H3N17", "N40"], top=TOP, signed=True, convention="separate", maps=True)
    pair, neuron = pairs["H3N17"], pairs["N40"]
    u = lens.decomposer.out_weight[3] @ lens.decomposer.value_weight[3, :, 17]
    s = torch.stack([lens.decompose(data[int(p)][0], granularity="pair").coefficients[0, 3, 17]
                     for p in pair.positions])
    torch.testing.assert_close(map_sums(pair), s * u.norm(), rtol=0, atol=TOL)
    torch.testing.assert_close(map_sums(neuron), neuron.values, rtol=0, atol=TOL)
    assert pair.maps.patches.shape == (TOP, 2, 2)


def test_token_maps_are_written_as_numbers_and_an_overlay_grid(lens, data, tmp_path):
    ranking = retrieve(lens, data, ["H1N2"], top=TOP, maps=True)["H1N2"]
    numbers, grid = write_token_maps(tmp_path, ranking, data, columns=3)
    assert (numbers.name, grid.name) == ("H1N2-maps.safetensors", "H1N2-maps.png")
    with safe_open(numbers, "pt") as stored:
        assert stored.metadata() == {"component": "H1N2", "measure": ranking.maps.measure, "ranked_by": ranking.score}
        assert stored.get_tensor("index").tolist() == ranking.positions.tolist()
        torch.testing.assert_close(stored.get_tensor("score"), ranking.values.double(), rtol=0, atol=0)
        torch.testing.assert_close(stored.get_tensor("patches"), ranking.maps.patches.float(), rtol=0, atol=0)
        assert stored.get_tensor("other_tokens").shape == (TOP,)
    with Image.open(grid) as png:
        assert png.width > 3 * 112 and png.height > 2 * 112  # 3 columns, 2 rows of overlays
    with pytest.raises(CliplensError, match="maps=True"):
        write_token_maps(tmp_path, retrieve(lens, data, ["H1N2"], top=TOP)["H1N2"], data)

"""Top and bottom images of ViT heads' principal components (docs/methods/retrieval.md#principal): kept by analyze's
second fit pass, read back by retrieve with no pass and the bytes of its own pass, refused where not kept, and shown
by the explorer."""

from __future__ import annotations

import json
import re

import pytest
import torch

import cliplens
from cliplens.apps.principal_images import extremes, image_bytes, load_images
from cliplens.apps.retrieval import retrieve
from cliplens.data import loader
from cliplens.errors import CliplensError
from cliplens.explorer.site import chunk_key
from conftest import run_cli as run
from test_analysis import fails, passes  # noqa: F401  (the pass counter fixture)

FIT = "shapes:test:40:3"
FP64 = ["--precision", "fp64"]
POOL = ["--pool", "shapes"]
PCS = ["--component", "L1H2.pc0", "--component", "L3H0.pc1"]


@pytest.mark.parametrize("descending", [True, False])
def test_streamed_extremes_equal_a_full_stable_sort(descending):
    generator = torch.Generator().manual_seed(11)
    values = torch.randint(0, 7, (3, 2, 200), generator=generator).double()  # many ties: dataset order decides
    positions = torch.arange(200).expand(3, 2, -1)
    kept_values, kept_index = values[..., :0], positions[..., :0]
    start = 0
    while start < 200:
        size = int(torch.randint(1, 40, (), generator=generator))
        kept_values, kept_index = extremes(kept_values, kept_index, values[..., start:start + size],
                                           positions[..., start:start + size], 9, descending=descending)
        start += size
    order = values.argsort(dim=-1, descending=descending, stable=True)[..., :9]
    assert torch.equal(kept_index, positions.gather(-1, order)) and torch.equal(kept_values, values.gather(-1, order))


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    out = tmp_path_factory.mktemp("headtop")
    run("analyze", *FP64, "--fit-path", FIT, "--ask", "head-images", "--head-components", "2", "--head-top", "6",
        *POOL, "--output-dir", out)
    return out / "analysis"


def test_head_images_alone_make_the_second_pass_and_share_it_with_second_order(tmp_path, passes):
    fit_key = loader.fingerprint(loader.as_source(FIT))
    run("analyze", *FP64, "--fit-path", FIT, "--ask", "head-images", "--ask", "second-order", "--mlp-layer", "1",
        *POOL, "--output-dir", tmp_path)
    assert passes == {fit_key: 2}  # pass 1 the moments, pass 2 the second-order ranking and the head images
    record = json.loads((tmp_path / "analysis" / "metadata.json").read_text())
    assert record["passes"] == {"fit": 2, "evaluation": 0}
    assert set(record["parts"]) == {"pieces", "second-order-L1", "head-images"}


def test_retrieve_reads_the_analysis_with_no_pass_and_writes_the_bytes_of_its_own_pass(analysis, tmp_path, passes):
    record = json.loads((analysis / "metadata.json").read_text())
    assert record["passes"]["fit"] == 2 and record["parts"]["head-images"]["top_k"] == 6
    fit_key = loader.fingerprint(loader.as_source(FIT))
    run("retrieve", *FP64, "--data-path", analysis, "--stats", analysis, *PCS, "--top", "5", *POOL,
        "--output-dir", tmp_path / "read")
    assert fit_key not in passes  # the maps read the 5 top images of each end once more, not the data
    run("retrieve", *FP64, "--data-path", FIT, "--stats", analysis, *PCS, "--top", "5", *POOL,
        "--output-dir", tmp_path / "own")
    assert passes[fit_key] == 1
    written = sorted(path.name for path in (tmp_path / "read").glob("L*"))
    assert len(written) == 4 * 4  # 2 components x 2 ends; per end: the CSV, the grid, the maps' numbers and their overlay
    for name in written:
        if name.endswith((".csv", ".png")):  # (safetensors headers order their metadata by hash)
            assert (tmp_path / "read" / name).read_bytes() == (tmp_path / "own" / name).read_bytes(), name
    table = (tmp_path / "read" / "L1H2.pc0-.csv").read_text().splitlines()
    scores = [float(line.split(",")[4]) for line in table[1:]]
    assert len(scores) == 5 and scores == sorted(scores) and scores[0] < 0  # the most negative first


def test_the_other_orientation_swaps_the_ends_exactly(analysis):
    """A pool that orients a component the other way reads the other kept end, negated."""
    lens = cliplens.load("toy:vit", precision="fp64")
    stored = load_images(analysis, lens)
    u = stored.metadata["heads"].index("L1H2")
    direction, mean = stored.tensors["directions"][u, 1], stored.tensors["means"][u]
    index, values = stored.end("L1H2", 1, 6, -direction, mean, positive=True)
    assert torch.equal(index, stored.tensors["bottom_index"][u, 1]) and torch.equal(
        values, -stored.tensors["bottom_values"][u, 1])
    with pytest.raises(CliplensError, match="another direction"):
        stored.end("L1H2", 1, 6, direction.flip(0), mean, positive=True)
    held = sum(tensor.numel() * tensor.element_size() for tensor in stored.tensors.values())
    assert held == image_bytes(16, 2, 6, lens.spec.output_dim)  # what the dry run prints: fixed by r, k and the model


def test_rankings_the_analysis_did_not_keep_are_refused_in_one_line(analysis, tmp_path, passes):
    read = ["retrieve", *FP64, "--data-path", analysis, "--stats", analysis, *POOL, "--output-dir", tmp_path / "x"]
    assert "first 2 components only" in fails(*read, "--component", "L1H2.pc2")
    assert "6 images per end" in fails(*read, "--component", "L1H2.pc0", "--top", "7")
    assert "not images" in fails("retrieve", *FP64, "--data-path", analysis, "--component", "L1H2", "--query-text",
                                 "red", "--output-dir", tmp_path / "x")
    assert "--stats" in fails("retrieve", *FP64, "--data-path", FIT, "--component", "L1H2.pc0", "--output-dir",
                              tmp_path / "x")
    assert "does not exist" in fails(*read, "--component", "L1H2.pc40")
    assert "is a ViT head" in fails("retrieve", "--model", "toy:rn", "--data-path", FIT, "--component", "L1H2.pc0",
                             "--output-dir", tmp_path / "x")
    assert "read ViT pieces" in fails("analyze", "--model", "toy:rn", "--fit-path", FIT, "--ask", "head-images",
                                      "--output-dir", tmp_path / "x")
    assert not passes and not (tmp_path / "x").exists()


def test_retrieve_library_call_ranks_both_ends_of_a_component():
    lens = cliplens.load("toy:vit", precision="fp64")
    stats = lens.collect(FIT)
    found = retrieve(lens, FIT, ["L2H1.pc0"], top=40, stats=stats, pool="shapes")
    high, low = found["L2H1.pc0+"], found["L2H1.pc0-"]
    assert torch.equal(high.positions.sort().values, low.positions.sort().values)  # all 40 images, both ways
    assert torch.equal(high.values.sort().values, low.values.sort().values)
    assert high.values[0] > 0 > low.values[0] and "dominant pole" in high.score and "opposite pole" in low.score


def test_the_explorer_shows_both_ends_of_each_component_on_the_head_page(analysis, tmp_path):
    run("report", analysis, "--output-dir", tmp_path / "report")
    text = (tmp_path / "report" / f"data-{chunk_key('L1H2')}.js").read_text()
    head = json.loads(re.fullmatch(r"explorer\.\w+\((.*)\);\n", text, re.S)[1])["L1H2"]["principal"]
    stored = load_images(analysis, cliplens.load("toy:vit", precision="fp64"))
    u = stored.metadata["heads"].index("L1H2")
    assert [c["component"] for c in head["components"]] == [0, 1]
    for j, component in enumerate(head["components"]):
        top, bottom = component["ends"]
        assert [i for i, _ in top["images"]] == stored.tensors["top_index"][u, j].tolist()
        assert [i for i, _ in bottom["images"]] == stored.tensors["bottom_index"][u, j].tolist()
        assert top["texts"] == stored.metadata["poles"]["L1H2"][j]["dominant"]
        for index, _ in top["images"] + bottom["images"]:
            assert (tmp_path / "report" / f"{head['thumbs']}{index}.png").is_file()

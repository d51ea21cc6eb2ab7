"""`cliplens report`: the explorer built from toy:vit's outputs, read back as data and clicked through in a real browser
(headless Chromium driven by Playwright)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cliplens.cli import cli
from cliplens.explorer.site import chunk_key
from cliplens.explorer.sources import row_label
from conftest import run_cli as invoke

CHROMIUM = Path("/usr/bin/chromium")
DATA = "shapes:test:32:0"
HEAD = "L3H1"  # explained by textspan (the last layer) and retrieved for a query



@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small outputs of four commands on toy:vit: statistics (spatial), TextSpan texts, a retrieval, second order."""
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPLENS_CACHE", str(out / "cache"))
        vit = ["--model", "toy:vit", "--data-path", DATA, "--batch-size", "32"]
        invoke("collect", *vit, "--spatial", "--output-dir", out / "collect")
        invoke("textspan", *vit, "--stats", out / "collect" / "stats", "--pool", "shapes", "--pool-templates", "photo",
               "--texts-per-head", "3", "--num-last-layers", "1", "--output-dir", out / "textspan")
        invoke("retrieve", *vit, "--component", HEAD, "--query-text", "a blue object", "--top", "8",
               "--output-dir", out / "retrieve")
        invoke("second-order", *vit, "--mlp-layer", "2", "--omp-atoms", "2", "--grids", "2",
               "--output-dir", out / "second-order")
    return {name: out / name for name in ("collect", "textspan", "retrieve", "second-order")}


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report") / "report"
    output = invoke("report", *runs.values(), "--output-dir", folder)
    assert f"open {(folder / 'index.html').resolve().as_uri()}" in output
    return folder


def head_rows(runs) -> list[dict[str, str]]:
    with open(runs["textspan"] / "textspan.csv", newline="") as stream:
        return [row for row in csv.DictReader(stream) if row["label"] == HEAD]


def head_texts(runs) -> list[str]:
    return [row["description"] for row in head_rows(runs)]


def data(folder: Path, key: str) -> dict:
    """The JSON inside a data-<key>.js file (`explorer.<call>({...});`)."""
    text = (folder / f"data-{key}.js").read_text()
    return json.loads(re.fullmatch(r"explorer\.\w+\((.*)\);\n", text, re.S)[1])


def test_report_joins_the_outputs_per_unit(report, runs):
    overview = data(report, "overview")
    assert overview["model"]["model"] == "toy:vit"
    assert overview["shape"]["layers"] == 4 and len(overview["grid"]["variance"]) == 4
    kept = overview["grid"]["textspan variance kept"]  # the share of each head's variance its texts reconstruct
    assert kept[3][1] == pytest.approx(sum(float(row["variance_explained"]) for row in head_rows(runs)), rel=1e-3)
    assert all(value is None for row in kept[:3] for value in row) and all(0 < value <= 1 for value in kept[3])
    head = data(report, chunk_key(HEAD))[HEAD]
    assert [text for text, _ in head["texts"]["textspan"]] == head_texts(runs)
    assert head["scores"]["variance"] > 0 and head["tokens"]["side"] ** 2 == len(head["tokens"]["values"])
    assert (report / head["images"][0]["src"]).is_file()
    maps = head["maps"][0]  # retrieve's map over each of its 8 top images, in the ranking's order
    with open(runs["retrieve"] / f"{HEAD}.csv", newline="") as stream:
        ranked = [(int(row["index"]), float(row["score"])) for row in csv.DictReader(stream)]
    assert [image["index"] for image in maps["images"]] == [index for index, _ in ranked]
    assert [image["score"] for image in maps["images"]] == pytest.approx([score for _, score in ranked], rel=1e-3)
    assert all(len(image["values"]) == maps["side"] ** 2 for image in maps["images"])
    assert (report / maps["src"]).is_file()
    neurons = [label for label, _ in head["links"]]  # the layer-2 neurons whose principal direction runs through it
    assert neurons and all(re.fullmatch(r"L2N\d+", label) for label in neurons)
    neuron = data(report, chunk_key(neurons[0]))[neurons[0]]
    assert HEAD in [label for label, _ in neuron["links"]]
    words = {word: labels for path in report.glob("data-search-*.js")
             for word, labels in data(report, path.stem[len("data-"):]).items()}
    assert all(path.stem[-2:] == word[:2] for path in report.glob("data-search-*.js")
               for word in data(report, path.stem[len("data-"):]))
    assert any(HEAD in words[word] for text in head_texts(runs) for word in text.lower().split() if word in words)


@pytest.mark.parametrize("row, label", [
    ({"label": "L3H7", "layer": "3", "head": "7"}, "L3H7"),  # a ViT head's texts (textspan, explain)
    ({"label": "L1N5", "layer": "1", "neuron": "5"}, "L1N5"),  # second-order neuron words
    ({"label": "H2N9", "head": "2", "neuron": "9"}, "H2N9"),  # ResNet pair words
    ({"label": "N9", "neuron": "9"}, "N9"),  # ResNet neuron words
    ({"piece": "L0H1", "rank": "0"}, "L0H1"),  # a table that names its unit in a piece column (discover, spurious)
    ({"label": "everything"}, None),  # not a unit with a page
    ({"layer": "layer4", "unit": "9", "description": "red"}, None),  # CLIP-Dissect: a neuron of another network
])
def test_rows_name_their_unit(row, label):
    assert row_label(row) == label


def test_report_is_self_contained(report):
    """No server, no network: every file the page names is in the folder, and nothing points outside it."""
    names = {path.name for path in report.iterdir()}
    page = (report / "index.html").read_text()
    assert set(re.findall(r'(?:src|href)="([^"#]+)"', page)) <= names
    for path in report.glob("*.*"):
        if path.suffix in (".html", ".js", ".css"):
            assert not re.search(r"https?://|//cdn", path.read_text()), path.name


def test_report_refuses_outputs_of_two_models(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["textspan"], other)
    record = json.loads((other / "metadata.json").read_text())
    record["model"] = {**record["model"], "model": "toy:rn", "fingerprint": "0123456789abcdef"}
    (other / "metadata.json").write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["report", str(runs["collect"]), str(other), "--output-dir", str(tmp_path / "r")])
    assert result.exit_code != 0 and "one model" in str(result.exception)
    assert not (tmp_path / "r").exists()


def browser():
    """Playwright's sync API over Debian's Chromium; in CI (CI=true) a missing browser fails instead of skipping."""
    missing = [what for what, ok in (("chromium", CHROMIUM.is_file()), ("playwright", _has_playwright())) if not ok]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(f"{' and '.join(missing)} not installed (.ci/run installs them)")
    assert not missing, f"{', '.join(missing)} missing in CI: .ci/run installs chromium, the dev extra playwright"
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def test_report_in_a_browser(report, runs, tmp_path):
    """Open index.html from the file system, click a head in the grid, check its texts and images, search a word,
    follow a link to a neuron; any console message of type error or an uncaught exception fails the test."""
    errors: list[str] = []
    with browser() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto((report / "index.html").resolve().as_uri())
            page.wait_for_selector("table.grid")
            page.screenshot(path=tmp_path / "overview.png", full_page=True)
            page.select_option("select[data-section=heads]", "variance share")
            page.click(f"table.grid a[data-label={HEAD}]")
            page.wait_for_selector(f"h1:text-is('{HEAD}')")
            shown = page.inner_text("main")
            assert all(text in shown for text in head_texts(runs))
            image = page.locator("img.grid-image").first
            assert image.evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator("canvas.tokens").count() == 1
            overlays = page.locator("img.overlay-grid")  # the top images with their maps over them
            assert overlays.count() == 1 and overlays.evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.locator("canvas.image-map").count() == 8  # one signed map per top image
            page.screenshot(path=tmp_path / "head.png", full_page=True)
            word = head_texts(runs)[0].split()[0].lower()
            page.fill("#search", word)
            page.wait_for_selector(f"#hits a[data-label={HEAD}]")
            page.click(f"#hits a[data-label={HEAD}]")
            page.wait_for_selector(f"h1:text-is('{HEAD}')")
            neuron = page.locator("main a[data-label^='L2N']").first
            label = neuron.get_attribute("data-label")
            neuron.click()
            page.wait_for_selector(f"h1:text-is('{label}')")
            assert HEAD in page.inner_text("main")
        finally:
            chromium.close()
    assert not errors, errors
    assert (tmp_path / "overview.png").stat().st_size > 10_000 and (tmp_path / "head.png").stat().st_size > 10_000
    screenshots = os.environ.get("CLIPLENS_SCREENSHOTS")  # set to keep the screenshots for a look
    if screenshots:
        for name in ("overview.png", "head.png"):
            shutil.copy(tmp_path / name, Path(screenshots) / name)

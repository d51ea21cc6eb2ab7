"""The text commands end to end through click (textspan, explain, ablate, reconstruct) on a tiny ViT and shapes data.

The lens is built here (a tiny random-init open_clip ViT with a real image transform) and handed to each command in
place of `load_lens`; everything after loading — option parsing, statistics, pools, the streaming pass, the files —
runs as a user would run it.
"""

from __future__ import annotations

import csv
import json
from functools import partial

import pytest
from click.testing import CliRunner

import cliplens
from cliplens import CliplensError
from cliplens.cli import ablate, explain, reconstruct, textspan
from cliplens.evaluate.reconstruction import powers_of_two
from cliplens.explain.tables import COLUMNS
from cliplens.explain.unit_words import atom_count
from cliplens.workflows.head_texts import explain_heads
from conftest import tiny_vit

DATA = "shapes:test:16"


def shapes_lens(seed: int = 0):
    import open_clip

    return cliplens.from_openclip(tiny_vit(seed), open_clip.image_transform(32, is_train=False),
                                  partial(open_clip.tokenize, context_length=16), name=f"tiny-{seed}",
                                  pretrained=None, precision="fp64")


@pytest.fixture(scope="module")
def lens():
    return shapes_lens()


@pytest.fixture(autouse=True)
def use_tiny_lens(lens, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPLENS_CACHE", str(tmp_path / "cache"))
    for module in (textspan, explain, ablate, reconstruct):
        monkeypatch.setattr(module, "load_lens", lambda options: lens)


def invoke(command, *args):
    result = CliRunner().invoke(command, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_textspan_writes_a_table_per_head(tmp_path, lens):
    out = tmp_path / "ts"
    invoke(textspan.command, "--data-path", DATA, "--texts-per-head", 3, "--num-last-layers", 2, "--w-ov-rank", 16,
           "--output-dir", out)
    rows = read_csv(out / "textspan.csv")
    assert tuple(rows[0]) == COLUMNS
    assert [(row["label"], row["layer"], row["head"], row["rank"]) for row in rows] == [
        (f"L{l}H{h}", str(l), str(h), str(r)) for l in (1, 2) for h in range(4) for r in range(3)
    ]
    assert {row["method"] for row in rows} == {"textspan"}
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["model"]["fingerprint"] == lens.fingerprint
    assert metadata["pool"]["name"] == "shapes" and metadata["statistics"]["count"] == 16

    # The same table from statistics collected beforehand (`cliplens collect`).
    stats_path = lens.collect(DATA).save(tmp_path / "stats")
    again = tmp_path / "again"
    invoke(textspan.command, "--stats", stats_path, "--texts-per-head", 3, "--num-last-layers", 2, "--w-ov-rank", 16,
           "--output-dir", again)
    assert read_csv(again / "textspan.csv") == rows


def test_statistics_of_another_model_are_refused(tmp_path):
    stats_path = shapes_lens(seed=1).collect(DATA).save(tmp_path / "other")
    with pytest.raises(CliplensError, match="fingerprint"):
        invoke(textspan.command, "--stats", stats_path, "--texts-per-head", 2, "--num-last-layers", 1,
               "--output-dir", tmp_path / "out")


@pytest.mark.parametrize("method,per_head", [("svd", None), ("omp", 2 * 3)])
def test_explain_methods(tmp_path, method, per_head):
    out = tmp_path / method
    invoke(explain.command, "--method", method, "--data-path", DATA, "--texts-per-head", 2, "--num-last-layers", 1,
           "--num-directions", 3, "--output-dir", out)
    rows = read_csv(out / f"{method}.csv")
    assert tuple(rows[0]) == COLUMNS and {row["layer"] for row in rows} == {"2"}
    if method == "omp":
        assert {row["method"] for row in rows} == {"omp-k2"} and {row["direction"] for row in rows} == {"0", "1", "2"}
        assert all(sum(row["head"] == str(h) for row in rows) == per_head for h in range(4))
        assert all(row["coefficient"] and not row["similarity"] for row in rows)
        assert len(json.loads((out / "metadata.json").read_text())["fidelity"]["L2H0"]) == 3
    else:
        assert {row["method"] for row in rows} == {"svd"} and {row["pole"] for row in rows} == {"+", "-"}
        assert all(-1 <= float(row["similarity"]) <= 1 and not row["coefficient"] for row in rows)


def test_one_library_call_gives_what_the_command_writes(tmp_path, lens):
    out = tmp_path / "svd"
    invoke(explain.command, "--method", "svd", "--data-path", DATA, "--texts-per-head", 2, "--num-last-layers", 1,
           "--output-dir", out)
    explained = explain_heads(lens, DATA, method="svd", texts_per_head=2, num_last_layers=1)
    assert read_csv(out / "svd.csv") == [{key: str(value) for key, value in row.items()} for row in explained.rows]
    written = json.loads((out / "metadata.json").read_text())
    assert written == {"command": "explain --method svd", **json.loads(json.dumps(explained.metadata, default=str))}


def test_ablate_presets_and_patterns(tmp_path):
    out = tmp_path / "ablate"
    invoke(ablate.command, "--data-path", DATA, "--label", "colour", "--preset", "layer-curve", "--preset", "mlps",
           "--components", "L2H*", "--components", "attn[-1:],embed", "--output-dir", out)
    rows = read_csv(out / "ablation.csv")
    assert [row["variant"] for row in rows] == [
        "full model", "none", "attn[:1]", "attn[:2]", "attn[:3]", "mlps", "L2H*", "attn[-1:],embed"
    ]
    assert rows[1]["accuracy"] == rows[0]["accuracy"]  # ablating nothing is the model
    assert [int(row["ablated"]) for row in rows[2:5]] == [4, 8, 12]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["means"]["source"] == "shapes:test:16:1"  # a separate draw, not the evaluation images
    assert metadata["evaluation"]["classes"][0] == "a red object"
    assert metadata["variants"]["attn[-1:],embed"] == ["embed"] + [f"L2H{h}" for h in range(4)]


def test_ablate_cls_preset_collects_per_token_means(tmp_path):
    out = tmp_path / "cls"
    invoke(ablate.command, "--data-path", DATA, "--preset", "mlps", "--preset", "cls", "--output-dir", out)
    rows = read_csv(out / "ablation.csv")
    assert [row["variant"] for row in rows] == ["full model", "none", "mlps", "cls", "mlps+cls"]
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["variants"]["cls"] == ["CLS cells"] and metadata["means"]["source"] == "shapes:test:16:1"


def test_ablate_refuses_bad_input(tmp_path):
    with pytest.raises(CliplensError, match="matches no piece"):
        invoke(ablate.command, "--data-path", DATA, "--components", "L9H*", "--output-dir", tmp_path)
    with pytest.raises(CliplensError, match="nothing to ablate"):
        invoke(ablate.command, "--data-path", DATA, "--output-dir", tmp_path)
    with pytest.raises(CliplensError, match="drop --stats and --fit-path"):
        invoke(ablate.command, "--data-path", DATA, "--preset", "mlps", "--mean-source", "eval", "--fit-path", DATA,
               "--output-dir", tmp_path)


def test_reconstruct_writes_csv_plot_and_metadata(tmp_path):
    out = tmp_path / "rec"
    invoke(reconstruct.command, "--data-path", DATA, "--label", "colour", "--texts", "1,2,4", "--num-last-layers", 1,
           "--w-ov-rank", 16, "--mean-source", "eval", "--output-dir", out)
    rows = read_csv(out / "reconstruction.csv")
    assert [row["method"] for row in rows[:3]] == ["full model", "mean-ablation baseline", "chance"]
    assert float(rows[2]["accuracy"]) == pytest.approx(1 / 8)  # eight colours
    assert [(row["method"], row["texts"]) for row in rows[3:]] == [
        (method, str(m)) for method in ("textspan", "svd", "omp", "random") for m in (1, 2, 4)
    ]
    assert (out / "reconstruction.png").read_bytes()[:4] == b"\x89PNG"
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["in_sample"] is True and metadata["texts_per_head"] == [1, 2, 4]
    assert metadata["analysed_heads"] == [f"L2H{h}" for h in range(4)]


def test_reconstruct_refuses_more_texts_than_the_span(tmp_path):
    with pytest.raises(CliplensError, match="exceeds the span"):
        invoke(reconstruct.command, "--data-path", DATA, "--texts", "1,64", "--num-last-layers", 1,
               "--output-dir", tmp_path)


def test_default_sweep_stops_at_the_span():
    assert powers_of_two(41) == [1, 2, 4, 8, 16, 32]
    assert powers_of_two(32) == [1, 2, 4, 8, 16, 32]
    assert powers_of_two(1) == [1]


def test_omp_atom_count_defaults_to_half_a_small_pool_and_refuses_too_many():
    assert atom_count(None, 128, 30_000, 512) == 128  # the papers' k on a full word pool
    assert atom_count(None, 128, 39, 512) == 19  # the shapes vocabulary: half of it, so OMP still has to choose
    assert atom_count(7, 128, 39, 512) == 7
    with pytest.raises(CliplensError, match="exceeds the text pool"):
        atom_count(40, 128, 39, 512)


def test_omp_atom_count_stays_below_the_embedding_width():
    assert atom_count(None, 128, 30_000, 128) == 127  # the default on a 128-wide toy: capped, so OMP must choose
    with pytest.raises(CliplensError, match="not below the embedding width 128"):
        atom_count(128, 128, 30_000, 128)


def test_ablate_cls_refuses_statistics_without_token_means(tmp_path, lens):
    stats = tmp_path / "stats"
    lens.collect(DATA).save(stats)
    with pytest.raises(CliplensError, match="collect --spatial"):
        invoke(ablate.command, "--data-path", DATA, "--stats", stats, "--preset", "cls", "--output-dir", tmp_path)

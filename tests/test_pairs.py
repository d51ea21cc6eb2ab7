"""ResNet neuron×head pairs end to end (docs/methods/resnet-pairs.md) against a literal per-pair oracle, in float64.

The oracle materialises every pair of every image from the docs/methods/resnet-pairs.md#rank-one formula, reading the
backend's own modules; every fast path (factorised pairs, closed-form statistics, streaming ablation and reconstruction)
is checked against it. Tolerances: fp64 on O(1) quantities with a few thousand terms per sum, so 1e-10 leaves ~1e5 ulps
of headroom.
"""

from __future__ import annotations

import csv
import math
from functools import partial

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import cliplens
from cliplens.cli import neuron_ablate as neuron_ablate_cli
from cliplens.cli import pairs as pairs_cli
from cliplens.errors import CliplensError
from cliplens.evaluate.pair_ablation import (
    AccuracyBoard, PairAblation, ablation_table, keep_count, neuron_principal_directions, neuron_scores, pair_batches,
    principal_reconstruction, standard_variants, text_reconstruction, top_mask,
)
from cliplens.explain.tables import COLUMNS
from cliplens.stats.moments import Moments

TOL = 1e-10
IMAGES, SIZE, CLASSES, TOP_K = 40, 64, 5, 10


def tiny_resnet_lens(preprocess=lambda image: image):
    torch.manual_seed(0)
    model = open_clip.CLIP(32, dict(layers=(1, 1, 1, 1), width=8, head_width=16, image_size=SIZE),
                           dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    with torch.no_grad():
        # open_clip zeroes every bn3 weight, so each residual branch would vanish, and its default conv init shrinks
        # activations layer by layer until the positional embedding swamps the image; He init keeps them O(1)
        for name, parameter in model.visual.named_parameters():
            if name.endswith("bn3.weight"):
                torch.nn.init.normal_(parameter, 1.0, 0.3)
        for module in model.visual.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return cliplens.from_openclip(model, preprocess, partial(open_clip.tokenize, context_length=16), name="tiny-rn",
                                  pretrained=None, precision="fp64")


@pytest.fixture(scope="module")
def lens():
    return tiny_resnet_lens()


@pytest.fixture(scope="module")
def images():
    return torch.randn(IMAGES, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def literal_pairs(model, images):
    """r^{n,h} = W_o^h [Σ_m a_0m t_mn W_v^h[:, n] + b_v^h / C] + b_o / (H·C) for every image and pair: [B, H, C, O]."""
    visual = model.visual
    z = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
    pool = visual.attnpool
    features = z.flatten(2).transpose(1, 2)  # [B, K, C]
    tokens = torch.cat([features.mean(1, keepdim=True), features], 1) + pool.positional_embedding
    heads, channels = pool.num_heads, tokens.shape[-1]
    dh = channels // heads
    out = []
    for b in range(len(images)):
        per_head = []
        for h in range(heads):
            rows = slice(h * dh, (h + 1) * dh)
            q = pool.q_proj.weight[rows] @ tokens[b, 0] + pool.q_proj.bias[rows]
            k = tokens[b] @ pool.k_proj.weight[rows].T + pool.k_proj.bias[rows]
            a = torch.softmax(k @ q / math.sqrt(dh), 0)  # [M]
            w_v, b_v, w_o = pool.v_proj.weight[rows], pool.v_proj.bias[rows], pool.c_proj.weight[:, rows]
            inner = (a @ tokens[b])[:, None] * w_v.T + b_v / channels  # per neuron n: [C, d_h]
            per_head.append(inner @ w_o.T + pool.c_proj.bias / (heads * channels))
        out.append(torch.stack(per_head))
    return torch.stack(out)


@pytest.fixture(scope="module")
def oracle(lens, images):
    with torch.no_grad():
        return literal_pairs(lens.model, images)


@pytest.fixture(scope="module")
def labelled(lens, images):
    """(dataset of (image, label), classifier W): labels are the full model's predictions, so baseline = 100 %.

    Random images give similar embeddings, so W is made orthogonal to their mean: predictions then follow how each
    image differs from the others instead of all falling into one class.
    """
    embeddings = lens.encode_image(images)
    mean = embeddings.mean(0) / embeddings.mean(0).norm()
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(lens.spec.output_dim, CLASSES, generator=generator, dtype=torch.float64)
    weights = weights - torch.outer(mean, mean @ weights)
    labels = (embeddings @ weights).argmax(1)
    assert len(set(labels.tolist())) == CLASSES
    return [(image, int(label)) for image, label in zip(images, labels)], weights


@pytest.fixture(scope="module")
def stats(lens, labelled):
    # batches of 7 do not divide 40, so the streaming merge of moments and extremes is exercised
    return lens.collect(labelled[0], granularity="pair", convention="reference", top_k=TOP_K, batch_size=7)


def test_literal_pairs_equal_factorised_form_and_sum_to_embedding(lens, images, oracle):
    dec = lens.decompose(images, granularity="pair", convention="reference")
    heads, neurons = dec.heads, dec.neurons
    grid = torch.cartesian_prod(torch.arange(heads), torch.arange(neurons))
    factorised = dec.pieces(grid[:, 0], grid[:, 1]).view(len(images), heads, neurons, -1)
    assert oracle.abs().max() > 1e-3  # a non-degenerate model
    torch.testing.assert_close(factorised, oracle, rtol=0, atol=TOL)
    torch.testing.assert_close(oracle.sum((1, 2)), lens.model.encode_image(images), rtol=0, atol=TOL)


def test_top_k_svd_first_component_is_the_closed_form(lens, oracle, stats):
    heads, neurons, dim = oracle.shape[1:]
    mean = oracle.mean(0)  # [H, C, O]
    centred = (oracle - mean).permute(1, 2, 0, 3)  # [H, C, B, O]
    norms = centred.norm(dim=-1)
    top = norms.topk(TOP_K, dim=-1)
    block = centred.gather(2, top.indices[..., None].expand(-1, -1, -1, dim))  # [H, C, k, O]
    _, singular, vh = torch.linalg.svd(block, full_matrices=False)
    first = vh[..., 0, :]
    u = torch.einsum("hoe,hen->hno", lens.decomposer.out_weight, lens.decomposer.value_weight)
    u_unit = u / u.norm(dim=-1, keepdim=True)
    # rank 1 up to round-off: 1e-12 is the docs/methods/decomposition.md#invariants contract (fp64 SVD of a rank-1 block
    # gives ~1e-16)
    assert (singular[..., 1] / singular[..., 0]).max() <= 1e-12
    assert ((first * u_unit).sum(-1).abs() >= 1 - 1e-12).all()
    # orient the PC so that most top-k images project positively; on a tie, by the sign of u's largest entry
    projections = (block * first[..., None, :]).sum(-1)
    positive, negative = ((projections > 0).sum(-1) > (projections < 0).sum(-1)), (projections > 0).sum(-1) * 2 < TOP_K
    ties = ~positive & ~negative
    assert ties.any() and (~ties).any()  # both branches of the sign rule are exercised
    tie_sign = torch.sign(u.gather(-1, u.abs().argmax(-1, keepdim=True)))
    expected = torch.where(positive[..., None], first, torch.where(negative[..., None], -first, tie_sign * u_unit))
    grid = torch.cartesian_prod(torch.arange(heads), torch.arange(neurons))
    closed = stats.principal_directions(grid[:, 0], grid[:, 1]).view(heads, neurons, dim)
    torch.testing.assert_close(closed, expected, rtol=0, atol=TOL)
    # closed-form means and the reference's ascending top-k norms
    torch.testing.assert_close(stats.means(grid[:, 0], grid[:, 1]).view_as(mean), mean, rtol=0, atol=TOL)
    torch.testing.assert_close(stats.norms(), top.values.flip(-1), rtol=0, atol=TOL)
    # the principal reconstruction uses exactly those directions
    recon = principal_reconstruction(stats)
    torch.testing.assert_close(recon.directions, expected, rtol=0, atol=TOL)


def test_streaming_mean_ablation_equals_a_literal_loop(lens, images, oracle, labelled, stats):
    data, weights = labelled
    mean = oracle.mean(0)
    scores = stats.scores()
    pair_keep, neuron_keep = top_mask(scores, 10), top_mask(neuron_scores(scores), 20)
    ablation = PairAblation(stats)
    s = lens.decompose(images, granularity="pair").coefficients
    for keep in (pair_keep, neuron_keep.expand_as(pair_keep)):
        literal = torch.stack([torch.where(keep[..., None], oracle[b], mean).sum((0, 1)) for b in range(len(images))])
        torch.testing.assert_close(ablation.mean_ablated(s, keep), literal, rtol=0, atol=TOL)
    # the bias convention only moves constants between pairs: ablation does not depend on it
    separate = lens.collect(data, granularity="pair", convention="separate", top_k=TOP_K, batch_size=16)
    torch.testing.assert_close(PairAblation(separate).mean_ablated(s, pair_keep), ablation.mean_ablated(s, pair_keep),
                               rtol=0, atol=TOL)

    variants = standard_variants(ablation, keeps=[100, 10], levels=("pair", "neuron"))
    rows = {row["variant"]: row for row in ablation_table(lens, data, weights, variants, stats, batch_size=9)}
    labels = torch.tensor([label for _, label in data])
    literal_10 = torch.stack([torch.where(pair_keep[..., None], oracle[b], mean).sum((0, 1)) for b in range(IMAGES)])
    assert rows["pairs keep 10%"]["accuracy"] == (((literal_10 @ weights).argmax(1) == labels).double().mean().item())
    assert rows["pairs keep 10%"]["kept"] == keep_count(pair_keep.numel(), 10) == int(pair_keep.sum())
    assert rows["full model"]["accuracy"] == 1.0
    # keeping everything reproduces the model, hence its accuracy; the pc0 rebuild is exact too
    assert rows["pairs keep 100%"]["accuracy"] == rows["neurons keep 100%"]["accuracy"] == 1.0
    assert rows["pc0 reconstruction"]["accuracy"] == 1.0
    assert rows["pairs keep 10%"]["in_sample"] is True
    torch.testing.assert_close(ablation.mean_ablated(s, torch.ones_like(pair_keep)), lens.encode_image(images),
                               rtol=0, atol=TOL)
    assert rows["pairs keep 10%"]["accuracy"] < 1.0  # with 90 % of pairs at their means, something changes


def test_principal_reconstruction_reproduces_the_model(lens, images, stats):
    s = lens.decompose(images, granularity="pair").coefficients
    rebuilt = PairAblation(stats).reconstructed(s, principal_reconstruction(stats))
    torch.testing.assert_close(rebuilt, lens.encode_image(images), rtol=0, atol=TOL)


def test_text_reconstruction_matches_the_literal_projection(lens, images, oracle, labelled, stats):
    generator = torch.Generator().manual_seed(3)
    pool = torch.nn.functional.normalize(torch.randn(300, lens.spec.output_dim, generator=generator,
                                                     dtype=torch.float64), dim=1)
    recon, omp = text_reconstruction(stats, pool, n_atoms=8)
    assert (omp.n_nonzero_ == 8).all()
    # OMP explained each pair's pc0: its targets are the principal directions, in (head, neuron) order
    pcs = principal_reconstruction(stats).directions
    assert torch.allclose(omp.fidelity_, (omp.directions_ * pcs.flatten(0, 1)).sum(1), atol=TOL)
    # literal: each pair becomes mean + ⟨δ, p̂⟩p̂ with δ = r − mean and p̂ = normalise(x D)
    p_hat = torch.zeros_like(pcs.flatten(0, 1))
    for target in range(len(p_hat)):
        for atom, coef in zip(omp.ids_[target].tolist(), omp.coef_[target].tolist()):
            p_hat[target] += coef * omp.dictionary_[atom]
    p_hat = (p_hat / p_hat.norm(dim=1, keepdim=True)).view_as(pcs)
    mean = oracle.mean(0)
    delta = oracle - mean
    literal = (mean + (delta * p_hat).sum(-1, keepdim=True) * p_hat).sum((1, 2))
    s = lens.decompose(images, granularity="pair").coefficients
    torch.testing.assert_close(PairAblation(stats).reconstructed(s, recon), literal, rtol=0, atol=TOL)

    data, weights = labelled
    variants = standard_variants(PairAblation(stats), keeps=[50], levels=("pair",), text=recon, text_label="words")
    rows = {row["variant"]: row for row in ablation_table(lens, data, weights, variants, stats)}
    labels = torch.tensor([label for _, label in data])
    assert rows["words reconstruction"]["accuracy"] == ((literal @ weights).argmax(1) == labels).double().mean().item()


def test_neuron_principal_direction_is_the_literal_pca(lens, images, oracle, stats):
    moments = Moments(stats.neurons, stats.heads)
    for chunk in images.split(13):
        moments.update(lens.decompose(chunk, granularity="pair").coefficients.transpose(1, 2))
    directions, explained = neuron_principal_directions(stats, moments)
    totals = oracle.sum(1)  # [B, C, O]: each neuron summed over its heads
    centred = (totals - totals.mean(0)).transpose(0, 1)  # [C, B, O]
    _, singular, vh = torch.linalg.svd(centred, full_matrices=False)
    first = vh[:, 0]
    largest = first.gather(1, first.abs().argmax(1, keepdim=True))
    torch.testing.assert_close(directions, first * torch.sign(largest), rtol=0, atol=1e-9)  # eigh vs SVD round-off
    torch.testing.assert_close(explained, singular[:, 0] ** 2 / (singular**2).sum(1), rtol=0, atol=1e-9)


def test_masks_keep_the_top_fraction_and_refuse_bad_percentages():
    scores = torch.tensor([[0.5, 3.0, 1.0], [3.0, 0.1, 2.0]])
    assert top_mask(scores, 50).tolist() == [[False, True, False], [True, False, True]]
    assert top_mask(scores, 10).tolist() == [[False, True, False], [False, False, False]]  # tie: lower index wins
    assert top_mask(scores, 20).sum() == 2  # ⌈6 · 0.2⌉
    assert top_mask(scores, 100).all()
    assert keep_count(147_456, 10) == 14_746 and keep_count(100, 7) == 7 and keep_count(3, 1) == 1
    for bad in (0, -5, 100.5, float("nan"), True, "10"):
        with pytest.raises(CliplensError, match="percentage"):
            top_mask(scores, bad)


def test_vit_models_and_unlabelled_data_are_refused(lens, images, stats):
    vit = open_clip.CLIP(32, dict(layers=2, width=64, head_width=16, patch_size=8, image_size=32),
                         dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    vit_lens = cliplens.from_openclip(vit, lambda im: im, None, name="tiny-vit", pretrained=None, precision="fp64")
    with pytest.raises(CliplensError, match="ResNet"):
        next(pair_batches(vit_lens, [(torch.zeros(3, 32, 32), 0)]))
    board = AccuracyBoard(torch.eye(32, 3, dtype=torch.float64), standard_variants(PairAblation(stats), keeps=[10]))
    dec, _ = next(pair_batches(lens, [(image, -1) for image in images[:2]]))
    with pytest.raises(CliplensError, match="unlabelled"):
        board.update(dec, torch.tensor([-1, -1]))
    with pytest.raises(CliplensError, match="do not match"):
        neuron_principal_directions(stats, Moments(3, stats.heads))


# command line ----------------------------------------------------------------------------------------------------
WORDS = ["red", "green", "blue", "circle", "square", "triangle", "star", "big", "small", "striped", "dotted", "left",
         "right", "top", "bottom", "sky", "grass", "sand", "water", "stone", "wood", "metal", "cloud", "tree", "house"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(4)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    (root.parent / "pool.txt").write_text("\n".join(WORDS) + "\n")
    return root


def to_tensor(image):
    return torch.from_numpy(np.asarray(image.resize((SIZE, SIZE)), dtype=np.float64) / 255).permute(2, 0, 1)


@pytest.fixture
def cli_lens(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPLENS_CACHE", str(tmp_path / "cache"))
    lens = tiny_resnet_lens(to_tensor)

    def load_tiny(options):  # stands in for cliplens.load: pops the model options and returns the tiny model
        for key in ("model", "pretrained", "device", "precision", "seed"):
            options.pop(key)
        return lens

    for module in (pairs_cli, neuron_ablate_cli):
        monkeypatch.setattr(module, "load_lens", load_tiny)
    return lens


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_pairs_command_writes_summary_words_and_accuracy(cli_lens, image_folder, tmp_path):
    out = tmp_path / "out"
    pool = image_folder.parent / "pool.txt"
    result = CliRunner().invoke(pairs_cli.command, [
        "--model", "tiny", "--data-path", str(image_folder), "--keep", "10", "--omp-atoms", "4", "--pool", str(pool),
        "--pool-templates", "none", "--templates", "none", "--top-k", "5", "--batch-size", "4", "--texts-per-unit",
        "3", "--output-dir", str(out),
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = read_rows(out / "pairs.csv")
    spec = cli_lens.spec
    assert len(summary) == spec.heads * spec.channels
    assert [float(r["score"]) for r in summary] == sorted((float(r["score"]) for r in summary), reverse=True)
    assert [r["rank"] for r in summary] == [str(rank) for rank in range(len(summary))]
    assert sum(r["kept_in_ablation"] == "True" for r in summary) == keep_count(len(summary), 10)
    words = read_rows(out / "pair_words.csv")
    assert tuple(words[0]) == COLUMNS and {w["description"] for w in words} <= set(WORDS)
    first = summary[0]
    assert (words[0]["label"], words[0]["head"], words[0]["neuron"]) == (first["label"], first["head"], first["neuron"])
    assert words[0]["layer"] == "" and words[0]["method"] == "omp-k4"
    neuron_words = read_rows(out / "neuron_words.csv")
    assert {(w["layer"], w["head"]) for w in neuron_words} == {("", "")}
    assert {w["label"] for w in neuron_words} == {f"N{w['neuron']}" for w in neuron_words}
    assert len({w["neuron"] for w in neuron_words}) == keep_count(spec.channels, 10)
    ablation = read_rows(out / "ablation.csv")
    accuracy = {r["variant"]: float(r["accuracy"]) for r in ablation}
    assert set(accuracy) == {"full model", "pairs keep 10%", "neurons keep 10%", "pc0 reconstruction",
                             "text k=4 reconstruction"}
    assert accuracy["pc0 reconstruction"] == accuracy["full model"]
    assert all(float(r["accuracy"]) == int(r["correct"]) / int(r["images"]) for r in ablation)
    assert (out / "pair_stats" / "metadata.json").is_file()


def test_neuron_ablate_command_sweeps_keeps(cli_lens, image_folder, tmp_path):
    out = tmp_path / "out"
    args = ["--data-path", str(image_folder), "--omp-atoms", "0", "--templates", "none", "--level", "neuron",
            "--keep", "100", "--keep", "5", "--output-dir", str(out)]
    result = CliRunner().invoke(neuron_ablate_cli.command, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = {r["variant"]: r for r in read_rows(out / "ablation.csv")}
    assert set(rows) == {"full model", "neurons keep 100%", "neurons keep 5%", "pc0 reconstruction"}
    assert rows["neurons keep 100%"]["accuracy"] == rows["full model"]["accuracy"]
    kept = keep_count(cli_lens.spec.channels, 5)
    assert (rows["neurons keep 5%"]["kept"], rows["neurons keep 5%"]["ablated"]) == (
        str(kept), str(cli_lens.spec.channels - kept))
    bad = CliRunner().invoke(neuron_ablate_cli.command, args[:-2] + ["--keep", "0", "--output-dir", str(out)])
    assert isinstance(bad.exception, CliplensError)

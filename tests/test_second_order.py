"""Second-order lens (docs/methods/second-order.md#definition): the factorised form, its streaming statistics and the
ablations, each against a slow literal computation written here in float64.

Tolerances. Every fast path and its oracle are a few dozen products and sums of O(1) float64 values, so they agree to
round-off (≤ 5e-15 measured, on effects of size up to ~4); we assert 1e-10 absolute
(docs/methods/decomposition.md#invariants), far below any missing or misplaced term: the smallest share term measured
here (an LN1 mean share, scale 1) is 1e-4. Principal directions are compared by |cos| ≥ 1 − 1e-10: the coefficient-space
eigen-solve and the literal SVD differ by round-off divided by the relative spectral gap, which is ≥ 0.14 for every
neuron of these problems (measured).
"""

from __future__ import annotations

import pytest
import torch

from cliplens import CliplensError
from cliplens.decompose.second_order import SecondOrderLens
from cliplens.evaluate.second_order_ablation import (
    VARIANTS, ablation_variants, remove_deviations, second_order_ablation,
)
from cliplens.evaluate.zeroshot import accuracy
from cliplens.stats.second_order import SecondOrderStats, collect_second_order, load_second_order
from cliplens.stats.top_rows import TopRows
from conftest import random_images, tiny_vit, wrap

LAYER = 0  # two later blocks of four heads: J = 8 coefficients per neuron, d = 32, F = 64


def perturbed_vit(seed: int = 0):
    """A tiny ViT whose LayerNorm gains and every bias are non-trivial, so each share term of
    docs/methods/second-order.md matters."""
    model = tiny_vit(seed, mlp_ratio=1.0)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in model.visual.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model


@pytest.fixture(scope="module")
def lens():
    return wrap(perturbed_vit(), "tiny-vit-perturbed")


@pytest.fixture(scope="module")
def images():
    return random_images(3, 32, seed=3)


def literal_forward(model, images):
    """The backend's own blocks run by hand: per block its input x_l, CLS attention rows, neurons and MLP output."""
    visual = model.visual
    batch = images.shape[0]
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    x = visual.ln_pre(torch.cat([visual.class_embedding.expand(batch, 1, -1), x], 1) + visual.positional_embedding)
    width = x.shape[-1]
    states = []
    for block in visual.transformer.resblocks:
        heads = block.attn.num_heads
        dh = width // heads
        u = block.ln_1(x)
        qkv = u @ block.attn.in_proj_weight.T + block.attn.in_proj_bias
        q, k, v = (qkv[..., i * width:(i + 1) * width].unflatten(-1, (heads, dh)).transpose(1, 2) for i in range(3))
        attention = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, -1)  # [B, H, N, N]
        attended = (attention @ v).transpose(1, 2).flatten(2)
        middle = x + attended @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
        hidden = block.mlp.gelu(block.mlp.c_fc(block.ln_2(middle)))
        mlp = block.mlp.c_proj(hidden)
        states.append(dict(residual=x, cls_attention=attention[:, :, 0], hidden=hidden, mlp=mlp))
        x = middle + mlp
    r = x[:, 0]
    return states, r, visual.ln_post(r) @ visual.proj


def through_later_heads(model, states, r, z, layer, writes, convention, scale, normalize, share_of):
    """Steps 2-7 of docs/methods/second-order.md#definition for per-token residual writes `writes` [B, N, P, D] (P
    parallel pieces).

    `share_of(l')` is each piece's share of block l''s LN1 mean and bias (and, through it, of the value and
    out-projection biases and LN_post's mean and bias); the separate convention centres instead and moves every share
    out. The token sum is an explicit loop, as in the reference.
    """
    visual = model.visual
    blocks = visual.transformer.resblocks
    width, heads = r.shape[-1], blocks[0].attn.num_heads
    dh = width // heads
    terms = 2 * len(blocks) + 1
    mu_p = r.mean(-1)
    sigma_p = (r.var(-1, unbiased=False) + visual.ln_post.eps).sqrt()
    gamma_p, beta_p, proj = visual.ln_post.weight, visual.ln_post.bias, visual.proj
    nu = z.norm(dim=-1) if normalize else torch.ones_like(mu_p)
    total = 0.0
    for later in range(layer + 1, len(blocks)):
        block, state = blocks[later], states[later]
        x = state["residual"]
        mu1 = x.mean(-1)
        sigma1 = (x.var(-1, unbiased=False) + block.ln_1.eps).sqrt()
        omega = share_of(later)
        for h in range(heads):
            rows = slice(2 * width + h * dh, 2 * width + (h + 1) * dh)
            w_v, b_v = block.attn.in_proj_weight[rows], block.attn.in_proj_bias[rows]
            w_o = block.attn.out_proj.weight[:, h * dh:(h + 1) * dh]
            o = 0.0
            for t in range(x.shape[1]):
                e = writes[:, t]  # [B, P, D]
                if convention == "reference":
                    e_hat = (block.ln_1.weight * (e - omega * mu1[:, t, None, None])
                             / sigma1[:, t, None, None] + omega * block.ln_1.bias)
                    v = e_hat @ w_v.T + omega * b_v
                else:
                    centred = e - e.mean(-1, keepdim=True)
                    v = (block.ln_1.weight * centred / sigma1[:, t, None, None]) @ w_v.T
                o = o + state["cls_attention"][:, h, t, None, None] * v
            y = o @ w_o.T
            if convention == "reference":
                y = y + block.attn.out_proj.bias * omega / heads
                n_sh = terms * heads / omega  # (1+2L)·H·(1+2l')·F for one neuron
                phi = (gamma_p * (y - (mu_p / n_sh)[:, None, None]) / sigma_p[:, None, None] + beta_p / n_sh) @ proj
            else:
                phi = (gamma_p * (y - y.mean(-1, keepdim=True)) / sigma_p[:, None, None]) @ proj
            total = total + phi
    return total * (scale / nu)[:, None, None]


def literal_effects(model, images, layer, convention, scale=1.0, normalize=False, silent=False):
    """φ_n(I) [B, F, d] the long way: every neuron's write e_{t,n} = a_{t,n} w_n (+ b_out/F), steps 2-7 of
    docs/methods/second-order.md.

    `silent` sets every activation a_{t,n} to zero in the writes (attention and LN statistics stay the image's own):
    what remains is the offset c(I)."""
    states, r, z = literal_forward(model, images)
    c_proj = model.visual.transformer.resblocks[layer].mlp.c_proj
    neurons = c_proj.weight.shape[1]
    activations = states[layer]["hidden"] * (0.0 if silent else 1.0)
    writes = activations[..., None] * c_proj.weight.T  # [B, N, F, D]
    if convention == "reference":
        writes = writes + c_proj.bias / neurons
    return through_later_heads(model, states, r, z, layer, writes, convention, scale, normalize,
                               lambda later: 1.0 / ((2 * later + 1) * neurons))


def literal_path(model, images, layer, convention, scale=1.0, normalize=False):
    """docs/methods/second-order.md#invariants: the whole MLP-l output (c_proj bias included) as the only residual
    piece, share 1/(1+2l')."""
    states, r, z = literal_forward(model, images)
    writes = states[layer]["mlp"][:, :, None]  # [B, N, 1, D]
    return through_later_heads(model, states, r, z, layer, writes, convention, scale, normalize,
                               lambda later: 1.0 / (2 * later + 1))[:, 0]


SETTINGS = [("reference", 100.0, True), ("reference", 1.0, False), ("separate", 1.0, False), ("separate", 100.0, True)]


@pytest.mark.parametrize("convention,scale,normalize", SETTINGS)
def test_factorised_form_equals_the_literal_computation(lens, images, convention, scale, normalize):
    effects = SecondOrderLens(lens.decomposer, LAYER, convention)(images, scale=scale, normalize=normalize)
    expected = literal_effects(lens.model, images, LAYER, convention, scale, normalize)
    assert effects.coefficients.shape == (3, 8, 64)
    assert torch.allclose(effects.effects(), expected, atol=1e-10, rtol=0)
    assert expected.abs().max() > 1e-2  # the comparison is not between two near-zero arrays


@pytest.mark.parametrize("convention,scale,normalize", SETTINGS)
def test_sum_over_neurons_is_the_mlp_to_later_heads_path(lens, images, convention, scale, normalize):
    effects = SecondOrderLens(lens.decomposer, LAYER, convention)(images, scale=scale, normalize=normalize)
    path = literal_path(lens.model, images, LAYER, convention, scale, normalize)
    assert torch.allclose(effects.total(), path, atol=1e-10, rtol=0)
    assert torch.allclose(effects.effects().sum(1) + effects.bias, path, atol=1e-10, rtol=0)


@pytest.mark.parametrize("convention", ["reference", "separate"])
def test_offset_is_shared_by_all_neurons_or_zero(lens, images, convention):
    effects = SecondOrderLens(lens.decomposer, LAYER, convention)(images, scale=100.0, normalize=True)
    offsets = literal_effects(lens.model, images, LAYER, convention, 100.0, True, silent=True)  # [B, F, d]
    assert torch.allclose(offsets, effects.offset()[:, None].expand_as(offsets), atol=1e-10, rtol=0)
    if convention == "reference":
        assert (offsets - offsets[:, :1]).abs().max() <= 1e-12  # identical across neurons
        assert offsets.abs().max() > 1e-2
    else:
        assert offsets.abs().max() == 0 and effects.offset().abs().max() == 0


def test_centred_effects_lie_in_the_neuron_span_plus_the_offset_span(lens):
    images = random_images(6, 32, seed=5)
    phi = literal_effects(lens.model, images, LAYER, "reference", 100.0, True)  # [6, F, d]
    effects = SecondOrderLens(lens.decomposer, LAYER, "reference")(images, scale=100.0, normalize=True)
    offsets = effects.offset()
    offset_span = offsets - offsets.mean(0)  # 5 independent directions at most
    centred = phi - phi.mean(0)
    worst, outside = 0.0, 0.0
    for n in range(phi.shape[1]):
        span = torch.cat([effects.basis.neurons[:, n], offset_span]).T  # [d, J + 6], rank ≤ 13 < d = 32
        solution = torch.linalg.lstsq(span, centred[:, n].T).solution
        worst = max(worst, (span @ solution - centred[:, n].T).abs().max().item())
        random_target = torch.randn(phi.shape[-1], 1, dtype=phi.dtype, generator=torch.Generator().manual_seed(n))
        outside = max(outside, (span @ torch.linalg.lstsq(span, random_target).solution - random_target).abs().max())
    assert worst <= 1e-10
    assert outside > 1e-2  # the span is a proper subspace, so the check could fail


# streaming statistics -------------------------------------------------------------------------------------------------
FIT_IMAGES, TOP_K = 21, 5  # k odd: the sign rule never ties, so the literal rule below needs no tie-break


def dataset(images, labels=None):
    """A map-style dataset of preprocessed tensors (the loader passes tensors through untouched)."""
    labels = [0] * len(images) if labels is None else labels
    return [(image, int(label)) for image, label in zip(images, labels)]


def oriented(direction, rows):
    """The reference's sign rule: keep the direction if more than half of the rows project positively."""
    return direction if 2 * int(((rows @ direction) > 0).sum()) > len(rows) else -direction


def literal_statistics(phi, k):
    """Everything docs/methods/second-order.md#statistics derives from materialised effects φ [I, F, d]: means, norms,
    top-k, thresholds and PCs."""
    mean = phi.mean(0)
    deviations = phi - mean
    norms = deviations.norm(dim=-1)  # [I, F]
    top = norms.T.sort(dim=1, descending=True)
    result = {"mean": mean, "norms": norms, "top_norms": top.values[:, :k], "top_index": top.indices[:, :k],
              "pcs": [], "pcs_all": [], "explained": [], "explained_topk": [], "top_projections": []}
    for n in range(phi.shape[1]):
        block = deviations[top.indices[n, :k], n]  # [k, d]
        _, singular, vh = torch.linalg.svd(block, full_matrices=False)
        result["pcs"].append(oriented(vh[0], block))
        result["top_projections"].append(block @ result["pcs"][-1])
        result["explained_topk"].append(singular[0] ** 2 / (singular**2).sum())
        values, vectors = torch.linalg.eigh(deviations[:, n].T @ deviations[:, n] / len(phi))
        result["pcs_all"].append(oriented(vectors[:, -1], block))
        result["explained"].append(values[-1] / values.sum())
    for key in ("pcs", "pcs_all", "explained", "explained_topk", "top_projections"):
        result[key] = torch.stack(result[key])
    return result


def assert_same_direction(fast, literal):
    cosines = (fast * literal).sum(-1) / (fast.norm(dim=-1) * literal.norm(dim=-1))
    assert cosines.min() >= 1 - 1e-10  # same sign as well: a flipped direction gives −1


@pytest.fixture(scope="module")
def fit_images():
    return random_images(FIT_IMAGES, 32, seed=11)


@pytest.fixture(scope="module", params=["reference", "separate"])
def fitted(request, lens, fit_images):
    convention = request.param
    stats = collect_second_order(lens, dataset(fit_images), layer=LAYER, convention=convention, scale=100.0,
                                 normalize=True, top_k=TOP_K, batch_size=8)
    literal = literal_statistics(literal_effects(lens.model, fit_images, LAYER, convention, 100.0, True), TOP_K)
    return stats, literal


def test_streaming_statistics_equal_the_materialised_ones(fitted):
    stats, literal = fitted
    assert stats.count == stats.ranked == FIT_IMAGES
    assert torch.allclose(stats.mean_effects, literal["mean"], atol=1e-10, rtol=0)
    assert torch.equal(stats.top_images, literal["top_index"])
    assert torch.allclose(stats.top_norms, literal["top_norms"], atol=1e-10, rtol=0)
    assert torch.allclose(stats.norms(), literal["top_norms"].flip(1), atol=1e-10, rtol=0)
    assert torch.allclose(stats.thresholds, literal["top_norms"][:, -1], atol=1e-10, rtol=0)
    assert torch.allclose(stats.mean_square_deviation, (literal["norms"] ** 2).mean(0), atol=1e-10, rtol=0)


def test_principal_directions_equal_the_literal_svd_with_the_sign_rule(fitted):
    stats, literal = fitted
    assert torch.allclose(stats.principal_directions.norm(dim=-1), torch.ones(64, dtype=torch.float64), atol=1e-12)
    assert_same_direction(stats.principal_directions, literal["pcs"])
    assert_same_direction(stats.principal_directions_all, literal["pcs_all"])
    assert torch.allclose(stats.topk_variance_explained, literal["explained_topk"], atol=1e-10, rtol=0)
    assert torch.allclose(stats.variance_explained, literal["explained"], atol=1e-10, rtol=0)
    # effects are O(100) here (scale 100, unit embedding): 1e-8 is still ~1e5 ulps of them
    assert torch.allclose(stats.top_projections, literal["top_projections"], atol=1e-8, rtol=0)


def test_merging_two_halves_equals_the_whole(lens, fit_images):
    second_order = SecondOrderLens(lens.decomposer, LAYER, "reference")
    halves = (fit_images[:9], fit_images[9:])
    whole = SecondOrderStats(second_order.basis, scale=100.0, normalize=True, top_k=TOP_K)
    parts = [SecondOrderStats(second_order.basis, scale=100.0, normalize=True, top_k=TOP_K) for _ in halves]
    for part, images in zip(parts, halves):
        for batch in images.split(4):  # several batches per shard
            effects = second_order(batch, scale=100.0, normalize=True)
            part.update(effects)
            whole.update(effects)
    moments = parts[0].merge(parts[1])
    assert moments.count == whole.count
    assert torch.allclose(moments.mean_coordinates, whole.mean_coordinates, atol=1e-10, rtol=0)
    assert torch.allclose(moments.coordinate_covariance, whole.coordinate_covariance, atol=1e-10, rtol=0)
    whole.start_ranking()
    whole.rank(second_order(fit_images, scale=100.0, normalize=True), torch.arange(FIT_IMAGES))
    for part, images in zip(parts, halves):  # every shard measured from the merged mean
        part.start_ranking(moments.mean_coordinates)
        part.rank(second_order(images, scale=100.0, normalize=True), torch.arange(len(images)))
    merged = parts[0].merge(parts[1])
    assert torch.equal(merged.top_images, whole.top_images)  # shard 2's positions shifted past shard 1's
    assert torch.allclose(merged.top_norms, whole.top_norms, atol=1e-10, rtol=0)
    assert_same_direction(merged.principal_directions, whole.principal_directions)
    parts[1].start_ranking()  # its own mean: a different centre
    with pytest.raises(CliplensError, match="different centres"):
        parts[0].merge(parts[1])


def test_save_and_load_round_trip_and_refuse_another_model(fitted, lens, tmp_path):
    stats, _ = fitted
    path = stats.save(tmp_path / "stats")
    loaded = load_second_order(path, lens)
    assert (loaded.layer, loaded.convention, loaded.scale, loaded.normalize, loaded.count) == (
        stats.layer, stats.convention, stats.scale, stats.normalize, stats.count)
    for name in ("mean_effects", "principal_directions", "principal_directions_all", "thresholds", "top_images",
                 "variance_explained", "mean_coordinates", "coordinate_covariance"):
        assert torch.equal(getattr(loaded, name), getattr(stats, name)), name
    other = wrap(perturbed_vit(seed=7), "another-tiny-vit")
    with pytest.raises(CliplensError, match="fingerprint"):
        load_second_order(path, other)


# ablations ------------------------------------------------------------------------------------------------------------
def literal_variants(model, images, literal):
    """The five representations of docs/methods/second-order.md#statistics from materialised effects and the literal fit
    statistics."""
    _, _, z = literal_forward(model, images)
    representation = 100.0 * z / z.norm(dim=-1, keepdim=True)
    deviations = literal_effects(model, images, LAYER, literal["convention"], 100.0, True) - literal["mean"]
    significant = (deviations.norm(dim=-1) > literal["top_norms"][:, -1]).double()[..., None]  # [B, F, 1]
    along = (deviations * literal["pcs"]).sum(-1, keepdim=True) * literal["pcs"]
    return {
        "baseline": representation,
        "without_all": representation - deviations.sum(1),
        "without_significant": representation - (significant * deviations).sum(1),
        "without_insignificant": representation - ((1 - significant) * deviations).sum(1),
        "pc_reconstruction": representation - deviations.sum(1) + along.sum(1),
    }, significant


@pytest.fixture(scope="module")
def eval_images():
    return random_images(7, 32, seed=13)


def test_ablation_variants_equal_the_literal_ones(fitted, lens, eval_images):
    stats, literal = fitted
    literal = {**literal, "convention": stats.convention}
    expected, significant = literal_variants(lens.model, eval_images, literal)
    assert 0 < significant.mean() < 1  # both significant and insignificant neurons occur
    effects = SecondOrderLens(lens.decomposer, LAYER, stats.convention)(eval_images, scale=100.0, normalize=True)
    variants = ablation_variants(effects, stats)
    assert list(variants) == list(VARIANTS)
    for name in VARIANTS:
        assert torch.allclose(variants[name], expected[name], atol=1e-10, rtol=0), name
    assert torch.equal(remove_deviations(effects, stats, torch.zeros(7, 64, dtype=torch.bool)), variants["baseline"])
    everything = remove_deviations(effects, stats, torch.ones(7, 64, dtype=torch.bool))
    assert torch.allclose(everything, variants["without_all"], atol=1e-12, rtol=0)


def test_second_order_ablation_accuracies(fitted, lens, eval_images):
    stats, literal = fitted
    literal = {**literal, "convention": stats.convention}
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(32, 4, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 4, (7,), generator=generator)
    result = second_order_ablation(lens, stats, dataset(eval_images, labels), weights, batch_size=3)
    expected, significant = literal_variants(lens.model, eval_images, literal)
    assert result.count == 7
    assert result.accuracies["baseline"] == accuracy(lens.encode_image(eval_images), weights, labels)
    for name in VARIANTS:
        assert result.accuracies[name] == accuracy(expected[name], weights, labels), name
    assert result.significant_fraction == pytest.approx(significant.mean().item(), abs=1e-12)
    assert result.metadata["in_sample"] is False


# bad input ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", [-1, 2, 3, True, 1.0])
def test_layers_without_later_heads_are_refused(lens, layer):
    with pytest.raises(CliplensError, match="out of range"):
        SecondOrderLens(lens.decomposer, layer)


def test_resnets_and_unknown_settings_are_refused(lens, resnet_lens, fit_images):
    with pytest.raises(CliplensError, match="ViT MLP neurons"):
        SecondOrderLens(resnet_lens.decomposer, 0)
    with pytest.raises(CliplensError, match="ViT MLP neurons"):
        collect_second_order(resnet_lens, dataset(random_images(2, 64)), layer=0)
    with pytest.raises(CliplensError, match="convention"):
        SecondOrderLens(lens.decomposer, 0, "bogus")
    second_order = SecondOrderLens(lens.decomposer, 0)
    with pytest.raises(CliplensError, match="top_k"):
        SecondOrderStats(second_order.basis, scale=1.0, normalize=False, top_k=0)
    stats = SecondOrderStats(second_order.basis, scale=1.0, normalize=False)
    with pytest.raises(CliplensError, match="first pass"):
        stats.start_ranking()
    stats.update(second_order(fit_images[:4]))
    with pytest.raises(CliplensError, match="second pass"):
        stats.principal_directions
    with pytest.raises(CliplensError, match="scale"):
        stats.update(second_order(fit_images[:4], scale=100.0))


# command line ---------------------------------------------------------------------------------------------------------
def image_tree(root, seed):
    """Two class folders of random 32-pixel PNGs."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    for name in ("circle", "square"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=generator, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_command_writes_statistics_summaries_and_ablations(tmp_path, monkeypatch):
    import csv
    import json

    import open_clip
    from click.testing import CliRunner

    import cliplens
    from cliplens.cli import second_order as cli_module
    from cliplens.models.hf import standard_transform

    tree_lens = cliplens.from_openclip(perturbed_vit(), standard_transform(32),
                                       open_clip.get_tokenizer("ViT-B-32", context_length=16), name="tiny-files",
                                       pretrained=None, precision="fp64")
    monkeypatch.setattr(cli_module, "load_lens", lambda options: tree_lens)
    fit, held_out, out = image_tree(tmp_path / "fit", 0), image_tree(tmp_path / "eval", 1), tmp_path / "out"
    pool = tmp_path / "pool.txt"
    pool.write_text("\n".join(["red", "blue", "circle", "square", "striped", "dotted", "top left", "centre"]))
    arguments = ["--mlp-layer", "0", "--data-path", str(fit), "--eval-data-path", str(held_out), "--output-dir",
                 str(out), "--top-k", "3", "--convention", "reference", "--scale", "100", "--normalize",
                 "--batch-size", "3", "--pool", str(pool), "--omp-atoms", "3", "--texts-per-unit", "2", "--grids", "2"]
    result = CliRunner().invoke(cli_module.command, arguments)
    assert result.exit_code == 0, result.output
    stats = load_second_order(out / "second_order_L0", tree_lens)
    assert (stats.count, stats.top_k, stats.convention) == (8, 3, "reference")
    rows = list(csv.DictReader((out / "neurons_L0.csv").open()))
    assert len(rows) == 64 and (rows[5]["label"], rows[5]["layer"], rows[5]["neuron"]) == ("L0N5", "0", "5")
    assert [int(i) for i in rows[5]["top_images"].split()] == stats.top_images[5].tolist()
    assert float(rows[5]["threshold"]) == pytest.approx(stats.thresholds[5].item(), rel=1e-12)
    ablation = list(csv.DictReader((out / "ablation_L0.csv").open()))
    assert [row["variant"] for row in ablation] == list(VARIANTS)
    assert [(row["level"], row["ablated"], row["kept"], row["total"]) for row in ablation] == [
        ("model", "0", "", ""), ("neuron", "64", "0", "64"), ("neuron", "", "", "64"), ("neuron", "", "", "64"),
        ("pc", "", "", "64")]
    assert all(float(row["accuracy"]) == int(row["correct"]) / int(row["images"]) for row in ablation)
    record = json.loads((out / "metadata.json").read_text())
    assert 0 <= record["ablation"]["significant_fraction"] <= 1 and record["layer"] == 0
    words = list(csv.DictReader((out / "neuron_words_L0.csv").open()))
    alive = (stats.principal_directions.norm(dim=-1) > 0).sum().item()
    assert len(words) == 2 * alive and {row["method"] for row in words} == {"omp-k3"}
    first = [row for row in words if row["label"] == words[0]["label"]]
    assert [row["rank"] for row in first] == ["0", "1"] and words[0]["label"] == f"L0N{words[0]['neuron']}"
    assert abs(float(first[0]["coefficient"])) >= abs(float(first[1]["coefficient"]))
    strongest = stats.norms().mean(-1).argsort(descending=True)[:2].tolist()
    assert sorted(p.name for p in (out / "top_images_L0").iterdir()) == sorted(
        f"L0N{n}.{ext}" for n in strongest for ext in ("csv", "png"))
    ranked = list(csv.DictReader((out / "top_images_L0" / f"L0N{strongest[0]}.csv").open()))
    assert [int(row["index"]) for row in ranked] == stats.top_images[strongest[0]].tolist()
    assert {row["label"] for row in ranked} == {f"L0N{strongest[0]}"}
    assert all(row["item"].startswith(str(fit)) for row in ranked)  # the file each row is
    result = CliRunner().invoke(cli_module.command, ["--mlp-layer", "2", "--data-path", str(fit)])
    assert isinstance(result.exception, CliplensError)


@pytest.mark.parametrize("k, batches", [(7, [3, 5, 1, 8, 2, 9]), (4, [1] * 12), (30, [6, 6]), (5, [5])])
def test_streamed_top_rows_are_the_whole_streams_top_k(k, batches):
    """TopRows keeps entries in slots and sorts on reading: against one stable sort of everything streamed (equal
    scores in dataset order), with ties (small integer scores) and with distinct scores; each payload stays with its
    position, and lists rebuilt from sorted ones keep the same."""
    generator = torch.Generator().manual_seed(k)
    total = sum(batches)
    for scores in (torch.randint(0, 4, (5, total), generator=generator).double(),
                   torch.randn(5, total, generator=generator, dtype=torch.float64)):
        positions = torch.arange(total).expand(5, -1)
        payload = (torch.stack([positions * 10 + row for row in range(3)], -1) + torch.arange(5)[:, None, None]).double()
        top = TopRows.empty(5, 3, k, dtype=torch.float64, device="cpu")
        for start, size in zip(torch.tensor([0] + batches).cumsum(0).tolist(), batches):
            part = slice(start, start + size)
            top.push(scores[:, part], positions[:, part], payload[:, part])
        values, index, kept = top.sorted()
        expected = scores.sort(dim=1, descending=True, stable=True)
        assert torch.equal(values, expected.values[:, :k])
        assert torch.equal(kept, payload.gather(1, index[..., None].expand(-1, -1, 3)))
        assert all(len(set(row)) == len(row) for row in index.tolist())
        assert torch.equal(index, expected.indices[:, :k])  # equal scores in dataset order
        half = total // 2  # a checkpoint after half the stream holds the sorted lists; the rest continues from them
        first = TopRows.empty(5, 3, k, dtype=torch.float64, device="cpu")
        first.push(scores[:, :half], positions[:, :half], payload[:, :half])
        resumed = TopRows(*first.sorted(), k)
        resumed.push(scores[:, half:], positions[:, half:], payload[:, half:])
        assert all(torch.equal(a, b) for a, b in zip(resumed.sorted(), top.sorted()))

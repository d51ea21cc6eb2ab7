"""Zero-shot segmentation: metrics against literal loops, data sources, heatmap exactness, the command."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cliplens.errors import CliplensError
from cliplens.evaluate.seg_metrics import (BinarySegmentation, MultiClassSegmentation, average_precision,
                                           binary_average_precision)


# metrics ------------------------------------------------------------------------------------------------------------
def _binary_batch(seed: int, n: int = 4, size: int = 9):
    generator = torch.Generator().manual_seed(seed)
    soft = torch.rand(n, size, size, generator=generator, dtype=torch.float64)
    soft = (soft * 4).round() / 4  # ties, as min-max normalised maps have
    truth = torch.rand(n, size, size, generator=generator) > 0.6
    truth[:, 0, 1] = True  # every image has foreground
    return soft, soft > soft.mean(dim=(1, 2), keepdim=True), truth


def test_average_precision_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    soft, _, truth = _binary_batch(0)
    for image_soft, image_truth in zip(soft, truth):
        scores = np.concatenate([1 - image_soft.numpy().ravel(), image_soft.numpy().ravel()])
        labels = np.concatenate([~image_truth.numpy().ravel(), image_truth.numpy().ravel()])
        assert binary_average_precision(image_soft, image_truth) == pytest.approx(
            metrics.average_precision_score(labels, scores), abs=1e-12)
    assert average_precision(torch.tensor([0.9, 0.1]), torch.tensor([True, False])) == 1.0


def test_binary_metrics_equal_a_literal_per_image_loop():
    metric = BinarySegmentation()
    batches = [_binary_batch(seed) for seed in range(3)]
    valid = torch.ones(4, 9, 9, dtype=torch.bool)
    valid[:, :, 0] = False  # an ignored border column
    for batch in batches:
        metric.update(*batch, valid)
    correct = pixels = 0
    intersection, union, aps = [0, 0], [0, 0], []
    for soft, predicted, truth in batches:
        for s, p, t in zip(soft[:, :, 1:], predicted[:, :, 1:], truth[:, :, 1:]):
            p, t = p.numpy(), t.numpy()
            correct += int((p == t).sum())
            pixels += p.size
            for c, (pc, tc) in enumerate(((~p, ~t), (p, t))):
                intersection[c] += int((pc & tc).sum())
                union[c] += int((pc | tc).sum())
            aps.append(binary_average_precision(s, torch.from_numpy(t)))
    assert metric.images == 12
    assert metric.pixel_accuracy() == pytest.approx(correct / pixels, abs=1e-12)
    assert metric.miou() == pytest.approx((intersection[0] / union[0] + intersection[1] / union[1]) / 2, abs=1e-12)
    assert metric.map() == pytest.approx(sum(aps) / len(aps), abs=1e-12)


def test_a_perfect_prediction_scores_one():
    metric = BinarySegmentation()
    _, _, truth = _binary_batch(1)
    metric.update(truth.double(), truth, truth)
    assert (metric.pixel_accuracy(), metric.miou(), metric.map()) == (1.0, 1.0, 1.0)
    multi = MultiClassSegmentation(3)
    labels = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(0))
    multi.update(labels, labels)
    assert multi.miou() == 1.0


def test_multiclass_miou_equals_a_literal_loop_and_skips_ignored_pixels():
    generator = torch.Generator().manual_seed(3)
    classes, ignore = 4, 255
    truth = torch.randint(0, classes, (6, 7, 7), generator=generator)
    truth[truth == 3] = ignore  # class 3 never occurs in the truth
    truth[:, 0] = ignore
    predicted = torch.randint(0, classes, (6, 7, 7), generator=generator)
    metric = MultiClassSegmentation(classes, ignore=ignore)
    metric.update(predicted[:3], truth[:3])
    metric.update(predicted[3:], truth[3:])
    intersection, union = np.zeros(classes), np.zeros(classes)
    for p, t in zip(predicted.numpy(), truth.numpy()):
        kept = t != ignore
        for c in range(classes):
            intersection[c] += ((p == c) & (t == c) & kept).sum()
            union[c] += (((p == c) | (t == c)) & kept).sum()
    present = union > 0
    assert metric.miou() == pytest.approx((intersection[present] / union[present]).mean(), abs=1e-12)
    with pytest.raises(CliplensError, match="classes 0..3"):
        metric.update(torch.full((1, 2, 2), 7), torch.zeros(1, 2, 2, dtype=torch.long))


# data -----------------------------------------------------------------------------------------------------------------
def test_shapes_segmentation_masks_label_each_object_by_its_shape():
    from cliplens.data.segmentation import segmentation_source

    source = segmentation_source("shapes:segmentation:3:5")
    assert len(source) == 3 and not source.single_object
    for i in range(3):
        scene, labels = source.scenes.scene(i), source.mask(i)
        assert labels.shape == source[i][0].size[::-1]
        assert (labels > 0).sum() == sum(int(m.sum()) for m in scene.masks)
        for obj, pixels in zip(scene.objects, scene.masks):
            assert (labels[pixels] == source.classnames.index(obj.shape) + 1).all()
    with pytest.raises(CliplensError, match="shapes:segmentation:<n>"):
        segmentation_source("shapes:segmentation:x")
    with pytest.raises(CliplensError, match="not one of"):
        segmentation_source("shapes:test:4")


def _mask_folder(root, sizes=((20, 16), (12, 12))):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    written = []
    for i, (w, h) in enumerate(sizes):
        labels = np.zeros((h, w), dtype=np.uint8)
        labels[2:6, 3:9], labels[0, :] = 1 + i % 2, 255
        Image.new("RGB", (w, h), (200, 10, 10)).save(root / "images" / f"im{i}.jpg")
        Image.fromarray(labels, "L").save(root / "masks" / f"im{i}.png")
        written.append(labels)
    return written


def test_mask_folder_round_trip_and_one_line_errors(tmp_path):
    from PIL import Image

    from cliplens.data.segmentation import aligned_mask, segmentation_source

    written = _mask_folder(tmp_path / "set")
    source = segmentation_source(f"masks:{tmp_path / 'set'}")
    assert source.classnames == ["cat", "dog"] and len(source) == 2
    for i, labels in enumerate(written):
        assert np.array_equal(source.mask(i), labels) and source[i][0].size == labels.shape[::-1]
    assert aligned_mask(written[0], 8).shape == (8, 8)
    Image.fromarray(np.full((16, 20), 3, dtype=np.uint8), "L").save(tmp_path / "set" / "masks" / "im0.png")
    with pytest.raises(CliplensError, match="holds value 3"):
        source.mask(0)
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8), "L").save(tmp_path / "set" / "masks" / "im0.png")
    with pytest.raises(CliplensError, match="5x5 but its image is 20x16"):
        source.mask(0)
    (tmp_path / "set" / "masks" / "im1.png").unlink()
    with pytest.raises(CliplensError, match="have no mask"):
        segmentation_source(f"masks:{tmp_path / 'set'}")
    (tmp_path / "set" / "classes.txt").unlink()
    with pytest.raises(CliplensError, match="lacks classes.txt"):
        segmentation_source(f"masks:{tmp_path / 'set'}")


# heatmaps -------------------------------------------------------------------------------------------------------------
def test_per_token_maps_sum_to_the_image_level_projection(vit_lens, vit_images, resnet_lens, resnet_images):
    from cliplens.apps.segmentation import SPATIAL_HEADS, head_token_scores, pair_token_scores
    from cliplens.labels import head_label, pool_head_label

    directions = torch.randn(3, vit_lens.spec.output_dim, generator=torch.Generator().manual_seed(0),
                             dtype=torch.float64)
    heads = [(1, 0), (1, 3), (2, 1), (2, 2)]  # any set of heads, not only whole layers
    tokens = head_token_scores(vit_lens.decomposer.factorise(vit_images, SPATIAL_HEADS), directions, heads)
    whole = vit_lens.decompose(vit_images, granularity="head")
    chosen = sum(whole[head_label(l, h)] for l, h in heads)
    assert tokens.shape == (5, 3, vit_lens.spec.tokens)
    assert torch.allclose(tokens.sum(-1), chosen @ directions.T, atol=1e-10, rtol=0)
    projected = torch.einsum("hno,ko->hnk", resnet_lens.decomposer.directions(), directions)
    trace = resnet_lens.decomposer.trace(resnet_images)
    tokens = pair_token_scores(trace, projected, None)
    whole = resnet_lens.decompose(resnet_images, granularity="head")
    every = sum(whole[pool_head_label(h)] for h in range(resnet_lens.spec.heads))
    assert tokens.shape == (5, 3, resnet_lens.spec.tokens)
    assert torch.allclose(tokens.sum(-1), every @ directions.T, atol=1e-10, rtol=0)
    # the top pairs: per image and class, the tokens sum to the projection of exactly the pairs that score highest
    pairs = resnet_lens.decomposer.pairs(resnet_images)
    pieces = pairs.components @ directions.T  # [B, H·C, K]
    top = pair_token_scores(trace, projected, 7).sum(-1)
    expected = pieces.topk(7, dim=1).values.sum(1)
    assert torch.allclose(top, expected, atol=1e-10, rtol=0)


def test_second_order_token_maps_sum_to_the_neurons_image_level_projection(vit_lens, vit_images):
    from cliplens.apps.segmentation import second_order_token_scores
    from cliplens.decompose.second_order import SecondOrderLens

    directions = torch.randn(3, vit_lens.spec.output_dim, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    orders = [SecondOrderLens(vit_lens.decomposer, layer) for layer in (0, 1)]
    effects = [order(vit_images) for order in orders]
    projected = [torch.einsum("jfd,kd->jfk", order.basis.neurons, directions) for order in orders]
    every = torch.cat([e.effects() for e in effects], 1) @ directions.T  # [B, 2F, K]: ⟨φ_n, c_k⟩ of every neuron
    tokens = second_order_token_scores(effects, projected, None)
    assert tokens.shape == (5, 3, vit_lens.spec.tokens)
    assert torch.allclose(tokens.sum(-1), every.sum(1), atol=1e-10, rtol=0)
    top = second_order_token_scores(effects, projected, 5).sum(-1)
    assert torch.allclose(top, every.topk(5, dim=1).values.sum(1), atol=1e-10, rtol=0)
    # and all neurons of a layer are its whole MLP → later-heads path, less the c_proj bias's share
    path = effects[1].total() - effects[1].bias
    assert torch.allclose(second_order_token_scores(effects[1:], projected[1:], None).sum(-1), path @ directions.T,
                          atol=1e-10, rtol=0)


def test_baseline_maps_are_distributions_and_masks_follow_the_rules(vit_lens, vit_images):
    from cliplens.apps.segmentation import Maps, Segmenter, Selection, attention_maps, class_labels, foreground

    for rollout in (False, True):
        maps = attention_maps(vit_lens, vit_images, rollout=rollout)
        assert maps.shape == (5, vit_lens.spec.tokens - 1) and (maps > 0).all() and (maps.sum(1) < 1).all()
    directions = torch.eye(2, vit_lens.spec.output_dim, dtype=torch.float64)
    segmenter = Segmenter(vit_lens, ["heads", "centre"], directions, Selection(heads=((2, 0), (2, 1), (2, 2), (2, 3))))
    predicted, (heads, centre) = segmenter(vit_images, single_object=True)
    assert torch.equal(predicted, (vit_lens.decomposer.encode(vit_images) @ directions.T).argmax(1))
    assert heads.grid.shape == (5, 2, 4, 4) and centre.grid.shape == (5, 1, 32, 32)
    assert torch.allclose(heads.grid.sum(1), torch.zeros(5, 4, 4, dtype=torch.float64), atol=1e-12)  # centred
    full = heads.upsampled(heads.grid)
    assert full.shape == (5, 2, 32, 32) and torch.equal(centre.upsampled(centre.grid), centre.grid)
    top, index = heads.best(chunk=1)
    assert torch.equal(top, full.max(1).values) and torch.equal(index, full.argmax(1))
    predicted = torch.tensor([0, 1, 0, 1, 1])
    soft, hard = foreground(heads, predicted, single_object=True, threshold=None)
    assert soft.amin(dim=(1, 2)).eq(0).all() and soft.amax(dim=(1, 2)).eq(1).all()
    expected = full[torch.arange(5), predicted].clamp_min(0)
    assert torch.equal(hard, soft > soft.mean(dim=(1, 2), keepdim=True))
    assert torch.equal(soft > 0, expected > expected.flatten(1).min(1).values[:, None, None])
    labels = class_labels(heads, predicted, hard)
    assert torch.equal(labels == 0, ~hard) and torch.equal(labels[hard], full.argmax(1)[hard] + 1)
    labels = class_labels(Maps("centre", centre.grid, 32), predicted, hard)
    assert torch.equal(labels, torch.where(hard, predicted[:, None, None] + 1, 0))
    soft, hard = foreground(centre, predicted, single_object=False, threshold=0.5)
    assert hard[:, 16, 16].all() and not hard[:, 0, 0].any()


def test_gradcam_is_the_gradient_weighted_feature_map(vit_lens, vit_images, resnet_lens, resnet_images):
    """Grad-CAM equals a literal single-image computation: the last block rerun from a leaf copy of its input (ViT)
    or the pool from a leaf copy of the trunk's map (ResNet), the cosine's gradient averaged over positions weights
    the features, ReLU."""
    import torch.nn.functional as F

    from cliplens.apps.segmentation import gradcam
    from cliplens.models.spec import activation

    directions = torch.randn(2, vit_lens.spec.output_dim, generator=torch.Generator().manual_seed(2),
                             dtype=torch.float64)
    cams = gradcam(vit_lens, vit_images, directions, torch.tensor([[0, 1]] * 5))
    assert cams.shape == (5, 2, vit_lens.spec.tokens - 1) and (cams >= 0).all() and cams.sum() > 0
    states = list(vit_lens.decomposer.layers(vit_images[:1]))
    spec, block = vit_lens.spec, vit_lens.spec.blocks[-1]
    x = states[-1].residual.detach().clone().requires_grad_(True)
    n, heads, dh = x.shape[1], spec.heads, spec.head_dim
    q, k, v = F.linear(block.ln1(x), block.qkv_weight, block.qkv_bias).view(1, n, 3, heads, dh).permute(2, 0, 3, 1, 4)
    middle = x + F.linear(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, n, -1),
                          block.out_weight, block.out_bias)
    out = middle + F.linear(activation(block.activation, F.linear(block.ln2(middle), block.fc_weight, block.fc_bias)),
                            block.proj_weight, block.proj_bias)
    z = spec.ln_post(out[:, 0]) @ spec.proj  # one image, class 1
    (F.normalize(z, dim=-1) @ directions[1]).sum().backward()
    literal = (x[0, 1:] * x.grad[0, 1:].mean(0)).sum(-1).relu()
    assert torch.allclose(cams[0, 1], literal.detach(), atol=1e-10, rtol=0)
    cams = gradcam(resnet_lens, resnet_images, directions[:, : resnet_lens.spec.output_dim], torch.tensor([[1]] * 5))
    feature_map = resnet_lens.spec.trunk(resnet_images[:1]).detach().requires_grad_(True)
    z = resnet_lens.decomposer.pool(feature_map).embedding
    (F.normalize(z, dim=-1) @ directions[1, : resnet_lens.spec.output_dim]).sum().backward()
    literal = (feature_map[0] * feature_map.grad[0].mean((1, 2))[:, None, None]).sum(0).relu().flatten()
    assert torch.allclose(cams[0, 0], literal.detach(), atol=1e-10, rtol=0)


def test_maskclip_dense_features_are_the_pools_value_and_output_projections(resnet_lens, resnet_images):
    from cliplens.apps.segmentation import maskclip_scores

    spec = resnet_lens.spec
    directions = torch.nn.functional.normalize(torch.randn(3, spec.output_dim, dtype=torch.float64,
                                                           generator=torch.Generator().manual_seed(3)), dim=-1)
    scores = maskclip_scores(resnet_lens, resnet_lens.decomposer.trace(resnet_images), directions)
    feature_map = spec.trunk(resnet_images)  # [B, C, h, w]
    b, c = 2, 1
    h, w = divmod(3, feature_map.shape[-1])
    dense = spec.c_weight @ (spec.v_weight @ feature_map[b, :, h, w] + spec.v_bias) + spec.c_bias
    assert scores.shape == (5, 3, spec.tokens - 1)
    assert scores[b, c, 3].item() == pytest.approx(float(dense @ directions[c] / dense.norm()), abs=1e-10)


# the study and the command --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_vit():
    import cliplens

    return cliplens.load("toy:vit")


def test_the_centre_prior_scores_as_a_literal_loop_over_the_masks(toy_vit):
    from cliplens.apps.segmentation import centre_prior
    from cliplens.data.segmentation import segmentation_source
    from cliplens.workflows.segmentation import segmentation_study

    result = segmentation_study(toy_vit, "shapes:segmentation:5:2", ["centre", "heads"], batch_size=2, examples=3)
    centre = {row["lens"]: row for row in result.rows}["centre"]
    source = segmentation_source("shapes:segmentation:5:2")
    prior = centre_prior(1, 96, torch.float64)[0, 0]
    soft = (prior - prior.min()) / (prior.max() - prior.min())
    hard = (soft > soft.mean()).numpy()
    correct, intersection, union = 0, np.zeros(2), np.zeros(2)
    for i in range(5):
        truth = source.mask(i) > 0
        correct += (hard == truth).sum()
        for c, (p, t) in enumerate(((~hard, ~truth), (hard, truth))):
            intersection[c] += (p & t).sum()
            union[c] += (p | t).sum()
    assert centre["images"] == 5 and centre["pixel_accuracy"] == pytest.approx(correct / (5 * 96 * 96), abs=1e-12)
    assert centre["miou"] == pytest.approx((intersection / union).mean(), abs=1e-12)
    assert len(result.examples) == 3 and set(result.examples[0].soft) == {"centre", "heads"}


def test_segment_command_writes_metrics_overlays_and_readable_masks_and_refuses_in_one_line(tmp_path):
    import csv
    import io
    import json
    import zipfile

    from click.testing import CliRunner
    from PIL import Image

    from cliplens.cli import cli, main
    from cliplens.data.segmentation import segmentation_source

    out = tmp_path / "seg"
    lenses = ["heads", "second-order", "attention", "rollout", "gradcam", "centre"]
    result = CliRunner().invoke(cli, ["segment", "--model", "toy:vit", "--data-path", "shapes:segmentation:4",
                                      *(f"--lens={name}" for name in lenses), "--heads", "L3H*,L2H1",
                                      "--mlp-layer", "2", "--top-neurons", "8", "--examples", "2", "--save-masks",
                                      "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    with open(out / "metrics.csv") as table:
        rows = list(csv.DictReader(table))
    assert [row["lens"] for row in rows] == lenses
    assert {"pixel_accuracy", "miou", "map", "class_miou", "images"} <= set(rows[0])
    assert all(row["images"] == "4" and 0 <= float(row["miou"]) <= 1 for row in rows)
    assert (out / "overlays.png").stat().st_size > 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["heads"] == ["L2H1", "L3H0", "L3H1", "L3H2", "L3H3"] and metadata["mlp_layers"] == [2]
    source = segmentation_source("shapes:segmentation:4")
    with zipfile.ZipFile(out / "masks.zip") as archive:
        assert archive.read("classes.txt").decode().split() == source.classnames
        assert sorted(archive.namelist()) == sorted(["classes.txt"] + [f"{name}/{i:06d}.png" for name in lenses
                                                                        for i in range(4)])
        with Image.open(io.BytesIO(archive.read("heads/000001.png"))) as picture:
            assert picture.mode == "P" and picture.size == (96, 96)
            labels = np.asarray(picture)
    assert labels.max() <= len(source.classnames) and (labels > 0).any() and (labels == 0).any()
    result = CliRunner().invoke(cli, ["segment", "--model", "toy:rn", "--data-path", "shapes:segmentation:2",
                                      "--lens", "pairs", "--top-pairs", "50", "--lens", "maskclip", "--lens",
                                      "gradcam", "--examples", "0", "--output-dir", str(tmp_path / "rn")])
    assert result.exit_code == 0, result.output
    assert "maskclip" in result.output and not (tmp_path / "rn" / "masks.zip").exists()
    for args in (["--model", "toy:rn", "--lens", "rollout"], ["--data-path", "shapes:test:4", "--lens", "centre"],
                 ["--lens", "heads", "--heads", "L9H*"], ["--lens", "second-order", "--mlp-layer", "3"]):
        with pytest.raises(SystemExit) as exit_:
            main(["segment", *args, "--output-dir", str(tmp_path / "refused")])
        assert exit_.value.code == 2
    assert not (tmp_path / "refused").exists()


def _gtsegs(path, images):
    """A file in gtsegs_ijcv.mat's layout: MATLAB v7.3 object references, arrays stored column-major."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as file:
        refs = file.create_group("#refs#")
        value = file.create_group("value")
        img = value.create_dataset("img", (len(images), 1), dtype=h5py.ref_dtype)
        gt = value.create_dataset("gt", (len(images), 1), dtype=h5py.ref_dtype)
        for i, (pixels, truth) in enumerate(images):
            img[i, 0] = refs.create_dataset(f"img{i}", data=pixels.transpose(2, 1, 0)).ref
            array = refs.create_dataset(f"gt{i}", data=truth.transpose(1, 0))
            cell = refs.create_dataset(f"cell{i}", (1, 1), dtype=h5py.ref_dtype)
            cell[0, 0] = array.ref
            gt[i, 0] = cell.ref


def test_imagenet_segmentation_reader_round_trips_the_matlab_layout(tmp_path):
    from cliplens.data.segmentation import segmentation_source

    generator = np.random.default_rng(0)
    written = []
    for height, width in ((10, 14), (12, 9)):
        pixels = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        truth = np.zeros((height, width), dtype=np.uint8)
        truth[2:5, 1:7] = 1
        written.append((pixels, truth))
    _gtsegs(tmp_path / "gtsegs_ijcv.mat", written)
    source = segmentation_source(f"imagenet-seg:{tmp_path / 'gtsegs_ijcv.mat'}")
    assert len(source) == 2 and source.single_object and source.classnames is None
    for i, (pixels, truth) in enumerate(written):
        assert np.array_equal(np.asarray(source[i][0]), pixels)
        assert np.array_equal(source.mask(i), truth)
    (tmp_path / "other.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    with pytest.raises(CliplensError, match="cannot open .* as HDF5"):
        segmentation_source(f"imagenet-seg:{tmp_path / 'other.mat'}")


def test_pascal_context_reader_ignores_background_and_labels_every_pixel(tmp_path):
    from PIL import Image

    from cliplens.apps.segmentation import Maps, class_labels
    from cliplens.data.segmentation import IGNORE, PASCAL_CONTEXT_59, segmentation_source

    voc = tmp_path / "VOCdevkit" / "VOC2010"
    for folder in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (voc / folder).mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n2008_000001\n")
    for i, name in enumerate(("2008_000002", "2008_000001")):
        labels = np.zeros((6, 8), dtype=np.uint8)
        labels[1:4, 2:6] = 37 + i  # person, plate
        Image.new("RGB", (8, 6), (i, 0, 0)).save(voc / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(labels, "L").save(voc / "SegmentationClassContext" / f"{name}.png")
    source = segmentation_source(f"pascal-context:{tmp_path}")
    assert len(source) == 2 and not source.background and source.classnames == list(PASCAL_CONTEXT_59)
    assert source.classnames[36] == "person" and source.describe(0).endswith("2008_000002.jpg")
    mask = source.mask(1)
    assert (mask[1:4, 2:6] == 38).all() and (mask[0] == IGNORE).all()
    grid = torch.zeros(1, 3, 2, 2)
    grid[0, 2] = 1.0
    assert (class_labels(Maps("heads", grid, 4), torch.tensor([0]), None) == 3).all()
    (voc / "SegmentationClassContext" / "2008_000001.png").unlink()
    with pytest.raises(CliplensError, match="have no label PNG"):
        segmentation_source(f"pascal-context:{tmp_path}")
    with pytest.raises(CliplensError, match="holds no VOC2010/JPEGImages"):
        segmentation_source(f"pascal-context:{tmp_path / 'VOCdevkit' / 'VOC2010' / 'JPEGImages'}")


def test_heads_lens_beats_raw_attention_and_the_centre_prior_on_the_toy_vit(toy_vit):
    """Seed 3, 32 images. Margins from a bootstrap over 256 images of that seed (resampling 32 images): heads −
    attention binary mIoU 0.059 ± 0.006, heads − centre 0.216 ± 0.010; the asserted 0.03 and 0.15 sit 5 and 7 standard
    deviations below, so the result is the lens, not the draw of images. Settings (last 3 layers, mean threshold)
    were chosen on seed 1."""
    from cliplens.workflows.segmentation import segmentation_study

    result = segmentation_study(toy_vit, "shapes:segmentation:32:3", ["heads", "attention", "centre"], last_layers=3,
                                examples=0)
    miou = {row["lens"]: row["miou"] for row in result.rows}
    assert miou["heads"] > miou["attention"] + 0.03
    assert miou["heads"] > miou["centre"] + 0.15

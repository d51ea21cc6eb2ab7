"""Folder data: labels from class folders, deterministic order, and unreadable files skipped and reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cliplens import CliplensError
from cliplens.data import ImageFolder, LoadReport, batches


def write_image(path, seed: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def tree(tmp_path):
    """Two classes, five good images, and three files that must be skipped: garbage, a truncated PNG, text."""
    for i, name in enumerate(["cat/b.png", "cat/a.png", "dog/c.jpg", "dog/d.png", "dog/sub/e.png"]):
        write_image(tmp_path / name, i)
    (tmp_path / "cat" / "garbage.jpg").write_bytes(b"\x00not an image at all")
    whole = (tmp_path / "dog" / "d.png").read_bytes()
    (tmp_path / "dog" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "dog" / "notes.txt").write_text("labels are folder names\n")
    return tmp_path


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255


def test_class_folders_give_labels_in_sorted_order(tree):
    folder = ImageFolder(tree)
    assert folder.classnames == ["cat", "dog"]
    names = [p.relative_to(tree).as_posix() for p in folder.paths]
    assert names == sorted(names)
    assert [folder.labels[names.index(n)] for n in ("cat/a.png", "dog/sub/e.png")] == [0, 1]


def test_unreadable_files_are_skipped_counted_and_reported(tree):
    report = LoadReport()
    seen = [b for b in batches(ImageFolder(tree), to_tensor, batch_size=3, report=report)]
    assert report.total == 8 and report.loaded == 5 and len(report.skipped) == 3
    assert {s.rsplit("/", 1)[-1] for s in report.skipped} == {"garbage.jpg", "truncated.png", "notes.txt"}
    assert "skipped 3 unreadable" in report.summary()
    indices = torch.cat([b.indices for b in seen])
    assert torch.equal(indices, indices.sort().values)  # source order is kept


def test_flat_folder_and_file_list(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", i)
    assert ImageFolder(tmp_path).classnames is None
    listing = tmp_path / "list.txt"
    listing.write_text("img2.png\n\nimg0.png\n")
    folder = ImageFolder(listing)
    assert [p.name for p in folder.paths] == ["img2.png", "img0.png"] and folder.labels is None


def test_fingerprint_tracks_content_changes(tree):
    before = ImageFolder(tree).fingerprint
    assert ImageFolder(tree).fingerprint == before
    write_image(tree / "cat" / "a.png", 99, size=40)
    assert ImageFolder(tree).fingerprint != before


def test_collect_over_a_folder_uses_only_readable_images(tree, vit_lens):
    def preprocess(image):
        return to_tensor(image).double()

    vit_lens_preprocess = vit_lens.preprocess
    vit_lens.preprocess = preprocess
    try:
        stats = vit_lens.collect(str(tree), batch_size=2)
    finally:
        vit_lens.preprocess = vit_lens_preprocess
    assert stats.count == 5 and stats.metadata["skipped"] == 3 and stats.metadata["data_size"] == 8


def test_missing_or_empty_sources_are_refused(tmp_path):
    with pytest.raises(CliplensError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliplensError, match="no files"):
        ImageFolder(tmp_path / "empty")

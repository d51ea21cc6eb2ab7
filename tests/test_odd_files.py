"""One odd file never aborts a pass: it is read correctly, or skipped, counted and named with the reason.

Every case writes the odd file into a temporary folder: names that are not UTF-8, listed paths that are missing,
decompression bombs, 16-bit and floating-point images, file lists with undecodable bytes, hidden folders.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from cliplens.data import ImageFolder, LoadReport, batches
from test_data import to_tensor, write_image

LATIN1 = b"caf\xe9.png"  # "café.png" in Latin-1: not valid UTF-8


def write_bytes_named(folder, name: bytes, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with open(os.path.join(os.fsencode(folder), name), "wb") as stream:
        Image.fromarray(pixels).save(stream, format="PNG")


def run_pass(folder: ImageFolder) -> LoadReport:
    report = LoadReport()
    for _ in batches(folder, to_tensor, batch_size=2, report=report):
        pass
    return report


def test_names_that_are_not_utf8_are_read_hashed_and_printable(tmp_path):
    write_image(tmp_path / "a.png", 0)
    write_bytes_named(tmp_path, LATIN1, 1)
    folder = ImageFolder(tmp_path)
    report = run_pass(folder)
    assert report.loaded == 2 and not report.skipped
    assert len(folder.fingerprint) == 16  # hashed from the name's bytes, not refused
    shown = folder.describe(1)
    assert shown.endswith("caf\\xe9.png") and shown.encode("utf-8")
    (tmp_path / "b.png").write_bytes(b"not an image")  # a skipped odd name is reported in printable form too
    os.rename(os.path.join(os.fsencode(tmp_path), LATIN1), os.path.join(os.fsencode(tmp_path), b"b\xff.png"))
    report = run_pass(ImageFolder(tmp_path))
    assert report.summary().encode("utf-8")


def test_class_folders_with_odd_names_get_printable_class_names(tmp_path):
    write_image(tmp_path / "cat" / "a.png", 0)
    os.makedirs(os.path.join(os.fsencode(tmp_path), b"d\xf6g"))
    write_bytes_named(os.path.join(os.fsencode(tmp_path), b"d\xf6g"), b"b.png", 1)
    folder = ImageFolder(tmp_path)
    assert folder.classnames == ["cat", "d\\xf6g"] and folder.labels == [0, 1]
    assert run_pass(folder).loaded == 2


def test_a_listed_path_that_is_missing_is_skipped_and_named(tmp_path):
    write_image(tmp_path / "img0.png", 0)
    listing = tmp_path / "list.txt"
    listing.write_text("img0.png\nnowhere.png\nimg0.png\n")
    folder = ImageFolder(listing)
    report = run_pass(folder)
    assert (report.total, report.loaded) == (3, 2)
    assert report.skipped == [str(tmp_path / "nowhere.png")] and report.reasons == ["missing"]
    assert "nowhere.png (missing)" in report.summary()
    assert len(folder.fingerprint) == 16


def test_a_file_removed_after_listing_is_skipped_and_the_fingerprint_still_works(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"img{i}.png", i)
    folder = ImageFolder(tmp_path)
    before = folder.fingerprint
    (tmp_path / "img1.png").unlink()
    report = run_pass(folder)
    assert report.loaded == 2 and report.reasons == ["missing"]
    assert folder.fingerprint == before  # sizes were taken when the source was listed


def test_file_lists_with_undecodable_bytes_name_the_files_exactly(tmp_path):
    write_bytes_named(tmp_path, LATIN1, 0)
    listing = tmp_path / "list.txt"
    listing.write_bytes(LATIN1 + b"\n\xff\xfe\xfd.png\n")
    report = run_pass(ImageFolder(listing))
    assert (report.total, report.loaded) == (2, 1)
    assert report.reasons == ["missing"] and report.skipped[0].endswith("\\xff\\xfe\\xfd.png")


def test_decompression_bombs_are_skipped(tmp_path, monkeypatch):
    write_image(tmp_path / "small.png", 0, size=8)
    write_image(tmp_path / "bomb.png", 1, size=64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64² is more than twice this: PIL raises, not warns
    report = run_pass(ImageFolder(tmp_path))
    assert report.loaded == 1 and report.skipped[0].endswith("bomb.png")
    assert "decompression bomb" in report.reasons[0]


def test_sixteen_bit_greys_are_scaled_not_clipped(tmp_path):
    grey = np.full((8, 8), 30000, dtype=np.uint16)  # 30000 / 65535 of full scale
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    image, _ = ImageFolder(tmp_path).read(0)
    assert image.mode == "RGB" and np.asarray(image).max() == np.asarray(image).min() == round(30000 * 255 / 65535)


def test_images_with_no_fixed_pixel_range_are_skipped_with_a_reason(tmp_path):
    write_image(tmp_path / "good.png", 0)
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), "F").save(tmp_path / "float.tif")
    report = run_pass(ImageFolder(tmp_path))
    assert report.loaded == 1 and "floating-point" in report.reasons[0]


def test_hidden_folders_and_files_are_not_data(tmp_path):
    for name in ["cat/a.png", "dog/b.png", ".ipynb_checkpoints/c.png", ".git/objects/d.png", "cat/.e.png"]:
        write_image(tmp_path / name, 0)
    folder = ImageFolder(tmp_path)
    assert folder.classnames == ["cat", "dog"] and len(folder) == 2


def test_collect_over_a_folder_of_odd_files_finishes_and_reports_them(tmp_path, vit_lens, monkeypatch):
    for i, name in enumerate(["cat/a.png", "cat/b.png", "dog/c.png"]):
        write_image(tmp_path / name, i)
    write_bytes_named(tmp_path / "dog", LATIN1, 3)
    Image.fromarray(np.full((32, 32), 60000, dtype=np.uint16)).save(tmp_path / "dog" / "deep.png")
    write_image(tmp_path / "dog" / "bomb.png", 4, size=128)
    write_image(tmp_path / ".hidden" / "x.png", 5)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    monkeypatch.setattr(vit_lens, "preprocess", lambda image: to_tensor(image.resize((32, 32))).double())
    stats = vit_lens.collect(str(tmp_path), batch_size=2)
    assert stats.count == 5 and stats.metadata["skipped"] == 1 and stats.metadata["data_size"] == 6
    assert "bomb.png (too many pixels" in stats.report.summary()
    assert torch.isfinite(stats.mean).all()

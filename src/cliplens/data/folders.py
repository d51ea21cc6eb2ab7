"""Images on disk: an ImageNet-style tree of class folders, a flat folder, or a text file listing paths.

Order is deterministic (sorted relative paths), so statistics, top-k indices and data fingerprints are reproducible.
Hidden files and folders (names starting with ".") are not data: they are never listed, so `.git` or
`.ipynb_checkpoints` never become classes.

One file can never abort a pass. What can go wrong per file is found per file: its size is taken when the source is
listed (a listed path that is missing gets size -1, so the fingerprint never fails later), and everything about its
pixels when it is read, where any failure makes `read` raise `Unreadable` with the reason and `__getitem__` return
None; the loader counts, names and explains those files in its report. File names are bytes on POSIX: names that
are not UTF-8 are kept exactly (surrogate escapes) for opening and hashing, and shown escaped (`describe`).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CliplensError
from ..io.paths import is_dir, is_file

MISSING, NOT_A_FILE = -1, -2  # sizes that mark a listed path the pass must skip
SIXTEEN_BIT = 65535


class Unreadable(Exception):
    """A file that cannot be used as an image; the message says why, in a few words."""


def printable(name: str) -> str:
    """`name` safe to print and to write as UTF-8: undecodable bytes as \\xNN, control characters escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class ImageFolder:
    """A sequence of (PIL image or None, label) read lazily from disk."""

    def __init__(self, source: str | os.PathLike | list[str | os.PathLike]):
        self.root, listing = _list_source(source)
        if not listing:
            raise CliplensError(f"no files found in {source}; pass a folder of images or a text file listing them")
        self.paths = [path for path, _ in listing]
        self.sizes = [size for _, size in listing]
        self.classnames: list[str] | None = _class_folders(self.root, self.paths)
        index = {name: i for i, name in enumerate(self.classnames or [])}
        self.labels = [index[p.relative_to(self.root).parts[0]] for p in self.paths] if self.classnames else None
        if self.classnames:
            self.classnames = [printable(name) for name in self.classnames]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> tuple[Image.Image, int]:
        """(8-bit RGB image, label); raises Unreadable for a file that cannot be used, whatever the cause."""
        label = self.labels[i] if self.labels else -1
        if self.sizes[i] in (MISSING, NOT_A_FILE):
            raise Unreadable("missing" if self.sizes[i] == MISSING else "not a regular file")
        return open_image(self.paths[i]), label

    def __getitem__(self, i: int) -> tuple[Image.Image | None, int]:
        try:
            return self.read(i)
        except Unreadable:
            return None, self.labels[i] if self.labels else -1

    def describe(self, i: int) -> str:
        return printable(str(self.paths[i]))

    @property
    def fingerprint(self) -> str:
        """Hash of the ordered relative paths (as bytes) and file sizes: changes when files are added, removed or
        replaced. Equal to the earlier str-based hash for UTF-8 names."""
        digest = hashlib.sha256()
        for path, size in zip(self.paths, self.sizes):
            name = path.relative_to(self.root).as_posix() if self.root else str(path)
            digest.update(os.fsencode(name) + b"\0" + str(size).encode() + b"\n")
        return digest.hexdigest()[:16]


def open_image(path: str | os.PathLike) -> Image.Image:
    """The file as an 8-bit RGB image; raises Unreadable, whatever the cause, with the reason in a few words."""
    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except Unreadable:
        raise
    except Image.DecompressionBombError:
        raise Unreadable("too many pixels (decompression bomb)") from None
    except Exception as exc:  # deliberate: PIL's decoders raise many types on damaged or crafted files
        raise Unreadable(_reason(exc)) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB. 16-bit greys (modes I;16*, and I within 0..65535) are scaled to 0..255; PIL's own convert clips
    them, which turns almost every 16-bit image white. Pixels with no fixed range are refused."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > SIXTEEN_BIT):
            raise Unreadable(f"{image.mode} pixels outside the 16-bit range")
        grey = np.round(values.astype(np.float64) * (255 / SIXTEEN_BIT)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "F":
        raise Unreadable("floating-point pixels have no fixed range; save it with 8 or 16 bits per channel")
    return image.convert("RGB")


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image format PIL reads"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return printable(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:120]


def _class_folders(root: Path | None, paths: list[Path]) -> list[str] | None:
    """Sorted first-level folder names when every file sits inside one (ImageNet layout), else None."""
    if root is None:
        return None
    parts = [p.relative_to(root).parts for p in paths]
    if any(len(part) < 2 for part in parts):
        return None
    return sorted({part[0] for part in parts})


def _size(path: Path) -> int:
    """Size in bytes; MISSING or NOT_A_FILE (a folder, a pipe that would block the reader) mark paths to skip."""
    try:
        info = path.stat()
    except (OSError, ValueError):  # missing, not stat-able, or a name the OS cannot take
        return MISSING
    return info.st_size if stat.S_ISREG(info.st_mode) else NOT_A_FILE


def _list_source(source: str | os.PathLike | list) -> tuple[Path | None, list[tuple[Path, int]]]:
    """(root or None, [(path, size in bytes or MISSING)]) in the source's order."""
    if isinstance(source, (list, tuple)):
        return None, [(Path(p), _size(Path(p))) for p in source]
    path = Path(source).expanduser()
    if is_file(path):
        try:
            listed = path.read_bytes()
        except OSError as exc:
            raise CliplensError(f"cannot read the file list {printable(str(path))} ({exc.strerror})") from exc
        lines = [os.fsdecode(line.strip()) for line in listed.splitlines()]
        return None, [(path.parent / line, _size(path.parent / line)) for line in lines if line]
    if not is_dir(path):
        raise CliplensError(f"{printable(str(path))} does not exist; pass a folder of images or a text file listing "
                            "image paths")
    files = list(_walk(path))
    return path, sorted(files, key=lambda item: os.fsencode(item[0].relative_to(path).as_posix()))


def _walk(folder: Path):
    """(file, size) below `folder`, skipping hidden entries and folders that cannot be listed."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):  # as before: linked folders are not entered (no cycles)
                yield from _walk(Path(entry.path))
            elif entry.is_file():
                yield Path(entry.path), entry.stat().st_size
        except OSError:
            continue

"""Images on disk: an ImageNet-style tree of class folders, a flat folder, or a text file listing paths.

Order is deterministic (sorted relative paths), so statistics, top-k indices and data fingerprints are reproducible.
Unreadable files are not an error: `__getitem__` returns None for them and the loader counts and reports them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import CliplensError


class ImageFolder:
    """A sequence of (PIL image or None, label) read lazily from disk."""

    def __init__(self, source: str | os.PathLike | list[str | os.PathLike]):
        self.root, self.paths = _list_source(source)
        if not self.paths:
            raise CliplensError(f"no files found in {source}; pass a folder of images or a text file listing them")
        self.classnames: list[str] | None = _class_folders(self.root, self.paths)
        index = {name: i for i, name in enumerate(self.classnames or [])}
        self.labels = [index[p.relative_to(self.root).parts[0]] for p in self.paths] if self.classnames else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Image.Image | None, int]:
        label = self.labels[i] if self.labels else -1
        try:
            with Image.open(self.paths[i]) as image:
                return image.convert("RGB"), label
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None, label

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    @property
    def fingerprint(self) -> str:
        """Hash of the ordered relative paths and file sizes: changes when files are added, removed or replaced."""
        digest = hashlib.sha256()
        for path in self.paths:
            name = path.relative_to(self.root).as_posix() if self.root else str(path)
            digest.update(f"{name}\0{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def _class_folders(root: Path | None, paths: list[Path]) -> list[str] | None:
    """Sorted first-level folder names when every file sits inside one (ImageNet layout), else None."""
    if root is None:
        return None
    parts = [p.relative_to(root).parts for p in paths]
    if any(len(part) < 2 for part in parts):
        return None
    return sorted({part[0] for part in parts})


def _list_source(source: str | os.PathLike | list) -> tuple[Path | None, list[Path]]:
    if isinstance(source, (list, tuple)):
        return None, [Path(p) for p in source]
    path = Path(source).expanduser()
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        return None, [(path.parent / line) for line in lines if line]
    if not path.is_dir():
        raise CliplensError(f"{path} does not exist; pass a folder of images or a text file listing image paths")
    files = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.parts[-1:])]
    return path, sorted(files, key=lambda p: p.relative_to(path).as_posix())

"""Writes a crash cannot leave half done, and that never delete what cliplens did not write.

A file is written under a hidden staging name beside its target and renamed over it (`os.replace` is atomic on one
file system), so readers see the old file or the new one, never a mix.

A folder (an artifact, a `decompose` output) is written whole into a staging folder beside its target, with a
`metadata.json` that carries the caller's record plus a stamp: the package version, the time, and the SHA-256 of
every file. The stamp is how a later write recognises the folder as its own: only an absent target, an empty folder,
or a stamped folder holding nothing but the files its stamp lists is ever replaced; anything else is refused. The
swap renames the old folder aside, renames the new one in, then deletes the old one, so at every instant one of
them is complete on disk. A crash between the two renames leaves the old folder under its aside name; the next write
to the same target renames it back first, and deletes every stale staging entry of that target (recognisable by
name), so no litter survives a later run. One writer per target at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import CliplensError
from ..version import __version__

METADATA = "metadata.json"
LEGACY_FILES = ("tensors.safetensors",)  # artifacts stamped before folders listed their files held just these
CHUNK = 1 << 20
NAME_KEPT, SUFFIX_KEPT = 160, 16  # a staging name stays under the usual 255-byte limit for any target name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# staging names ------------------------------------------------------------------------------------------------------
def _staging(path: Path, role: str) -> Path:
    """A fresh hidden name beside `path`: `.<name>.cliplens-<role>-<8 hex><suffix>` (the suffix keeps writers that
    pick a format by extension, such as matplotlib and numpy, writing the right one)."""
    head, suffix = _name_parts(path)
    return path.with_name(f"{head}{role}-{secrets.token_hex(4)}{suffix}")


def _name_parts(path: Path) -> tuple[str, str]:
    """Staging names start `.<name>.cliplens-` and end with the suffix, both cut so they stay within name limits."""
    return f".{path.name[:NAME_KEPT]}.cliplens-", path.suffix if len(path.suffix) <= SUFFIX_KEPT else ""


def _stale(path: Path) -> dict[str, list[Path]]:
    """This target's leftover staging entries by role ("new": unfinished writes, "old": folders set aside)."""
    head, suffix = _name_parts(path)
    pattern = re.compile(re.escape(head) + r"(new|old)-[0-9a-f]{8}" + re.escape(suffix))
    found: dict[str, list[Path]] = {"new": [], "old": []}
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return found
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match:
            found[match.group(1)].append(path.parent / entry)
    return found


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _recover(path: Path) -> None:
    """Undo what a crashed write left: restore a folder set aside if its target is missing, drop the rest."""
    stale = _stale(path)
    if stale["old"] and not os.path.lexists(path):
        newest = max(stale["old"], key=lambda entry: entry.stat().st_mtime)
        newest.rename(path)
        stale["old"].remove(newest)
    for entry in stale["new"] + stale["old"]:
        _remove(entry)


def interrupted(path: str | os.PathLike) -> Path | None:
    """The previous version a crashed folder write left aside, when the target itself is missing."""
    path = Path(path)
    stale = _stale(path)["old"]
    return stale[0] if stale and not os.path.lexists(path) else None


# files --------------------------------------------------------------------------------------------------------------
@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A staging path beside `path` to write inside the block; on success it replaces `path` in one rename."""
    path = Path(path)
    if path.is_dir():
        raise CliplensError(f"{path} is a folder; pass a file name to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliplensError(f"cannot write {path} ({exc.strerror or exc}); check the folder") from exc
    for entry in _stale(path)["new"]:
        _remove(entry)
    staging = _staging(path, "new")
    try:
        yield staging
        os.replace(staging, path)
    except OSError as exc:
        raise CliplensError(f"cannot write {path} ({exc.strerror or exc}); check the folder and free space") from exc
    finally:
        if os.path.lexists(staging):
            staging.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with replacing(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)


# folders ------------------------------------------------------------------------------------------------------------
def stamped_record(folder: Path) -> dict[str, Any] | None:
    """The metadata.json of a folder written by `write_folder` (or an older stamped artifact), else None."""
    try:
        record = json.loads((folder / METADATA).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    stamped = isinstance(record, dict) and all(isinstance(record.get(k), str) for k in ("package_version", "created"))
    return record if stamped else None


def _foreign(path: Path) -> str | None:
    """Why `path` must not be replaced, or None when it is absent, an empty folder, or a folder we wrote."""
    if path.is_symlink():
        return "it is a symbolic link"
    if not path.exists():
        return None
    if not path.is_dir():
        return "it is a file"
    entries = os.listdir(path)
    if not entries:
        return None
    record = stamped_record(path) or {}
    files = record.get("files")
    listed = {METADATA, *(files if isinstance(files, dict) else LEGACY_FILES)} if record else set()
    for entry in sorted(entries):
        if entry not in listed or (path / entry).is_symlink() or not (path / entry).is_file():
            return f"it holds {entry!r}, which cliplens did not write there"
    return None


def write_folder(path: str | os.PathLike, writers: Mapping[str, Callable[[Path], Any]],
                 record: Mapping[str, Any]) -> Path:
    """Write a folder as one unit: `writers[name](file)` writes each file, then metadata.json stamps `record`.

    Refuses (one line, deleting nothing) a target that is a file, a link, or a folder holding anything it did not
    write; `.`-like names are refused outright.
    """
    given = Path(path)
    if given.name in ("", ".", ".."):
        raise CliplensError(f"cannot write to {str(path)!r}: name a new folder for the output, e.g. results/stats")
    path = Path(os.path.abspath(given))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _recover(path)
        reason = _foreign(path)
    except OSError as exc:
        raise CliplensError(f"cannot write {given} ({exc.strerror or exc}); check the folder") from exc
    if reason is not None:
        raise CliplensError(f"refusing to replace {given}: {reason}; cliplens only replaces its own outputs, so "
                            "choose another path or move that one away")
    staging = _staging(path, "new")
    try:
        staging.mkdir()
        files = {}
        for name, write in writers.items():
            write(staging / name)
            files[name] = sha256_file(staging / name)
        stamp = {"package_version": __version__, "created": datetime.now(timezone.utc).isoformat(),
                 "files": files}
        (staging / METADATA).write_text(json.dumps({**record, **stamp}, indent=2, sort_keys=True) + "\n")
        _swap(staging, path)
    except OSError as exc:
        raise CliplensError(f"cannot write {given} ({exc.strerror or exc}); check the folder and free space") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return given


def _swap(staging: Path, path: Path) -> None:
    """Move `staging` to `path`; an existing (checked) folder goes aside first and is deleted last."""
    if not os.path.lexists(path):
        staging.rename(path)
        return
    aside = _staging(path, "old")
    path.rename(aside)
    staging.rename(path)  # a crash before this line leaves the old folder at `aside`, restored by the next write
    shutil.rmtree(aside, ignore_errors=True)

"""Self-describing artifacts: a folder holding `tensors.safetensors` and `metadata.json`.

Every artifact records what produced it (model fingerprint, data fingerprint, settings) plus the stamp that
`io.atomic.write_folder` adds: package version, creation time and the SHA-256 of the tensors file. Loading refuses,
each time with one line that says what to do:

- a metadata.json that is not a JSON object, lacks the stamp, or lacks a field its reader needs (`fields`);
- an artifact of another release line. Rule: an artifact is read when its major version equals the running
  package's and its major.minor is not newer (cliplens 0.3 reads 0.1-0.3 artifacts; a 0.4 or 1.x one is refused:
  its format may have grown, so upgrade cliplens or recompute it);
- a mismatch in any field the caller pins (`expect`), so statistics or text embeddings computed for one model can
  never silently be used with another;
- tensors whose SHA-256 is not the recorded one (a tensors file swapped in from another artifact, or damaged);
- tensors whose shapes disagree with what the metadata implies (`check_shapes`: a truncated label list, a cut
  tensor).

Saving replaces only a previous cliplens output and is atomic (see `io.atomic`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from ..errors import CliplensError
from ..version import __version__
from .atomic import METADATA, interrupted, sha256_file, stamped_record, write_folder
from .compat import require_match

TENSORS = "tensors.safetensors"
ANALYSIS = "analysis"  # the kind of a multi-part artifact: one `<part>.safetensors` per statistic, metadata in `parts`
STAMP = {"package_version": str, "created": str, "files": dict}
JSON_TYPES = {list: "a JSON list", type(None): "JSON null", str: "a JSON string", bool: "a JSON boolean",
              int: "a JSON number", float: "a JSON number"}


def save_artifact(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write tensors and metadata to the folder `path`, replacing a previous artifact there (and nothing else)."""
    return write_folder(path, {TENSORS: _tensor_writer(tensors)}, metadata)


def save_parts(path: str | os.PathLike, parts: Mapping[str, tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]],
               record: Mapping[str, Any], extra: Mapping[str, Callable[[Path], Any]] | None = None) -> Path:
    """Write several artifacts as one folder: part `name` keeps its tensors in `<name>.safetensors` and its metadata
    under `parts[name]` of the folder's record (`extra` writes further files). `load_artifact(..., part=name)` reads
    one back exactly as if it had been saved alone."""
    writers = {f"{name}.safetensors": _tensor_writer(tensors) for name, (tensors, _) in parts.items()}
    record = {**record, "parts": {name: dict(metadata) for name, (_, metadata) in parts.items()}}
    return write_folder(path, {**writers, **(extra or {})}, record)


def _tensor_writer(tensors: Mapping[str, torch.Tensor]) -> Callable[[Path], None]:
    """Tensors as safetensors stores them (contiguous, on the CPU, shared memory written as copies)."""
    state, storages = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().contiguous().cpu()
        storage = tensor.untyped_storage().data_ptr()
        state[name] = tensor.clone() if storage in storages else tensor
        storages.add(storage)
    return lambda file: save_file(state, file)


def under(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named `<prefix><name>`, by name: one holder's share of named tensors saved beside others'."""
    return {name.removeprefix(prefix): tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def is_analysis(path: Any) -> bool:
    """Whether `path` names a folder `cliplens analyze` wrote (cheap: reads its metadata.json only)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        return False
    return (stamped_record(Path(path)) or {}).get("kind") == ANALYSIS


def part_metadata(path: str | os.PathLike, part: str, hint: str) -> dict[str, Any]:
    """The metadata of one part of a multi-part artifact, stamped as the whole folder is; `hint` says how to get a
    missing part."""
    record = read_metadata(path)
    parts = record.get("parts")
    if not isinstance(parts, dict) or not isinstance(parts.get(part), dict):
        held = ", ".join(parts) if isinstance(parts, dict) and parts else "nothing"
        raise CliplensError(f"{path} holds no {part!r} (it holds {held}); {hint}")
    return {**parts[part], **{key: record[key] for key in STAMP}}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The stamped metadata record of an artifact from a release this package reads."""
    path = Path(path)
    file = path / METADATA
    if not file.is_file():
        aside = interrupted(path)
        hint = (f"an interrupted save left the previous version at {aside}: rename it back" if aside
                else "pass the folder a cliplens command wrote")
        raise CliplensError(f"{path} is not a cliplens artifact (no {METADATA}); {hint}")
    try:
        record = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CliplensError(f"{file} is not text (binary bytes at offset {exc.start}); recompute the artifact") from exc
    except json.JSONDecodeError as exc:
        raise CliplensError(f"{file} is corrupt ({exc.msg} at line {exc.lineno}); recompute the artifact") from exc
    except RecursionError as exc:
        raise CliplensError(f"{file} is nested too deeply to be a cliplens record; recompute the artifact") from exc
    except OSError as exc:
        raise CliplensError(f"{file} cannot be read ({exc.strerror}); check its permissions") from exc
    if not isinstance(record, dict):
        raise CliplensError(f"{file} holds {JSON_TYPES.get(type(record), 'JSON')}, not a cliplens record; "
                            "recompute the artifact")
    require_fields(path, record, STAMP)
    _check_release(path, record["package_version"])
    return record


def require_fields(path: Path, record: Mapping[str, Any], fields: Mapping[str, type | tuple[type, ...]]) -> None:
    """Refuse a record that lacks a field or holds the wrong JSON type there (a bool is not a number here)."""
    for key, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = record.get(key)
        if key not in record:
            raise CliplensError(f"{path / METADATA} lacks {key!r}; recompute the artifact")
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            wanted = " or ".join(kind.__name__ for kind in kinds)
            raise CliplensError(f"{path / METADATA} holds a {type(value).__name__} for {key!r} where a {wanted} "
                                "belongs; recompute the artifact")


def _release(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _check_release(path: Path, version: str) -> None:
    found, running = _release(version), _release(__version__)
    if found is None:
        raise CliplensError(f"{path / METADATA} has a malformed package_version {version!r}; recompute the artifact")
    if found[0] != running[0] or found > running:
        raise CliplensError(f"{path} was written by cliplens {version}; this cliplens {__version__} reads "
                            f"artifacts of {running[0]}.0 to {running[0]}.{running[1]}: upgrade cliplens or recompute it")


def load_artifact(
    path: str | os.PathLike, expect: Mapping[str, Any] | None = None,
    fields: Mapping[str, type | tuple[type, ...]] | None = None, *, part: str | None = None, hint: str = "",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact (or one `part` of a multi-part one); every key in `expect` must equal the stored metadata
    value, every key in `fields` must be present with that type, and the tensors must be the ones the metadata was
    written with."""
    path = Path(path)
    metadata = read_metadata(path) if part is None else part_metadata(path, part, hint)
    require_match(metadata, expect or {}, str(path))
    require_fields(path, metadata, fields or {})
    name = TENSORS if part is None else f"{part}.safetensors"
    file = path / name
    digest = metadata["files"].get(name)
    if not isinstance(digest, str):
        raise CliplensError(f"{path / METADATA} records no digest of {name}; recompute the artifact")
    try:
        found = sha256_file(file)
    except OSError as exc:
        raise CliplensError(f"{file} cannot be read ({exc.strerror}); recompute the artifact") from exc
    if found != digest:
        raise CliplensError(f"{file} is not the one its {METADATA} was written with (SHA-256 differs): it was "
                            "replaced or damaged; recompute the artifact")
    try:
        tensors = load_file(file)
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise CliplensError(f"{file} cannot be read ({exc}); recompute the artifact") from exc
    return tensors, metadata


def check_shapes(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 shapes: Mapping[str, Sequence[int | str]], **sizes: int) -> None:
    """Refuse tensors that are missing or disagree in shape with each other and with the metadata.

    A dimension is a number or a name; a name takes its value from `sizes` (e.g. the number of labels) or from its
    first appearance, and must then match everywhere it appears.
    """
    bound = dict(sizes)
    for name, dims in shapes.items():
        if name not in tensors:
            raise CliplensError(f"{Path(path) / TENSORS} lacks the tensor {name!r}; recompute the artifact")
        shape = tuple(tensors[name].shape)
        if len(shape) == len(dims):
            for dim, size in zip(dims, shape):
                if isinstance(dim, str):
                    bound.setdefault(dim, size)
        expected = tuple(bound.get(dim, dim) if isinstance(dim, str) else dim for dim in dims)
        if expected != shape:
            raise CliplensError(f"{path}: tensor {name!r} has shape {shape} where its metadata implies {expected}; "
                                "the artifact is truncated or mixed: recompute it")

"""The batch loop shared by every streaming pass: preprocess in workers, skip what cannot be read, keep order.

`stream` is the one loop every pass over a dataset uses: batches ready for a model, with their positions and labels,
a progress bar, and one error when nothing could be read. A pass can start at any batch boundary (`start`): the
batches after it have the same composition as in a pass from the beginning, which is what makes a resumed pass
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import CliplensError, require_positive_int
from ..progress import progress_bar
from ..io.artifacts import is_analysis, read_metadata
from .analyzed import AnalyzedData
from .cars import STANFORD_CARS_PREFIX, stanford_cars
from .folders import ImageFolder, Unreadable, printable
from .waterbirds import WATERBIRDS_PREFIX, waterbirds_source


@dataclass
class Batch:
    indices: torch.Tensor  # positions in the source, so top-k results can name their images
    images: torch.Tensor  # [B, 3, H, W], preprocessed
    labels: torch.Tensor  # [B], -1 where the source has no labels
    stop: int = 0  # the source position after this batch's block: where a pass resumed after it starts


@dataclass
class LoadReport:
    """What a pass read: counts, and every file it had to skip (`skipped`) with why (`reasons`, same order)."""

    total: int = 0
    loaded: int = 0
    skipped: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        line = f"{self.loaded} of {self.total} images used"
        if self.skipped:
            named = [f"{name} ({why})" for name, why in zip(self.skipped[:3], self.reasons[:3])]
            shown = ", ".join(named) + (" ..." if len(self.skipped) > 3 else "")
            line += f"; skipped {len(self.skipped)} unreadable file(s): {shown}"
        return line

    def extend(self, other: "LoadReport") -> None:
        """Add the counts and skipped files of a pass over the data that follows this one's."""
        self.total, self.loaded = self.total + other.total, self.loaded + other.loaded
        self.skipped.extend(other.skipped)
        self.reasons.extend(other.reasons)


SHAPES_PREFIX = "shapes:"
# Caps that turn an absurd size into one line before any work. A batch of 65536 images of 224 px is 39 GB of float32
# pixels, more than any accelerator holds; 1024 loader processes exceed the cores of any single machine.
MAX_BATCH_SIZE = 2**16
MAX_WORKERS = 1024


def shapes_source(spec: str) -> Any:
    """`shapes:<split>[:<n>[:<seed>]]`: the built-in shapes world, rendered on the fly (nothing to download)."""
    from ..shapes import ShapesDataset

    parts = spec.removeprefix(SHAPES_PREFIX).split(":")
    bad = CliplensError(f"bad shapes data spec {spec!r}; write shapes:<split>[:<n>[:<seed>]], e.g. shapes:test:512")
    if len(parts) > 3:
        raise bad
    split, n, seed = parts + ["test", "512", "0"][len(parts):]
    try:
        n, seed = int(n), int(seed)
    except ValueError:
        raise bad from None
    return ShapesDataset(n, seed=seed, split=split or "test")


def as_source(data: Any) -> Any:
    """A folder path, a file list or a path list become an ImageFolder; `shapes:...` the built-in world;
    `waterbirds:<folder>[:<split>]` Waterbirds by group; `stanford-cars:...` the Stanford Cars devkit layout
    (data/cars.py); an analysis folder its evaluation data, without the images (data/analyzed.py); datasets pass
    through unchanged."""
    if is_analysis(data):
        return analyzed_source(data)
    if isinstance(data, str) and data.startswith(SHAPES_PREFIX):
        return shapes_source(data)
    if isinstance(data, str) and data.startswith(WATERBIRDS_PREFIX):
        return waterbirds_source(data)
    if isinstance(data, str) and data.startswith(STANFORD_CARS_PREFIX):
        return stanford_cars(data)
    if isinstance(data, (str, os.PathLike)) and not os.fspath(data).strip():
        raise CliplensError("the data path is empty; pass a folder of images, a text file listing them, or "
                            "shapes:<split>[:<n>]")
    if isinstance(data, (str, os.PathLike)):
        return ImageFolder(data)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, os.PathLike)):
        return ImageFolder(list(data))
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise CliplensError("data must be a folder path, a list of image paths, or a dataset with __len__/__getitem__")
    return data


def recorded_data(data: Any, role: str = "fit") -> Any:
    """The data spec an analysis recorded for its `role` ("fit" or "evaluation"); any other data as it is."""
    if not is_analysis(data):
        return data
    record = read_metadata(data).get(role)
    return record.get("data") if isinstance(record, dict) else None


def _recorded(path: str | os.PathLike, role: str) -> dict[str, Any]:
    """What an analysis recorded of its `role` data ("fit" or "evaluation"): its spec and fingerprint, refused in one
    line where it recorded no spec that can be read again."""
    record = read_metadata(path).get(role)
    record = record if isinstance(record, dict) else {}
    if not isinstance(record.get("data"), str):
        raise CliplensError(f"{path} records no {role} data it can be read as (it was given as a Python object, or "
                            "none was given); pass --data-path and --stats separately")
    return record


def analyzed_source(path: str | os.PathLike) -> AnalyzedData:
    """The evaluation data an analysis recorded, rebuilt from its spec and checked against its fingerprint."""
    record = _recorded(path, "evaluation")
    return AnalyzedData(path, as_source(record["data"]), record.get("fingerprint"))


def analyzed_fit_source(path: str | os.PathLike) -> Any:
    """The fit data an analysis recorded, rebuilt from its spec with its images (the rankings it keeps are drawn from
    them) and checked against its fingerprint."""
    record = _recorded(path, "fit")
    source = as_source(record["data"])
    if fingerprint(source) != record.get("fingerprint"):
        raise CliplensError(f"the fit data of {path} changed since it was analysed (fingerprint differs); run "
                            "`cliplens analyze` again")
    return source


def fingerprint(source: Any) -> str:
    """The source's own fingerprint if it has one, else a hash of its type and length (weak: say so in metadata)."""
    own = getattr(source, "fingerprint", None)
    if isinstance(own, str):
        return own
    return "unverified-" + hashlib.sha256(f"{type(source).__qualname__}:{len(source)}".encode()).hexdigest()[:12]


def describe_item(source: Any, position: int) -> str:
    """Which image `position` of `source` is, in words: its file path, a shapes scene's attributes, else its number."""
    describe = getattr(source, "describe", None)
    return describe(position) if describe is not None else f"item {position}"


class _Preprocessed(Dataset):
    """(position, tensor or why it was skipped, label) per item; sources with `read` (ImageFolder) say why."""

    def __init__(self, source: Any, preprocess: Any, start: int = 0):
        self.source, self.preprocess, self.start = source, preprocess, start
        self.read = getattr(source, "read", None)

    def __len__(self) -> int:
        return len(self.source) - self.start

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str, int]:
        i += self.start
        if self.read is not None:
            try:
                image, label = self.read(i)
            except Unreadable as exc:
                return i, str(exc), -1
        else:
            item = self.source[i]
            image, label = item if isinstance(item, tuple) else (item, -1)
        if image is None:
            return i, "unreadable", -1
        try:
            tensor = image if isinstance(image, torch.Tensor) else self.preprocess(image)
        except (OSError, ValueError, SyntaxError) as exc:  # truncated data surfaces only when pixels are decoded
            return i, f"cannot be preprocessed: {printable(str(exc))[:80]}", -1
        return i, tensor, int(label) if label is not None else -1


def _collate(items: Sequence[tuple[int, torch.Tensor | str, int]]) -> tuple[list[tuple[int, str]], Batch | None]:
    good = [item for item in items if not isinstance(item[1], str)]
    skipped = [(i, why) for i, why, _ in items if isinstance(why, str)]
    if not good:
        return skipped, None
    indices, tensors, labels = zip(*good)
    return skipped, Batch(torch.tensor(indices), torch.stack(tensors), torch.tensor(labels))


def batches(
    source: Any, preprocess: Any, *, batch_size: int = 32, num_workers: int = 0, report: LoadReport | None = None,
    progress: bool = False, description: str = "images", start: int = 0,
) -> Iterator[Batch]:
    """Preprocessed batches in source order from position `start`; unreadable items are skipped and recorded in
    `report` (whose total is the whole source's size)."""
    require_positive_int("batch_size", batch_size, maximum=MAX_BATCH_SIZE)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or not 0 <= num_workers <= MAX_WORKERS:
        raise CliplensError(f"num_workers must be an integer from 0 to {MAX_WORKERS}, got {num_workers!r}")
    if not 0 <= start <= len(source):
        raise CliplensError(f"cannot start at position {start} of a source of {len(source)} items")
    report = report if report is not None else LoadReport()
    report.total = len(source)
    workers = min(num_workers, -(-(len(source) - start) // batch_size))  # a worker beyond one per batch would only idle
    loader = DataLoader(_Preprocessed(source, preprocess, start), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, shuffle=False, worker_init_fn=_hand_over_by_name)
    bar = progress_bar(len(source), description, "img", progress, initial=start)
    with _interrupts_held():  # the workers start here
        iterator = iter(loader)
    for block, (skipped, batch) in enumerate(iterator):
        describe = getattr(source, "describe", lambda i: f"item {i}")
        report.skipped.extend(describe(i) for i, _ in skipped)
        report.reasons.extend(why for _, why in skipped)
        bar.update(len(skipped) + (len(batch.indices) if batch is not None else 0))
        if batch is not None:
            report.loaded += len(batch.indices)
            batch.stop = min(start + (block + 1) * batch_size, len(source))
            yield batch
    bar.close()


def _hand_over_by_name(worker_id: int) -> None:
    """In a loader worker: hand batches to the main process by the name of their shared memory, not by passing a
    file descriptor, so that Ctrl-C cannot break a handover half-way.

    A descriptor is passed over a connection that the main process opens to a thread of the worker, one per tensor.
    Ctrl-C raises KeyboardInterrupt in the main process wherever it is, also inside that exchange; the connection then
    closes early and the worker's thread prints the error (a traceback after our one line). A name needs no connection,
    so there is nothing to break. torch's shared-memory manager removes the files once the processes using them are
    gone, interrupted or not. Only this worker process changes its setting; the user's own process keeps its own."""
    torch.multiprocessing.set_sharing_strategy("file_system")


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C back while the loader's worker processes start, so that they never take it.

    Ctrl-C reaches every process of the terminal's process group. A worker that took it would die with its own
    traceback and fail the main process with "worker exited unexpectedly", and one that arrives while the loader is
    still starting workers leaves it half-built (torch then prints another traceback). So the workers start with SIGINT
    blocked (forked and spawned processes inherit the mask, and keep it), and an interrupt that arrives meanwhile is
    noted and raised here once the loader is complete, where it shuts its workers down cleanly."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield  # no POSIX signals (Windows), or not the thread Python delivers them to
        return
    noted: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda number, frame: noted.append(number))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, handler if handler is not None else signal.default_int_handler)
    if noted:
        raise KeyboardInterrupt


class ImageModel(Protocol):
    """What streaming needs from a model (a `Lens`): how it preprocesses an image, and how it takes a batch."""

    preprocess: Callable[[Any], torch.Tensor]

    def images_to_tensor(self, images: torch.Tensor) -> torch.Tensor: ...


def require_labels(labels: torch.Tensor) -> None:
    """Refuse a batch with unlabelled images (label -1): what needs classes (zero-shot accuracy) cannot score them."""
    if (torch.as_tensor(labels) < 0).any():
        raise CliplensError("the evaluation data has unlabelled images (no class labels); use a folder with one "
                            "sub-folder per class, or shapes:<split>")


def stream(
    model: ImageModel, data: Any, *, batch_size: int = 32, num_workers: int = 0, progress: bool = False,
    description: str = "images", labelled: bool = False, report: LoadReport | None = None, start: int = 0,
) -> Iterator[Batch]:
    """The batches of `data` (anything `as_source` takes) ready for `model`: images on its device and dtype, with their
    positions and labels, in order. `labelled` refuses unlabelled images; `report` (optional) receives the counts and
    skipped files, and may hold those of an interrupted pass that this one resumes from position `start` (a batch
    boundary). Once the data is exhausted, a pass that could read no image at all is an error."""
    report = report if report is not None else LoadReport()
    for batch in batches(as_source(data), model.preprocess, batch_size=batch_size, num_workers=num_workers,
                         report=report, progress=progress, description=description, start=start):
        if labelled:
            require_labels(batch.labels)
        yield Batch(batch.indices, model.images_to_tensor(batch.images), batch.labels, batch.stop)
    if report.loaded == 0:
        raise CliplensError(f"no readable images in the data ({report.summary()}); check the path")

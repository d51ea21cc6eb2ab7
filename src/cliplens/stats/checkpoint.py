"""Checkpoints of a streaming pass, so that a long run killed at any moment resumes and ends bit-identical.

Every N batches the pass's exact running state (the reducers' float64 accumulators and top-k lists, as they are) is
written as one atomic artifact folder (`io.atomic`: a kill in the middle of a write leaves the previous checkpoint),
together with where the pass stands: its stage (a two-pass collection has two), the next source position (always a
batch boundary, so the batches after it have the same composition as in an uninterrupted pass) and the load report so
far. It also records what must not change for the state to be continued: the model fingerprint, the settings, the
data fingerprint, the batch size and which part of the data this process reads. Resuming refuses, in one line, a
checkpoint that differs in any of them.

`Passes` checkpoints the several passes of one run together (`cliplens analyze`): each reader of a pass says its
exact state (`Resumable`), and a checkpoint holds the finished passes' readers beside the running one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol

import torch

from ..data.loader import Batch, LoadReport, stream
from ..errors import CliplensError
from ..io.artifacts import load_artifact, read_metadata, save_artifact, under
from ..io.atomic import interrupted
from ..io.compat import require_match

if TYPE_CHECKING:
    from ..lens import Lens

KIND = "checkpoint"
EVERY = 100  # batches between checkpoints by default: < 0.1 % of a CPU pass on full-size models (BENCHMARKS.md)


@dataclass
class Resumed:
    """Where an interrupted pass stood: its stage, next position, state and load report."""

    stage: str
    position: int
    tensors: dict[str, torch.Tensor]
    record: dict[str, Any]
    report: LoadReport


class Checkpoints:
    """The checkpoint of one part of one pass: `folder/<name>`, written every `every` batches (0: never).

    `identity` holds what a resumed run must share with the one that wrote the checkpoint (JSON values).
    """

    def __init__(self, folder: str | Path | None, name: str, identity: dict[str, Any], every: int = EVERY):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise CliplensError(f"checkpoint_every must be a whole number of batches (0: never), got {every!r}")
        self.path = Path(folder) / name if folder is not None else None
        self.identity, self.every, self.done = dict(identity), every if folder is not None else 0, 0

    def resume(self) -> Resumed | None:
        """The checkpoint's state if there is one (None: start from the beginning); refuses one of another run."""
        if self.path is None:
            raise CliplensError("resuming needs the checkpoint folder of the interrupted run; pass checkpoint_dir")
        aside = interrupted(self.path)
        if aside is not None:  # killed between the two renames of a checkpoint write: the previous one is complete
            aside.rename(self.path)
        if not self.path.exists():
            return None
        what = f"the checkpoint {self.path}"
        try:
            if read_metadata(self.path).get("kind") != KIND:
                raise CliplensError(f"{self.path} is not a checkpoint; pass the checkpoint folder of the interrupted "
                                    "run")
            tensors, record = load_artifact(self.path)
        except CliplensError as exc:
            raise CliplensError(f"{exc} (delete {self.path} to start over)") from exc
        require_match(record, self.identity, what,
                      remedy="resume with the model, data and options of the interrupted run, or start over "
                             "without resuming")
        return Resumed(record["stage"], int(record["position"]), tensors, record, report_from(record.get("report")))

    def batches(self, lens: Lens, data: Any, *, stage: str, state: Callable[[], tuple[dict, dict]],
                report: LoadReport, start: int = 0, **options: Any) -> Iterator[Batch]:
        """`stream`'s batches from `start`; after every `every`-th batch is processed, a checkpoint of `state()`
        ((tensors, extra record entries)) is written before the next one is read."""
        for batch in stream(lens, data, report=report, start=start, **options):
            yield batch
            self.done += 1
            if self.every and self.done % self.every == 0:
                self.save(stage, batch.stop, *state(), report)

    def save(self, stage: str, position: int, tensors: dict[str, torch.Tensor], extra: dict[str, Any],
             report: LoadReport) -> Path:
        record = {**extra, **self.identity, "kind": KIND, "stage": stage, "position": position,
                  "report": report_record(report)}
        return save_artifact(self.path, tensors, record)


def report_record(report: LoadReport) -> dict[str, Any]:
    """A load report as JSON."""
    return {"total": report.total, "loaded": report.loaded, "skipped": report.skipped, "reasons": report.reasons}


def report_from(record: Mapping[str, Any] | None) -> LoadReport:
    """The inverse of `report_record` (an empty report for None)."""
    record = record or {}
    return LoadReport(int(record.get("total", 0)), int(record.get("loaded", 0)), list(record.get("skipped", [])),
                      list(record.get("reasons", [])))


class Resumable(Protocol):
    """A reader of a pass whose running state is named tensors, exactly (float64 accumulators as they are)."""

    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None: ...


class Passes:
    """The passes of one run, checkpointed together (`cliplens analyze`: two over the fit data, one over the
    evaluation data, one over the segmentation split).

    A checkpoint holds the final state of every reader of the passes already done and the running state of the one
    under way, under `<pass>/<reader>/<name>`. A resumed run builds each pass's readers as an uninterrupted run would
    (from the results of the passes before), restores a finished pass's readers without reading its data, and
    continues the pass under way from its batch: the result is bit-identical.
    """

    def __init__(self, checkpoints: Checkpoints | None = None, resume: bool = False):
        self.checkpoints = checkpoints or Checkpoints(None, "", {})  # none: never written
        self.resumed = self.checkpoints.resume() if resume else None
        self.done: dict[str, dict[str, Any]] = {}  # pass -> its load report (JSON)
        self.final: dict[str, torch.Tensor] = {}  # the finished passes' readers' states

    def run(self, lens: Lens, data: Any, name: str, readers: Mapping[str, Resumable], read: Callable[[Batch], None],
            *, shared: bool = True, **stream_options: Any) -> LoadReport:
        """Stream `data` once (or restore it), handing each batch to `read`; with `shared`, every decomposition of a
        batch reuses one forward (decompose/shared.py). `readers` are what `read` accumulates into."""
        resumed, report, start = self.resumed, LoadReport(), 0
        if resumed is not None and name in resumed.record.get("done", {}):
            _restore(readers, resumed.tensors, name)
            return self._finish(name, readers, report_from(resumed.record["done"][name]))
        if resumed is not None and resumed.stage == name:
            _restore(readers, resumed.tensors, name)
            report, start = resumed.report, resumed.position

        def state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            return {**self.final, **_named(name, readers)}, {"done": dict(self.done)}

        with torch.no_grad():
            for batch in self.checkpoints.batches(lens, data, stage=name, state=state, report=report, start=start,
                                                  **stream_options):
                if shared:
                    with lens.decomposer.sharing(batch.images):
                        read(batch)
                else:
                    read(batch)
        return self._finish(name, readers, report)

    def _finish(self, name: str, readers: Mapping[str, Resumable], report: LoadReport) -> LoadReport:
        if self.checkpoints.every:  # later checkpoints carry them; without checkpoints nothing is kept
            self.final.update(_named(name, readers))
        self.done[name] = report_record(report)
        return report


def _named(name: str, readers: Mapping[str, Resumable]) -> dict[str, torch.Tensor]:
    return {f"{name}/{reader}/{key}": tensor for reader, resumable in readers.items()
            for key, tensor in resumable.state().items()}


def _restore(readers: Mapping[str, Resumable], tensors: dict[str, torch.Tensor], name: str) -> None:
    for reader, resumable in readers.items():
        resumable.load_state(under(tensors, f"{name}/{reader}/"))

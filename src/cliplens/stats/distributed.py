"""Statistics over torchrun ranks: each rank streams its own slice, and rank 0 merges the ranks' statistics in order.

The ranks split the data exactly as `collect --shard r/K` does, and rank 0 folds their statistics with the same
`merge` that `cliplens merge` applies to shard artifacts, in the same order: the result is bit-identical to merging
the K shards (given the same arithmetic per shard: device and thread count), and equal to one pass to float64
round-off. Only tensors travel between processes, by point-to-point send and receive (a shape header, then the
data; gloo on CPU, NCCL on GPU): nothing is ever pickled. Before any state is exchanged every rank says whether its
own pass succeeded, so one rank's error stops all of them instead of leaving the others waiting.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from ..data.loader import LoadReport
from ..data.shards import Shard, shard_of
from ..errors import CliplensError

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several that torchrun started (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(device: str) -> str:
    """Under torchrun every rank takes its own GPU: "cuda" becomes "cuda:<LOCAL_RANK>"; other devices are kept."""
    if launched() and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


class Ranks:
    """This process's place among the torchrun ranks, and the exchanges a streaming pass needs."""

    def __init__(self, device: torch.device):
        self.created = not dist.is_initialized()
        if self.created:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = device if dist.get_backend() == "nccl" else torch.device("cpu")  # where NCCL needs tensors

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.size)

    @contextmanager
    def together(self) -> Iterator[None]:
        """Run this rank's own work; afterwards every rank learns whether all succeeded (a failed rank re-raises its
        own error, the others a one-line error naming it)."""
        try:
            yield
        except BaseException:
            self._agree(False)
            raise
        self._agree(True)

    def _agree(self, ok: bool) -> None:
        failed = torch.zeros(self.size, dtype=torch.int64, device=self.device)
        failed[self.rank] = int(not ok)
        dist.all_reduce(failed)
        others = [rank for rank in failed.nonzero()[:, 0].tolist() if rank != self.rank]
        if ok and others:
            raise CliplensError(f"rank {others[0]} of {self.size} stopped with an error (see its message); "
                                "nothing was written")

    def send(self, tensors: dict[str, torch.Tensor], to: int) -> None:
        for name in sorted(tensors):
            tensor = tensors[name].contiguous()
            dist.send(torch.tensor([tensor.dim(), *tensor.shape], dtype=torch.int64, device=self.device), to)
            if tensor.numel():
                dist.send(tensor.to(self.device), to)

    def receive(self, like: dict[str, torch.Tensor], source: int) -> dict[str, torch.Tensor]:
        """Tensors named and typed as `like` (this rank's own), shaped as the sender's, on the CPU."""
        received = {}
        for name in sorted(like):
            header = torch.empty(like[name].dim() + 1, dtype=torch.int64, device=self.device)
            dist.recv(header, source)
            tensor = torch.empty(header[1:].tolist(), dtype=like[name].dtype, device=self.device)
            if tensor.numel():
                dist.recv(tensor, source)
            received[name] = tensor.cpu()
        return received

    def gather(self, tensors: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """On rank 0, every rank's tensors in rank order (its own first), received one rank at a time so that at most
        two states are held at once; the other ranks send theirs and get nothing."""
        if self.rank:
            self.send(tensors, 0)
            return iter(())
        return self._received(tensors)

    def _received(self, tensors: dict[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        yield tensors
        for source in range(1, self.size):
            yield self.receive(tensors, source)

    def broadcast(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rank 0's tensors on every rank; every rank passes tensors of the same names, shapes and types."""
        shared = {}
        for name in sorted(tensors):
            buffer = tensors[name].to(self.device).contiguous().clone()
            dist.broadcast(buffer, 0)
            shared[name] = buffer.to(tensors[name].device)
        return shared

    def fold(self, tensors: dict[str, torch.Tensor], report: LoadReport,
             rebuild: Callable[[int, dict[str, torch.Tensor], LoadReport], T]) -> T | None:
        """Rank 0: `rebuild(rank, tensors, report)` of every rank's part, merged in rank order (`a.merge(b)`), with the
        load reports joined; the other ranks: None."""
        merged, joined = None, LoadReport()
        for rank, received in enumerate(self.gather({**tensors, **report_state(report)})):
            part_report = report_from(received)
            part = rebuild(rank, {k: v for k, v in received.items() if not k.startswith(REPORT)}, part_report)
            merged = part if merged is None else merged.merge(part)
            joined.extend(part_report)
        if merged is not None:
            merged.report = joined
        return merged


@contextmanager
def joined(distributed: bool | None, device: torch.device) -> Iterator[Ranks | None]:
    """The ranks of a torchrun launch, or None for one process. `distributed`: False never, True always (refused
    outside torchrun), None when launched by torchrun with more than one process."""
    if distributed is None:
        distributed = launched()
    if not distributed:
        yield None
        return
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise CliplensError("a distributed collection runs under torchrun, e.g. torchrun --nproc-per-node 2 -m "
                            "cliplens collect ...; without it, drop distributed=True")
    ranks = Ranks(torch.device(device))
    try:
        yield ranks
    finally:
        if ranks.created:
            dist.destroy_process_group()


def together(ranks: Ranks | None) -> Any:
    """`ranks.together()`, or nothing to agree on for one process."""
    return nullcontext() if ranks is None else ranks.together()


def data_part(source: Any, shard: str | Shard | None, ranks: Ranks | None) -> Any:
    """What this process reads: the source, its shard, or its rank's slice (the same slicing as shards)."""
    if shard is not None and ranks is not None:
        raise CliplensError("--shard and torchrun both split the data; use one of them")
    if ranks is not None:
        return shard_of(source, ranks.shard)
    if shard is not None:
        return shard_of(source, shard if isinstance(shard, Shard) else Shard.parse(shard))
    return source


def part_name(part: Any) -> str:
    """`i-of-n` for a shard or a rank's slice, `whole` for the whole source: checkpoints of parts stay apart."""
    shard = getattr(part, "shard", None)
    return f"{shard.index}-of-{shard.count}" if shard is not None else "whole"


# load reports as tensors (names and reasons as NUL-separated UTF-8 bytes) ---------------------------------------------
REPORT = "report."


def report_state(report: LoadReport) -> dict[str, torch.Tensor]:
    return {f"{REPORT}counts": torch.tensor([report.total, report.loaded, len(report.skipped)]),
            f"{REPORT}skipped": _bytes(report.skipped), f"{REPORT}reasons": _bytes(report.reasons)}


def report_from(tensors: dict[str, torch.Tensor]) -> LoadReport:
    total, loaded, skipped = tensors[f"{REPORT}counts"].tolist()
    return LoadReport(total, loaded, _strings(tensors[f"{REPORT}skipped"], skipped),
                      _strings(tensors[f"{REPORT}reasons"], skipped))


def _bytes(strings: list[str]) -> torch.Tensor:
    data = "\0".join(strings).encode("utf-8", "surrogateescape")
    return torch.tensor(list(data), dtype=torch.uint8)


def _strings(tensor: torch.Tensor, count: int) -> list[str]:
    return bytes(tensor.tolist()).decode("utf-8", "surrogateescape").split("\0") if count else []

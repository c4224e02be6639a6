"""Process groups under ``torchrun`` (one machine or several) and the few collectives
ramir needs, for training and for inference alike.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; without them the run is a single process and
nothing here talks to other processes (every collective returns its input). Training
uses NCCL on GPU and gloo on CPU; inference only exchanges small Python objects (the
plan, the per-image results) and uses gloo everywhere, which has no watchdog that kills
a process waiting for a slower rank.

A collective that fails because another process died or cannot be reached raises
:class:`DistributedError`, whose message says so instead of gloo's socket error.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ramir.errors import RamirError, Stopped, UsageError

__all__ = [
    "INFERENCE_TIMEOUT_S",
    "DistInfo",
    "DistributedError",
    "SINGLE",
    "agree",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "env_world",
    "init_distributed",
    "sigterm_raises",
]

T = TypeVar("T")

INFERENCE_TIMEOUT_S = 3 * 3600.0
"""How long an inference process waits in a collective for the others (``ramir restore``
and ``ramir evaluate`` under ``torchrun``): the ranks meet only after planning and at the
end, so the wait is the imbalance of the last images, well under this. A rank that dies
is noticed at once (its socket closes, and ``torchrun`` stops the others)."""


class DistributedError(RamirError, RuntimeError):
    """Another process of the run stopped, failed, or cannot be reached."""


@contextlib.contextmanager
def sigterm_raises(message: str) -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`ramir.errors.Stopped` (a
    ``BaseException``) with ``message`` in the main thread instead of ending the process
    on the spot, so that ``finally`` blocks run (temporary files are removed, pending
    writes finish) and the user reads why. Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Stopped(message)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes shared files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
"""A single process on the CPU (the collectives are then no-ops)."""


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` as ``torchrun`` set them (``(0, 1, 0)`` alone).

    Raises:
        UsageError: the variables are not integers, or the rank is out of range.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UsageError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them); unset "
            "them to run a single process"
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK {rank} is not in [0, WORLD_SIZE {world}); launch with torchrun")
    return rank, world, local_rank


def init_distributed(
    device: str | None = "auto",
    timeout_s: float = 1800.0,
    *,
    backend: str | None = None,
) -> DistInfo:
    """Join the ``torchrun`` process group if launched by it; pick this process's device.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` (device ``LOCAL_RANK`` under torchrun) or
            anything :func:`ramir.runtime.resolve_device` reads. Under torchrun with
            several processes an explicit GPU index (``cuda:1``) is refused: every
            process would take that one GPU.
        timeout_s: how long a collective may wait for the other processes before failing.
        backend: ``nccl`` or ``gloo``; default NCCL on CUDA, gloo on CPU.

    Returns a :class:`DistInfo`; with no ``WORLD_SIZE`` (or ``WORLD_SIZE=1``) it is a
    single process and no process group is created.

    Raises:
        UsageError: ``cuda:N`` asked of several processes.
        ResourceError: CUDA asked for but missing, or fewer GPUs than local processes.
    """
    from ramir.runtime import resolve_device

    rank, world, local_rank = env_world()
    if world > 1 and device not in (None, "auto") and ":" in str(device):
        raise UsageError(
            f"--device {device} under torchrun with {world} processes would put them all "
            "on one GPU; each process takes the GPU of its local rank: pass --device cuda "
            "(or auto), and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    dev = resolve_device(device, local_rank if world > 1 else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
        if dev.type == "cuda" and backend == "nccl":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    if world > 1:
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Leave the process group (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _short(e: BaseException) -> str:
    """The gist of a backend error: ``[.../pair.cc:553] Connection closed by peer
    [127.0.0.1]:20185. This is typically ...`` -> ``Connection closed by peer ...``."""
    text = (str(e).splitlines() or [repr(e)])[0]
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".") or repr(e)


def _collective(fn: Callable[[], T], what: str, info: DistInfo) -> T:
    try:
        return fn()
    except RuntimeError as e:  # gloo: "Connection closed by peer", a timeout...
        raise DistributedError(
            f"rank {info.rank} of {info.world_size}: {what} failed: another process of this "
            f"run stopped or cannot be reached ({_short(e)})"
        ) from e


def _uses_device_ids(info: DistInfo) -> bool:
    return info.device.type == "cuda" and dist.get_backend() == "nccl"


def barrier(info: DistInfo) -> None:
    """Wait until every process gets here (no-op for a single process)."""
    if info.distributed:
        if _uses_device_ids(info):
            _collective(lambda: dist.barrier(device_ids=[info.device.index]), "barrier", info)
        else:
            _collective(dist.barrier, "barrier", info)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over processes (in place; returned for convenience)."""
    if info.distributed:
        _collective(lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM), "all_reduce", info)
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    _collective(lambda: dist.all_gather_object(out, obj), "gathering results", info)
    return out


def broadcast_object(obj: T, info: DistInfo) -> T:
    """Rank 0's ``obj`` (picklable) on every process (``obj`` itself for one process)."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    _collective(lambda: dist.broadcast_object_list(box, src=0), "receiving the plan", info)
    return box[0]  # type: ignore[return-value]


def agree(fn: Callable[[], T], info: DistInfo) -> T:
    """Run ``fn`` on every process; if it raised on any, raise on all.

    For steps whose failure on one process (a folder missing on one machine, a bad
    argument) would otherwise leave the others waiting in their next collective. The
    first failing rank's error is re-raised as it was (same type, same message; on other
    ranks the type falls back to :class:`DistributedError` when it cannot be rebuilt).
    """
    error: BaseException | None = None
    result: T | None = None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
        error = e
    if not info.distributed:
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
    summary = None if error is None else (type(error), str(error))
    errors = all_gather_objects(summary, info)
    if error is not None:
        raise error
    for rank, item in enumerate(errors):
        if item is not None:
            kind, message = item
            try:
                rebuilt = kind(message) if issubclass(kind, Exception) else None
            except Exception:  # noqa: BLE001 - a type whose constructor takes more
                rebuilt = None
            raise rebuilt or DistributedError(f"rank {rank}: {message}")
    return result  # type: ignore[return-value]

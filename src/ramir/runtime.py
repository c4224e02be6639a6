"""Process-wide CPU settings: how many threads PyTorch uses, and how idle threads wait.

On a machine that other programs also use, PyTorch's default (one busy-waiting OpenMP
thread per core) degrades badly: threads spin on cores that another process needs, and a
training step waits for the slowest one. Measured on a 2-core machine beside a second
training run (``benchmarks/bench_threads.py``), two spinning threads per process ran at
0.1 to 0.7 of the best idle speed (one run starved), while one thread per process kept
0.73 to 0.78. So the CLI lets idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``,
unless set) and, by default, uses only the cores that are not already busy
(``threads="auto"``, measured over a quarter of a second when the command starts).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ramir.errors import ResourceError, UsageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "available_cpus",
    "auto_threads",
    "local_processes",
    "check_threads",
    "parse_threads",
    "set_threads",
    "passive_wait",
    "resolve_device",
    "busy_cpus",
]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def busy_cpus(window: float = 0.25) -> float | None:
    """How many CPUs other work keeps busy right now: the non-idle share of all CPU time
    over ``window`` seconds (Linux ``/proc/stat``), times the CPU count; ``None`` where
    that cannot be read. Unlike the load average, it does not remember work that has
    just finished."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    busy = 1.0 - (idle1 - idle0) / (total1 - total0)
    return busy * (os.cpu_count() or 1)


def local_processes() -> int:
    """How many processes of this job share this machine: ``LOCAL_WORLD_SIZE`` under
    ``torchrun`` (``--nproc-per-node``), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def auto_threads(
    cpus: int | None = None, load: float | None = None, processes: int | None = None
) -> int:
    """Threads for a compute-bound job: its share of the CPUs not already busy, at least 1.

    ``load`` is how many CPUs are busy (measured with :func:`busy_cpus` when ``None``,
    else the 1-minute load average; where neither can be read, every CPU counts as free).
    ``processes`` is how many processes of the job share the machine (default
    :func:`local_processes`: under ``torchrun --nproc-per-node 2`` each takes half).
    ``auto_threads(2, 0.1) == 2``, ``auto_threads(2, 1.0) == 1``, ``auto_threads(2, 3.5) == 1``,
    ``auto_threads(8, 0.0, 2) == 4``.
    """
    cpus = available_cpus() if cpus is None else cpus
    processes = local_processes() if processes is None else max(1, processes)
    if load is None:
        load = busy_cpus()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cpus, cpus - round(load)) // processes)


def check_threads(value: int) -> int:
    """``value`` if it is a sensible thread count: 1 to :func:`available_cpus`.

    More threads than CPUs only compete for them (a huge count multiplies the job's time
    and memory), so a larger count is refused rather than clamped.

    Raises:
        UsageError: ``value`` is below 1 or above the CPU count, naming that count.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"threads must be a positive integer or 'auto', got {value!r}")
    if value < 1:
        raise UsageError(f"threads must be >= 1 (or 'auto'), got {value}")
    cpus = available_cpus()
    if value > cpus:
        total = os.cpu_count() or cpus
        where = (
            f"this machine has {cpus} CPU(s)"
            if total == cpus
            else f"this process may use {cpus} of this machine's {total} CPUs"
        )
        raise UsageError(
            f"threads must be at most {cpus} ({where}), got {value}; more threads than CPUs "
            f"only slow the job down: use 'auto' or a number from 1 to {cpus}"
        )
    return value


def parse_threads(text: str) -> int | str:
    """``--threads`` values: ``auto`` or an integer from 1 to the CPU count
    (:func:`check_threads`)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"threads must be a positive integer or 'auto', got {text!r}") from None
    return check_threads(value)


def passive_wait() -> None:
    """Let idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    Takes effect only before PyTorch is first imported, and never overrides a value the
    user set.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def set_threads(threads: int | str = "auto") -> int:
    """Set PyTorch's intra-op thread count (``"auto"``: :func:`auto_threads`); returns it.

    Raises:
        UsageError: a count below 1 or above the CPU count (:func:`check_threads`).
    """
    import torch

    n = auto_threads() if threads == "auto" else check_threads(threads)  # type: ignore[arg-type]
    torch.set_num_threads(n)
    return n


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """The one device resolver of ramir (CLI, training, analysis, evaluation, web app).

    ``None`` or ``"auto"``: CUDA if a GPU is visible (device ``local_rank``), else CPU.
    ``"cuda"``: CUDA device ``local_rank``; ``"cuda:N"``: device N; anything else
    (``"cpu"``, ``"mps"``...) as PyTorch reads it.

    Raises:
        RuntimeError: CUDA was asked for but no GPU (or not that many) is visible.
        ValueError: ``name`` is not a device PyTorch knows.
    """
    import torch

    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r} ({e}); use auto, cpu, cuda or cuda:N") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ResourceError(
            f"device {name!r} was requested but no CUDA GPU is available; use --device cpu"
        )
    index = local_rank if device.index is None else device.index
    n = torch.cuda.device_count()
    if index >= n:
        raise ResourceError(
            f"CUDA device {index} requested but only {n} are visible; with torchrun, launch "
            f"at most {n} processes per node (--nproc_per_node {n})"
        )
    return torch.device("cuda", index)

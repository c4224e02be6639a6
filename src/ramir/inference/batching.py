"""Running a network over many same-shape parts (tiles of an image, images of one size),
``batch_size`` of them per call.

Outputs equal one part at a time to float rounding. ``"auto"`` measures the first part's
memory on a GPU and fills about half of what is free (at most :data:`MAX_AUTO_BATCH`); on
a CPU it is 1, where a batch is no faster (the README's figures,
``benchmarks/bench_restore.py``). A batch that runs out of memory is split in two and
retried.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Literal

import torch

from ramir.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_MEMORY_FRACTION",
    "BatchSize",
    "MAX_AUTO_BATCH",
    "apply_in_batches",
    "check_batch_size",
]

BatchSize = int | Literal["auto"]
"""Tiles (or images) per call of the network: a positive number, or ``"auto"``."""

MAX_AUTO_BATCH = 32
"""Largest batch ``batch_size="auto"`` picks: beyond it a GPU is already busy."""

AUTO_MEMORY_FRACTION = 0.5
"""Share of the free GPU memory an ``"auto"`` batch may fill (measured on its first tile,
so the rest is margin for fragmentation and the blending buffers)."""


def check_batch_size(batch_size: object, name: str = "batch_size") -> BatchSize:
    """``batch_size`` if it is a positive integer or ``"auto"``.

    Raises:
        UsageError: anything else, naming ``name``.
    """
    if batch_size == "auto":
        return "auto"
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise UsageError(f"{name} must be a positive integer or 'auto', got {batch_size!r}")
    if batch_size < 1:
        raise UsageError(f"{name} must be >= 1 (or 'auto'), got {batch_size}")
    return int(batch_size)


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in text or "not enough memory" in text or "can't allocate" in text
    )


def _fits(peak: int, free: int) -> int:
    """How many parts of ``peak`` bytes each fit in :data:`AUTO_MEMORY_FRACTION` of
    ``free``, between 1 and :data:`MAX_AUTO_BATCH`."""
    if peak <= 0:
        return MAX_AUTO_BATCH
    return max(1, min(MAX_AUTO_BATCH, int(AUTO_MEMORY_FRACTION * free // peak)))


def apply_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    count: int,
    get: Callable[[int], torch.Tensor],
    put: Callable[[int, torch.Tensor], None],
    *,
    batch_size: BatchSize = 1,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run ``fn`` over ``count`` same-shape parts, ``batch_size`` of them per call.

    Args:
        fn: maps a batch ``(k * b, C, h, w)`` to ``(k * b, C_out, h, w)``, each sample on
            its own (no statistics across the batch).
        count: how many parts.
        get: ``get(j)`` is part ``j``, ``(b, C, h, w)`` (every part the same shape), on
            ``device``; called just before its batch runs, so parts need not all exist
            at once.
        put: ``put(j, out)`` receives part ``j``'s output ``(b, C_out, h, w)``.
        batch_size: parts per call; ``"auto"`` on CUDA runs the first part alone,
            measures its peak memory and fills :data:`AUTO_MEMORY_FRACTION` of the
            free memory (at most :data:`MAX_AUTO_BATCH`); ``"auto"`` elsewhere is 1. A
            batch that runs out of memory is halved and retried (a single part that
            does raises).
        device: where ``fn`` runs (for ``"auto"``).
        progress: called with the number of parts done after each batch.

    Returns:
        The batch size in use at the end (after ``"auto"`` and any halving).
    """
    batch_size = check_batch_size(batch_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    auto = batch_size == "auto" and device.type == "cuda"
    size = 1 if batch_size == "auto" else batch_size
    j = 0
    while j < count:
        k = min(size, count - j)
        probe = auto and j == 0
        free = base = 0
        if probe:
            torch.cuda.synchronize(device)
            free = torch.cuda.mem_get_info(device)[0]
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        try:
            batch = get(j) if k == 1 else torch.cat([get(j + i) for i in range(k)])
            out = fn(batch)
        except (RuntimeError, MemoryError) as e:
            if k == 1 or not _is_out_of_memory(e):
                raise
            batch = out = None  # type: ignore[assignment]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            size = max(1, (k + 1) // 2)
            log.warning("a batch of %d ran out of memory; retrying with %d", k, size)
            continue
        if probe:
            peak = torch.cuda.max_memory_allocated(device) - base
            size = _fits(peak, free)
            log.debug("batch_size auto: %d (%.0f MB per part)", size, peak / 2**20)
        b = out.shape[0] // k
        for i in range(k):
            put(j + i, out[i * b : (i + 1) * b])
        del batch, out
        j += k
        if progress is not None:
            progress(j)
    return size

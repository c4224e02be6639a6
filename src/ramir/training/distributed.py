"""Process-group set-up for ``torchrun`` training (single or multi node).

The generic parts (:class:`DistInfo`, the collectives) live in :mod:`ramir.distributed`,
which inference (``ramir restore``, ``ramir evaluate``) uses too; this module keeps the
names training imports and checks ``train.device``. NCCL is used on GPU and gloo on CPU.
"""

from __future__ import annotations

import torch

from ramir.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
)
from ramir.distributed import init_distributed as _init_distributed

__all__ = [
    "DistInfo",
    "resolve_device",
    "init_distributed",
    "cleanup_distributed",
    "barrier",
    "all_reduce_sum",
    "all_gather_objects",
]


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """This process's device for ``train.device`` (``auto``, ``cpu`` or ``cuda``): see
    :func:`ramir.runtime.resolve_device`; with CUDA, device ``local_rank``."""
    from ramir.runtime import resolve_device as resolve

    if choice not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {choice!r}")
    return resolve(choice, local_rank)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the ``torchrun`` process group if launched by it; pick this process's device.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``.
        timeout_s: how long a collective may wait for the other processes before failing.

    Returns a :class:`DistInfo`; with no ``WORLD_SIZE`` (or ``WORLD_SIZE=1``) it is a
    single process and no process group is created.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return _init_distributed(device, timeout_s)

"""Process-group set-up for ``torchrun`` training (single or multi node).

The generic parts (:class:`DistInfo`, the collectives) live in :mod:`ramir.distributed`,
which inference (``ramir restore``, ``ramir evaluate``) uses too; this module keeps the
names training imports and checks ``train.device``. NCCL is used on GPU and gloo on CPU.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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
    "unused_parameters",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)


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


def unused_parameters(
    model: nn.Module,
    size: tuple[int, int],
    *,
    masked: bool,
    channels: int = 3,
    forward_args: Any = None,
) -> list[str]:
    """Names of ``model``'s trainable parameters that get no gradient from one forward
    and backward pass, called as training calls it.

    The pass runs on a copy of the model (its weights, buffers and mode untouched), in its
    current train/eval mode, on one zero image of ``size`` ``(H, W)`` (with a half mask
    when ``masked``), under a forked RNG: the run's random stream does not move.
    PromptIR's six convolutions that its forward never calls, or a learnable mask token
    on whole inputs, are what it finds. ``forward_args`` (a
    :class:`ramir.training.model.ForwardArgs`) makes the forward's arguments as the
    training step does (RestormerRFR: with its DINOv2 features).
    """
    from ramir.masking import random_mask

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    dev = params[0].device
    probe = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        x = torch.zeros(1, channels, *size, device=dev)
        mask = None
        if masked:
            mask = random_mask(*size, generator=torch.Generator(dev).manual_seed(0))
        if forward_args is not None:
            out = probe(*forward_args.training(x, mask), check_finite=False)
        else:
            out = probe(x, mask, check_finite=False) if mask is not None else probe(x)
        out.float().square().mean().backward()
    return [n for n, p in probe.named_parameters() if p.requires_grad and p.grad is None]


def wrap_ddp(
    model: nn.Module,
    info: DistInfo,
    *,
    find_unused: bool,
    probe_size: tuple[int, int] | None = None,
    masked: bool = False,
    forward_args: Any = None,
) -> DistributedDataParallel:
    """``DistributedDataParallel(model)`` for training, with gradients as views of the
    communication buckets (no copy, less memory).

    Args:
        model: the bare model on ``info.device``; frozen parameters are left out of the
            gradient exchange.
        info: this process.
        find_unused: search for unused parameters at every step (``train.
            find_unused_parameters``).
        probe_size: without ``find_unused``, the ``(H, W)`` of one training input:
            :func:`unused_parameters` checks the model once, and the search is turned on
            (with a note naming the parameters) only when some trainable parameter got
            no gradient. ``None``: no check.
        masked: training calls the model with a mask.
        forward_args: the forward's arguments for the probe (see :func:`unused_parameters`).
    """
    if not find_unused and probe_size is not None:
        unused = unused_parameters(model, probe_size, masked=masked, forward_args=forward_args)
        if unused:
            find_unused = True
            if info.is_main:
                shown = ", ".join(unused[:6]) + (", ..." if len(unused) > 6 else "")
                logger.info(
                    "%d trainable parameters get no gradient (%s): DistributedDataParallel "
                    "searches for unused parameters at every step (freezing them, or "
                    "train.find_unused_parameters=true, says so up front)",
                    len(unused), shown,
                )  # fmt: skip
    dev = info.device
    return DistributedDataParallel(
        model,
        device_ids=[dev.index] if dev.type == "cuda" else None,
        find_unused_parameters=find_unused,
        gradient_as_bucket_view=True,
    )

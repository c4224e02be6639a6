"""Batched chain: several degradations in a row, each step applied to a per-sample random
subset (probability ``p``), as :func:`ramir.degradations.chain` applies it to one image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ramir.degradations.chain import CAMERA_STEPS
from ramir.degradations.device._common import check_batch, finish, rand

__all__ = ["chain"]


def chain(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    steps: Sequence[Mapping[str, Any]] = CAMERA_STEPS,
    path: str = "auto",
) -> torch.Tensor:
    """Apply the degradations of ``steps`` in order (see :func:`ramir.degradations.chain`).

    For every step each sample draws ``u ~ U(0, 1)`` and the step degrades the samples
    with ``u < p`` (all at once, each with its own parameters); the others pass through.
    Each step runs on ``path`` (``auto``: the faster one for the device, see
    :func:`ramir.degradations.device.preferred_path`).
    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    from ramir.degradations import get, validate_params
    from ramir.degradations.chain import check_steps
    from ramir.degradations.device import batch_version

    x = check_batch(x, "chain").to(torch.float32)
    out = x.clone()
    for name, p, params in check_steps(steps, get, validate_params):
        step = batch_version(name, params)
        hit = rand(generator, (x.shape[0],), x.device) < p
        idx = hit.nonzero().view(-1)
        if idx.numel() == x.shape[0]:
            out = step(out, generator, path)
        elif idx.numel():
            out = out.index_copy(0, idx, step(out.index_select(0, idx), generator, path))
    return finish(out)

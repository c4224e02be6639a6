"""Unwrapping released checkpoints: the plain state dict inside a release's file.

Releases wrap their weights: BasicSR files (RAM's, NAFNet's, SwinIR's) hold
``{"params": ..., "params_ema": ...}``, PyTorch Lightning checkpoints (PromptIR's) a
``state_dict`` whose keys start with ``net.``, others ``{"model": ...}``; weights saved
from ``DataParallel`` start with ``module.``. :func:`official_state_dict` takes any of
these apart; the buffers that releases carry but ramir's models rebuild
(:data:`IGNORED_SUFFIXES`) are left to :func:`ramir.checkpoint.check_shapes` to ignore.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ramir.errors import CheckpointError

__all__ = ["official_state_dict", "IGNORED_SUFFIXES"]

log = logging.getLogger(__name__)

# Buffers that official checkpoints carry but our models recompute.
IGNORED_SUFFIXES = ("attn_mask", "relative_position_index")


def official_state_dict(obj: Any, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Extract a plain state dict from a released checkpoint object.

    Reads BasicSR files (``params_ema`` preferred over ``params``), PyTorch Lightning
    checkpoints (``state_dict``; a ``net.`` prefix, the PromptIR release's, is stripped),
    ``{'model': ...}`` dicts and bare state dicts; strips ``module.``. Entries that are
    not weights (optimizer states, epochs, other sub-modules of a Lightning module) are
    ignored with a note in the log.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            others = sorted(str(k) for k in obj if k != key)
            if others:
                log.info("%s: reading %r; ignoring %s", Path(path).name, key, ", ".join(others))
            obj = obj[key]
            break
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        sd[k[len("module.") :] if k.startswith("module.") else k] = v
    if not sd:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint")
    # A Lightning module holding the network as ``self.net`` (PromptIR's release).
    if sum(k.startswith("net.") for k in sd) * 2 >= len(sd):
        rest = sorted(k for k in sd if not k.startswith("net."))
        if rest:
            log.info("%s: ignoring %d entries outside 'net.': %s", Path(path).name,
                     len(rest), short_list(rest))  # fmt: skip
        sd = {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}
    return sd


def short_list(items: list[str], limit: int = 8) -> str:
    """The first ``limit`` items joined by commas, then how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

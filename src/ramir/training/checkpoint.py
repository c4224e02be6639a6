"""Training-state checkpoints: written atomically, the last K kept, resumable.

One checkpoint is a folder ``OUT/checkpoints/iter_XXXXXXXX/`` holding

* ``model.safetensors`` and (with EMA) ``model_ema.safetensors``, the names of the run's
  final weights: weights in our format (:func:`ramir.checkpoint.save_model`, loadable
  with :func:`ramir.load_model`; checkpoints written before the names matched hold
  ``ema.safetensors``, still read);
* ``state.pt``: optimiser, schedule, gradient scaler, every process's RNG states, the
  data position and run facts (iteration, world size, batch size);
* ``config.yaml``: the resolved config of the run.

The folder is filled under a temporary name and renamed into place, so a killed run
leaves either a whole checkpoint or none (stale temporary folders are removed later).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ramir.checkpoint import (  # the run-folder layout lives with the weights readers
    CHECKPOINT_DIR,
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    resolve_weights_path,
)
from ramir.checkpoint import save_model as save_model_weights
from ramir.config import save_config
from ramir.errors import RamirError

__all__ = [
    "CHECKPOINT_DIR",
    "RunExistsError",
    "save_training_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "find_resume_checkpoint",
    "load_training_state",
    "readable_checkpoint",
    "load_weights",
    "resolve_weights_path",
    "remove_stale_temporaries",
    "get_rng_state",
    "set_rng_state",
]


logger = logging.getLogger(__name__)


class RunExistsError(RamirError, ValueError):
    """A new run was asked for in a folder that already holds checkpoints."""


# ----------------------------------------------------------------------------- RNG


def get_rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, current CUDA device, numpy, python)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------- writing


def save_training_checkpoint(
    out_dir: str | Path,
    iteration: int,
    *,
    model: nn.Module,
    ema_model: nn.Module | None,
    state: Mapping[str, Any],
    config: Any,
    keep_last: int,
    extra_models: Mapping[str, nn.Module] | None = None,
) -> Path:
    """Write checkpoint ``iteration`` atomically and delete all but the newest ``keep_last``.

    Args:
        out_dir: the run folder (checkpoints go to ``out_dir/checkpoints``).
        iteration: number of optimiser steps done.
        model, ema_model: bare models built by :func:`ramir.models.build_model`.
        state: picklable training state (optimiser, schedule, scaler, RNG, position...);
            tensors, numbers, strings, lists, tuples and dicts only.
        config: the resolved config (a dataclass), saved as ``config.yaml``.
        keep_last: how many checkpoints to keep.
        extra_models: more networks of the run by file name (``.safetensors``), e.g.
            RAM++'s mask generator; written like ``model`` in the same atomic folder.

    Returns:
        The checkpoint folder.
    """
    root = Path(out_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"iter_{iteration:08d}"
    tmp = root / f".tmp_iter_{iteration:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    meta = {"iteration": iteration, "kind": "model"}
    save_model_weights(model, tmp / MODEL_FILE, extra=meta)
    if ema_model is not None:
        save_model_weights(ema_model, tmp / EMA_FILE, extra={**meta, "kind": "ema"})
    for name, extra_model in (extra_models or {}).items():
        save_model_weights(extra_model, tmp / name, extra={**meta, "kind": Path(name).stem})
    torch.save(dict(state), tmp / STATE_FILE)
    save_config(config, tmp / "config.yaml")
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same iteration (e.g. a resumed run that was done)
        old = root / f".old_iter_{iteration:08d}_{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _fsync_dir(root)
    for stale in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(out_dir: str | Path) -> None:
    """Delete half-written checkpoint folders left by a killed run."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith((".tmp_iter_", ".old_iter_")):
                shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- finding


def find_resume_checkpoint(out_dir: str | Path, resume: bool | str | Path | None) -> Path | None:
    """Decide where a run resumes from.

    Args:
        out_dir: the run folder.
        resume: ``None`` (default: resume when the folder holds a checkpoint), ``True``
            (resume; fail when there is no checkpoint), ``False`` (start fresh; fail when
            the folder already holds checkpoints, so nothing is overwritten) or a
            checkpoint folder to resume from.

    Returns:
        The checkpoint folder, or ``None`` to start from scratch.
    """
    latest = latest_checkpoint(out_dir)
    if resume is None:
        return latest
    if resume is True:
        if latest is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint in {Path(out_dir) / CHECKPOINT_DIR}; "
                "drop --resume to start a new run"
            )
        return latest
    if resume is False:
        if latest is not None:
            raise RunExistsError(
                f"{out_dir} already holds checkpoints (newest: {latest.name}); resume it "
                "(the default), or choose another --out to start a new run"
            )
        return None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"not a training checkpoint folder (no {STATE_FILE}): {path}")
    return path


def readable_checkpoint(out_dir: str | Path, chosen: Path | None, explicit: bool) -> Path | None:
    """``chosen`` if its state and weights can be read; else, for an automatic choice, the
    newest older checkpoint that can (with a warning: a run killed while writing, or a
    disk that filled up, leaves a truncated newest checkpoint).

    Raises:
        CheckpointError: ``chosen`` is unreadable and was given explicitly, or no
            checkpoint of the run can be read; the message says what to do.
    """
    if chosen is None:
        return None
    candidates = [chosen] if explicit else [c for c in reversed(list_checkpoints(out_dir))]
    problems = []
    for ckpt in candidates:
        try:
            _check_readable(ckpt)
        except CheckpointError as e:
            problems.append(str(e))
            logger.warning("%s; trying the checkpoint before it", e)
            continue
        return ckpt
    names = ", ".join(c.name for c in list_checkpoints(out_dir)) or "none"
    if explicit:
        raise CheckpointError(
            f"cannot resume from {chosen}: {problems[-1]}; pick another with --resume "
            f"CHECKPOINT (this run's checkpoints: {names})"
        )
    raise CheckpointError(
        f"no checkpoint of {out_dir} can be read ({problems[0]}); start a new run in "
        "another --out, or delete its checkpoints/ folder and run again"
    )


def _check_readable(ckpt: Path) -> None:
    from safetensors.torch import load_file

    load_training_state(ckpt)
    for path in sorted(ckpt.glob("*.safetensors")):  # the model, its EMA and any others
        if path.is_file():
            try:
                load_file(str(path))
            except Exception as e:
                raise CheckpointError(f"could not read weights {path}: {e}") from None


def load_training_state(ckpt: str | Path) -> dict[str, Any]:
    """The ``state.pt`` of a checkpoint folder (loaded on CPU, tensors only)."""
    path = Path(ckpt) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"could not read training state {path}: {e}") from None

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

Resuming (:func:`resume_point`, :func:`restore_training_state`, :func:`seed_process_rng`)
rebuilds a run exactly where a checkpoint left it: the iteration, the optimiser, schedule,
scaler and RNG states; the data position follows from the iteration. The names of the
run-folder layout (``CHECKPOINT_DIR``, ``MODEL_FILE``, :func:`ramir.checkpoint.latest_checkpoint`,
...) are :mod:`ramir.checkpoint`'s.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml
from torch import nn

from ramir._version import __version__
from ramir.checkpoint import (
    CHECKPOINT_DIR,
    EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_weights,
    resolve_weights_path,
    save_model,
)
from ramir.config import save_config, to_dict
from ramir.errors import RamirError
from ramir.training import distributed as ddp
from ramir.training.config import TrainingConfig
from ramir.training.ema import EMA
from ramir.training.optim import LRSchedule
from ramir.training.runlog import NonFiniteLossError

if TYPE_CHECKING:
    from ramir.models.base import RestorationModel
    from ramir.training.rampp import AdaptiveMasking

__all__ = [
    "RunExistsError",
    "save_training_checkpoint",
    "save_checkpoint",
    "checkpoint_state",
    "find_resume_checkpoint",
    "readable_checkpoint",
    "resume_point",
    "load_training_state",
    "restore_training_state",
    "seed_process_rng",
    "warn_about_resume_differences",
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
    meta: dict[str, Any] = {"iteration": iteration, "kind": "model"}
    if "n_trainable" in state:  # as the final weights record it: what the run trained
        meta["n_trainable"] = int(state["n_trainable"])
    save_model(model, tmp / MODEL_FILE, extra=meta)
    if ema_model is not None:
        save_model(ema_model, tmp / EMA_FILE, extra={**meta, "kind": "ema"})
    for name, extra_model in (extra_models or {}).items():
        save_model(extra_model, tmp / name, extra={**meta, "kind": Path(name).stem})
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


# ----------------------------------------------------------------------------- a run's state


def checkpoint_state(
    iteration: int,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    rng: list[Any],
    *,
    iters_per_epoch: int,
    batch_size: int,
    world_size: int,
    n_trainable: int,
) -> dict[str, Any]:
    """What a checkpoint's ``state.pt`` holds, each value once: the iteration, where the
    data stream stands (derived from it, for readers), the run's shape, the optimiser,
    schedule and scaler states and every process's RNG states."""
    return {
        "iteration": iteration,
        "position": {
            "epoch": iteration // iters_per_epoch,
            "batch_in_epoch": iteration % iters_per_epoch,
            "iters_per_epoch": iters_per_epoch,
            "samples_seen": iteration * batch_size * world_size,
        },
        "world_size": world_size,
        "batch_size": batch_size,
        "n_trainable": n_trainable,
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "ramir_version": __version__,
    }


def save_checkpoint(
    out: Path,
    iteration: int,
    cfg: TrainingConfig,
    info: ddp.DistInfo,
    model: RestorationModel,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    *,
    iters_per_epoch: int,
    n_trainable: int,
    adaptive: AdaptiveMasking | None = None,
) -> None:
    """Write checkpoint ``iteration`` of a run (rank 0; every process hands over its RNG
    states; with RAM++'s ``adaptive`` masking also the generator and its optimiser state).

    Raises:
        NonFiniteLossError: the weights hold NaN/Inf (nothing is written).
    """
    if not bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()):
        raise NonFiniteLossError(
            f"the weights hold NaN/Inf at iteration {iteration}; stopped without "
            f"saving. Last good checkpoint: {latest_checkpoint(out) if info.is_main else ''}"
        )
    rng = ddp.all_gather_objects(get_rng_state(), info)
    if info.is_main:
        state = checkpoint_state(
            iteration, optimizer, schedule, scaler, rng,
            iters_per_epoch=iters_per_epoch, batch_size=cfg.train.batch_size,
            world_size=info.world_size, n_trainable=n_trainable,
        )  # fmt: skip
        if adaptive is not None:
            state["mask_generator"] = adaptive.state_dict()
        save_training_checkpoint(
            out,
            iteration,
            model=model,
            ema_model=ema.module if ema is not None else None,
            state=state,
            config=cfg,
            keep_last=cfg.checkpoint.keep_last,
            extra_models=adaptive.checkpoint_models() if adaptive is not None else None,
        )
    ddp.barrier(info)


# ----------------------------------------------------------------------------- resuming


def resume_point(
    out: Path, resume: bool | str | Path | None, cfg: TrainingConfig, info: ddp.DistInfo
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checkpoint every process resumes from (rank 0 decides) and its ``state.pt``,
    or ``(None, None)``; rank 0 also creates the run folder, removes half-written
    checkpoints of a killed run and warns about settings that changed since the
    checkpoint."""
    ckpt = None
    if info.is_main:
        ckpt = find_resume_checkpoint(out, resume)
        # a truncated newest checkpoint: fall back to the one before
        ckpt = readable_checkpoint(out, ckpt, explicit=not isinstance(resume, (bool, type(None))))
    chosen = ddp.all_gather_objects(str(ckpt) if ckpt else None, info)[0]
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    if not chosen:
        return None, None
    state = load_training_state(chosen)
    if info.is_main:
        warn_about_resume_differences(state, cfg, info, Path(chosen))
    return Path(chosen), state


def restore_training_state(
    ckpt: Path,
    state: Mapping[str, Any],
    model: nn.Module,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    *,
    n_trainable: int,
) -> int:
    """Load a checkpoint into a freshly built run; return the iteration it reached.

    The data position follows from the iteration alone (the stream's sampler); a
    checkpoint written before ``epoch`` was stored only under ``position`` has a
    top-level ``epoch`` too, which is not needed and ignored.
    """
    load_weights(model, ckpt / MODEL_FILE)
    if ema is not None:  # EMA weights (older checkpoints: ema.safetensors), else the model's
        load_weights(ema.module, resolve_weights_path(ckpt, "ema"))
    if int(state.get("n_trainable", n_trainable)) != n_trainable:
        raise ValueError(
            f"cannot resume {ckpt}: it trained {state['n_trainable']} parameters, this run "
            f"selects {n_trainable}; resume with the same layer selection"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as e:
        raise ValueError(
            f"cannot resume {ckpt}: its optimiser state does not fit this run's trainable "
            f"parameters ({e}); resume with the same parameter selection"
        ) from None
    schedule.load_state_dict(state["schedule"])
    scaler.load_state_dict(state["scaler"])
    return int(state["iteration"])


def seed_process_rng(
    state: Mapping[str, Any] | None, seed: int, info: ddp.DistInfo, start_iter: int
) -> None:
    """Restore this process's RNG streams from a checkpoint of the same world size, or
    start one stream per process (a fresh run, or a resume on another world size)."""
    rng_states = state["rng"] if state is not None else None
    if rng_states is not None and len(rng_states) == info.world_size:
        set_rng_state(rng_states[info.rank])
    else:
        torch.manual_seed(seed + 1 + info.rank + start_iter)


def warn_about_resume_differences(
    state: Mapping[str, Any], cfg: TrainingConfig, info: ddp.DistInfo, ckpt: Path
) -> None:
    """Warn about settings that differ from the checkpoint's run (a key the saved config
    lacks counts only when it is not at its default: settings added since then)."""
    if int(state["batch_size"]) != cfg.train.batch_size or int(state["world_size"]) != (
        info.world_size
    ):
        logger.warning(
            "resuming %s (batch %s x %s processes) with batch %s x %s: the data order and "
            "RNG streams will differ from an uninterrupted run",
            ckpt, state["batch_size"], state["world_size"], cfg.train.batch_size,
            info.world_size,
        )  # fmt: skip
    saved_path = ckpt / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        loaded = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, Mapping):
            raise yaml.YAMLError("not a mapping")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        logger.warning(
            "%s is not a readable config (%s); the resumed settings cannot be compared "
            "with the checkpoint's",
            saved_path, type(e).__name__,
        )  # fmt: skip
        return
    saved = _flatten(loaded)
    now = _flatten(to_dict(cfg))
    defaults = _flatten(to_dict(type(cfg)()))
    changed = [
        f"{k} ({saved.get(k)!r} -> {now.get(k)!r})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k) and (k in saved or now.get(k) != defaults.get(k))
    ]
    if changed:
        logger.warning("resuming with changed settings: %s", ", ".join(changed))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out

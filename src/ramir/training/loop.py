"""The training loop: masked pretraining, fine-tuning and plain paired training.

One visible loop (in the spirit of nanoGPT's ``train.py``). Stages differ only by two
injected pieces:

* the **input maker** (``train.input``): ``masked`` pretraining (masked ``lq`` -> ``gt``,
  masked L1), ``whole`` inputs (fine-tuning / paired training, L1), ``masked_gt`` (the
  Table 4 ablation) or ``adaptive`` (RAM++: a mask generator network trained beside the
  model draws the masks; :mod:`ramir.training.rampp`);
* the **parameter selection** (the ``trainable`` argument): every parameter, or a set of
  layers chosen by MAC, e.g.
  ``train(cfg, out, trainable=lambda m: freeze_except(m, layers))``.

Run it on one process, or on several with ``torchrun`` (DistributedDataParallel; rank 0
logs and writes checkpoints). A run writes into ``OUT``:

* ``config.yaml``: the resolved config;
* ``log.jsonl`` (+ ``tb/`` TensorBoard events, ``training_curve.png`` at the end);
* ``checkpoints/iter_XXXXXXXX/``: resumable training state (last ``keep_last`` kept);
* ``model.safetensors`` and, with EMA, ``model_ema.safetensors``: the final weights.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ramir._version import __version__
from ramir.checkpoint import load_model, save_model
from ramir.config import save_config, to_dict
from ramir.data import build_mixture, build_test_set
from ramir.data.transforms import center_crop
from ramir.errors import RamirError, ResourceError
from ramir.evaluation.metrics import psnr
from ramir.masking import apply_mask
from ramir.models import build_model, count_parameters
from ramir.models.base import RestorationModel
from ramir.training import distributed as ddp
from ramir.training.checkpoint import (
    EMA_FILE,
    MODEL_FILE,
    find_resume_checkpoint,
    get_rng_state,
    latest_checkpoint,
    load_training_state,
    load_weights,
    readable_checkpoint,
    remove_stale_temporaries,
    resolve_weights_path,
    save_training_checkpoint,
    set_rng_state,
)
from ramir.training.config import TrainingConfig, TrainSection
from ramir.training.ema import EMA
from ramir.training.inputs import make_input_maker
from ramir.training.loader import BatchDegrader, DevicePrefetcher, StreamSampler, make_loader
from ramir.training.losses import l1_loss, masked_l1_loss
from ramir.training.optim import LRSchedule, build_optimizer
from ramir.training.rampp import AdaptiveMasking
from ramir.training.runlog import RunLogger, plot_training_curve, read_log

__all__ = [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "ParameterSelection",
    "build_val_sets",
]

logger = logging.getLogger(__name__)

ParameterSelection = Callable[[nn.Module], Any]
"""Sets ``requires_grad`` on a bare model's parameters (e.g. ``ramir.attribution.freeze_except``)."""


class NonFiniteLossError(RamirError, RuntimeError):
    """The loss became NaN or Inf; the run stopped before writing another checkpoint."""


@dataclass
class TrainResult:
    """What :func:`train` returns (on every process).

    Attributes:
        out_dir: the run folder.
        iteration: iterations done (``train.total_iter`` unless stopped early).
        model: the trained bare model (on the training device).
        ema_model: its EMA copy, or ``None``.
        loss: the last logged (mean) training loss, or ``None``.
        n_params, n_trainable: parameter element counts.
        checkpoint: the newest checkpoint folder.
        it_per_s: iterations per second after the first step of this session
            (checkpointing and logging included).
        mask_generator: RAM++ pretraining (``train.input: adaptive``): the trained mask
            generator (its EMA copy is ``mask_generator_ema``), else ``None``.
    """

    out_dir: Path
    iteration: int
    model: RestorationModel
    ema_model: RestorationModel | None
    loss: float | None
    n_params: int
    n_trainable: int
    checkpoint: Path | None
    it_per_s: float
    mask_generator: RestorationModel | None = None
    mask_generator_ema: RestorationModel | None = None


def build_val_sets(cfg: TrainingConfig) -> dict[str, Dataset]:
    """The held-out sets validation uses: ``data.test`` (only ``val.sets`` when given)."""
    specs = [t for t in cfg.data.test if not cfg.val.sets or t.name in cfg.val.sets]
    if not specs:
        raise ValueError("val.every > 0 needs held-out sets: add them to data.test")
    return {spec.name: build_test_set(spec, cfg.data) for spec in specs}


def train(
    cfg: TrainingConfig,
    out_dir: str | Path,
    *,
    trainable: ParameterSelection | None = None,
    dataset: Dataset | None = None,
    val_sets: Mapping[str, Dataset] | None = None,
    resume: bool | str | Path | None = None,
    on_step: Callable[[int], Any] | None = None,
) -> TrainResult:
    """Train a model as ``cfg`` says, writing everything into ``out_dir``.

    Args:
        cfg: the resolved config (:func:`ramir.training.load_training_config`).
        out_dir: the run folder (created; rank 0 writes there).
        trainable: parameter selection applied to the bare model after its starting
            weights are loaded (``None`` = train every parameter). Fine-tuning passes
            e.g. ``lambda m: freeze_except(m, layers)``.
        dataset: the training set (items ``{"lq", "gt"}`` ``(3, H, W)`` in [0, 1], and
            optionally ``"index"``); built from ``cfg.data`` when ``None``.
        val_sets: held-out sets by name for ``val.every`` (items ``{"lq", "gt"}``);
            built from ``data.test`` (and ``val.sets``) when ``None``.
        resume: ``None`` resumes when ``out_dir`` holds a checkpoint, ``True`` requires
            one, ``False`` refuses to reuse a folder with checkpoints, or a checkpoint
            folder to resume from.
        on_step: called on every process with the iteration number at the end of each
            iteration (after logging and checkpointing); for tests and hooks.

    Returns:
        A :class:`TrainResult`.

    Raises:
        NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint is kept).
        RuntimeError: CUDA out of memory, with the settings to lower.
    """
    created_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = ddp.init_distributed(cfg.train.device, cfg.train.dist_timeout_s)
    try:
        with contextlib.ExitStack() as closing:  # the loader's workers, the image store
            return _train(
                cfg, Path(out_dir), info, trainable, dataset, val_sets, resume, on_step, closing
            )
    finally:
        if created_group:
            ddp.cleanup_distributed()


def _train(
    cfg: TrainingConfig,
    out: Path,
    info: ddp.DistInfo,
    trainable: ParameterSelection | None,
    dataset: Dataset | None,
    val_sets: Mapping[str, Dataset] | None,
    resume: bool | str | Path | None,
    on_step: Callable[[int], Any] | None,
    closing: contextlib.ExitStack,
) -> TrainResult:
    tc, lc = cfg.train, cfg.logging
    dev = info.device
    precision = _resolve_precision(tc.precision, dev)
    amp_dtype = _autocast_dtype(precision, dev)
    if dev.type == "cuda":
        _set_cuda_flags(tc.tf32, closing)

    # -- where to start: a checkpoint of this run folder, or scratch ----------------------
    ckpt = _resume_checkpoint(out, resume, info)
    state = load_training_state(ckpt) if ckpt is not None else None
    if ckpt is not None and state is not None and info.is_main:
        _warn_about_resume_differences(state, cfg, info, ckpt)

    # -- model, EMA, optimiser (same seed everywhere: identical initial weights) ----------
    torch.manual_seed(tc.seed)
    model = _initial_model(cfg, load_init=state is None)
    if trainable is not None:
        trainable(model)
    n_params = count_parameters(model)
    n_trainable = count_parameters(model, trainable_only=True)
    params = [p for p in model.parameters() if p.requires_grad]
    model.to(dev).train(tc.model_mode == "train")
    ema = EMA(model, cfg.ema.decay) if cfg.ema.decay > 0 else None
    optimizer = build_optimizer(params, cfg.optim)
    schedule = LRSchedule(optimizer, cfg.optim.lr, cfg.schedule, tc.total_iter)
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    start_iter = 0
    if ckpt is not None and state is not None:
        start_iter = _restore_training_state(
            ckpt, state, model, ema, optimizer, schedule, scaler, n_trainable=n_trainable
        )
    # RAM++: the mask generator with its optimiser, schedule and EMA (training/rampp.py)
    adaptive = AdaptiveMasking(cfg, info, ckpt, state) if tc.input == "adaptive" else None
    _seed_process_rng(state, tc.seed, info, start_iter)

    # -- data: one loader for the run over a dataset that is a pure function of the index --
    if dataset is None:
        dataset = build_mixture(cfg.data)
    net: nn.Module = model
    if info.distributed:  # unused trainable parameters turn DDP's search on (a probe)
        probe = None if tc.find_unused_parameters else _input_size(dataset, model)
        net = ddp.wrap_ddp(
            model, info, find_unused=tc.find_unused_parameters, probe_size=probe,
            masked=tc.masked,
        )  # fmt: skip
    if tc.compile:
        net = torch.compile(net)
    stream = _data_stream(dataset, tc, info, start_iter, closing)
    iters_per_epoch = stream.iters_per_epoch
    specs = getattr(dataset, "device_degradations", lambda: [])()
    degrade = BatchDegrader(specs, tc.seed, info.rank)  # data.degrade_on: device
    if cfg.val.every and val_sets is None and info.is_main:
        val_sets = build_val_sets(cfg)
    make_input = make_input_maker(tc, info.rank)
    masked_loss = tc.loss == "masked_l1" or (tc.loss == "auto" and tc.masked)
    norm = model.normalization

    # -- logging ------------------------------------------------------------------------
    log = RunLogger(
        out,
        tc.total_iter,
        start_iter,
        enabled=info.is_main,
        tensorboard=lc.tensorboard,
        progress=lc.progress,
    )
    if info.is_main:
        save_config(cfg, out / "config.yaml")
        log.write(
            f"{'resuming ' + ckpt.name if ckpt else 'training'}: {cfg.model.name} "
            f"{n_params / 1e6:.2f}M params ({n_trainable / 1e6:.3f}M trainable), input "
            f"{tc.input}, loss {'masked L1' if masked_loss else 'L1'}, {info.world_size} x "
            f"batch {tc.batch_size} on {dev}, {precision}, {iters_per_epoch} it/epoch"
        )

    # -- the loop -----------------------------------------------------------------------
    iteration = start_iter
    losses = _LossMeter(dev, iteration)
    last_loss: float | None = None
    first_step_time: float | None = None
    first_step_iter = start_iter
    waited = 0.0  # seconds waiting for data at the last log record
    while iteration < tc.total_iter:
        batch = stream.next()  # lq, gt already on the device (CUDA: copied ahead)
        iteration += 1
        epoch = (iteration - 1) // iters_per_epoch
        lr = schedule.step(iteration)
        lq = norm.normalize(degrade(batch, iteration) if degrade else batch["lq"])
        gt = norm.normalize(batch["gt"])
        inp, target, mask = make_input(lq, gt, iteration, batch.get("index"))

        # forward, backward, update (the loader's workers checked the batch finite)
        try:
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if adaptive is not None:  # RAM++: the generator draws the mask
                    pred, mask, loss = adaptive.forward(net, lq, gt, iteration)
                else:
                    pred = net(inp, mask, check_finite=False)
            pred = pred.float()
            if adaptive is None:
                loss = masked_l1_loss(pred, target, mask) if masked_loss else l1_loss(pred, target)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(optimizer)
            if adaptive is not None:
                adaptive.step(scaler, tc.grad_clip)
            scaler.update()
        except torch.OutOfMemoryError:
            raise ResourceError(_oom_message(cfg, info, lq, iteration)) from None
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        losses.add(loss)

        # log (and check the loss) every log_every steps and before every checkpoint
        save_now = iteration % cfg.checkpoint.every == 0 or iteration == tc.total_iter
        if iteration % lc.log_every == 0 or save_now:
            steps = iteration - losses.since_iter
            last_loss, it_per_s = losses.flush(iteration, info, out)
            rec = {"iter": iteration, "epoch": epoch, "loss": last_loss, "lr": lr}
            # milliseconds per step this process waited for its data (0: data kept up)
            rec["data_ms"] = round(1e3 * (stream.wait_s - waited) / max(steps, 1), 3)
            waited = stream.wait_s
            if adaptive is not None:  # l_pix, l_prob and the generator's rate
                rec.update(adaptive.flush(info))
            log.log({"kind": "train", **rec, "it_per_s": it_per_s})
            log.progress(iteration, loss=last_loss, lr=lr)
        else:
            log.progress(iteration)
        if lc.image_every and iteration % lc.image_every == 0 and info.is_main:
            _log_images(log, iteration, model, inp, mask, pred, target, lc.n_images)
        if cfg.val.every and iteration % cfg.val.every == 0:
            if info.is_main:
                assert val_sets is not None
                val_model = ema.module if (ema is not None and cfg.val.use_ema) else model
                _log_validation(log, iteration, val_model, val_sets, cfg, dev)
                model.train(tc.model_mode == "train")
            ddp.barrier(info)
        if save_now:
            _save_checkpoint(
                out, iteration, cfg, info, model, ema, optimizer, schedule, scaler,
                iters_per_epoch=iters_per_epoch, n_trainable=n_trainable, adaptive=adaptive,
            )  # fmt: skip

        if first_step_time is None:
            first_step_time = time.perf_counter()
            first_step_iter = iteration
        if on_step is not None:
            on_step(iteration)

    # -- the end: final weights and the curve -------------------------------------------
    it_per_s = 0.0
    if first_step_time is not None and iteration > first_step_iter:
        it_per_s = (iteration - first_step_iter) / (time.perf_counter() - first_step_time)
    if info.is_main:
        extra = {"iteration": iteration, "n_trainable": n_trainable}
        save_model(model, out / MODEL_FILE, extra={**extra, "kind": "model"})
        if ema is not None:
            save_model(ema.module, out / EMA_FILE, extra={**extra, "kind": "ema"})
        if adaptive is not None:
            adaptive.save_final(out, extra)
        if lc.plot:
            plot_training_curve(read_log(out), out / "training_curve.png", title=str(out.name))
        log.write(f"done: {iteration} iterations, final weights in {out}")
    log.close()
    ddp.barrier(info)
    return TrainResult(
        out_dir=out,
        iteration=iteration,
        model=model,
        ema_model=ema.module if ema is not None else None,
        loss=last_loss,
        n_params=n_params,
        n_trainable=n_trainable,
        checkpoint=latest_checkpoint(out) if info.is_main else None,
        it_per_s=it_per_s,
        mask_generator=adaptive.model if adaptive is not None else None,
        mask_generator_ema=adaptive.ema.module if adaptive and adaptive.ema else None,
    )


# ----------------------------------------------------------------------------- resume


def _initial_model(cfg: TrainingConfig, load_init: bool) -> RestorationModel:
    """The network of ``model.name``/``model.args``, with ``model.init``'s weights when
    ``load_init`` (a resumed run replaces them anyway).

    With ``model.init`` and no ``model.args`` the file decides the network: the
    arguments it records (ramir) or its weights imply (a release: sizes, input
    convention), so a released checkpoint fine-tunes with ``model: {name, init}``; it
    is then read once, by :func:`ramir.checkpoint.load_model`.
    """
    if cfg.model.init and not cfg.model.args:
        path = resolve_weights_path(cfg.model.init, cfg.model.init_weights)
        return load_model(path, arch=cfg.model.name)
    model = build_model(cfg.model.name, **cfg.model.args)
    if cfg.model.init and load_init:
        load_weights(model, resolve_weights_path(cfg.model.init, cfg.model.init_weights))
    return model


def _resume_checkpoint(
    out: Path, resume: bool | str | Path | None, info: ddp.DistInfo
) -> Path | None:
    """The checkpoint every process resumes from (rank 0 decides), or ``None``; rank 0
    also creates the run folder and removes half-written checkpoints of a killed run."""
    ckpt = None
    if info.is_main:
        ckpt = find_resume_checkpoint(out, resume)
        # a truncated newest checkpoint: fall back to the one before
        ckpt = readable_checkpoint(out, ckpt, explicit=not isinstance(resume, (bool, type(None))))
    chosen = ddp.all_gather_objects(str(ckpt) if ckpt else None, info)[0]
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    return Path(chosen) if chosen else None


def _restore_training_state(
    ckpt: Path,
    state: Mapping[str, Any],
    model: RestorationModel,
    ema: EMA | None,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    *,
    n_trainable: int,
) -> int:
    """Load a checkpoint into a freshly built run; return the iteration it reached.

    The data position follows from the iteration alone (:class:`StreamSampler`); a checkpoint
    written before ``epoch`` was stored only under ``position`` has a top-level
    ``epoch`` too, which is not needed and ignored.
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


def _seed_process_rng(
    state: Mapping[str, Any] | None, seed: int, info: ddp.DistInfo, start_iter: int
) -> None:
    """Restore this process's RNG streams from a checkpoint of the same world size, or
    start one stream per process (a fresh run, or a resume on another world size)."""
    rng_states = state["rng"] if state is not None else None
    if rng_states is not None and len(rng_states) == info.world_size:
        set_rng_state(rng_states[info.rank])
    else:
        torch.manual_seed(seed + 1 + info.rank + start_iter)


def _warn_about_resume_differences(
    state: Mapping[str, Any], cfg: TrainingConfig, info: ddp.DistInfo, ckpt: Path
) -> None:
    """Warn about settings that differ from the checkpoint's run."""
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
    changed = [
        f"{k} ({saved.get(k)!r} -> {now.get(k)!r})"
        for k in sorted(set(saved) | set(now))
        if saved.get(k) != now.get(k)
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


# ----------------------------------------------------------------------------- checkpoint


def _checkpoint_state(
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


def _save_checkpoint(
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
    """Write checkpoint ``iteration`` (rank 0; every process hands over its RNG states;
    with RAM++'s ``adaptive`` masking also the generator and its optimiser state).

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
        state = _checkpoint_state(
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


# ----------------------------------------------------------------------------- data


def _data_stream(
    dataset: Dataset,
    tc: TrainSection,
    info: ddp.DistInfo,
    start_iter: int,
    closing: contextlib.ExitStack,
) -> _Stream:
    """This process's batches from iteration ``start_iter + 1`` on, from one persistent
    loader (:mod:`ramir.training.loader`), ``lq``/``gt`` on the device.

    The order is a pure function of (seed, epoch): resuming skips the batches already
    done without loading them. The workers' base seed comes from a generator seeded by
    ``(seed, rank)``, not from the global RNG, whose stream (dropout, stochastic depth)
    must not depend on where a run was resumed. A training mixture first decodes its
    cached photos into the image store its workers share (``preload``). Each batch is
    checked finite in the workers, before it reaches the device: a check in every
    forward would make a GPU wait for the host at each step.
    """
    sampler = StreamSampler(
        len(dataset),  # type: ignore[arg-type]
        tc.batch_size,
        rank=info.rank,
        world_size=info.world_size,
        seed=tc.seed,
        start_iter=start_iter,
    )
    preload = getattr(dataset, "preload", None)
    if callable(preload) and getattr(dataset, "store", False) is None:
        preload()  # the store is removed when training ends
        closing.callback(dataset.close)  # type: ignore[attr-defined]
    loader = make_loader(
        dataset,
        sampler,
        num_workers=tc.num_workers,
        pin_memory=info.device.type == "cuda",
        seed=(tc.seed + 1000 * info.rank) * 100_003,
    )
    stream = _Stream(loader, info.device, sampler.iters_per_epoch)
    closing.callback(stream.close)
    return stream


class _Stream(DevicePrefetcher):
    """The prefetcher, with the epoch length the loop reports."""

    def __init__(self, loader: DataLoader, device: torch.device, iters_per_epoch: int) -> None:
        super().__init__(loader, device)
        self.iters_per_epoch = iters_per_epoch


# ----------------------------------------------------------------------------- reporting


class _LossMeter:
    """Sums the step losses on the device (no host sync per step) until :meth:`flush`."""

    def __init__(self, device: torch.device, iteration: int) -> None:
        self.acc = torch.zeros(2, device=device)  # [sum of losses, non-finite losses]
        self.since_iter, self.since_time = iteration, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.acc += torch.stack([loss.detach(), (~torch.isfinite(loss.detach())).float()])

    def flush(self, iteration: int, info: ddp.DistInfo, out: Path) -> tuple[float, float]:
        """The mean loss over every process since the last flush, and iterations/s.

        Raises:
            NonFiniteLossError: a loss since the last flush was NaN/Inf.
        """
        total, n_bad = ddp.all_reduce_sum(self.acc.clone(), info).tolist()
        steps = iteration - self.since_iter
        if n_bad > 0:
            good = latest_checkpoint(out) if info.is_main else None
            raise NonFiniteLossError(
                f"the loss became NaN/Inf between iterations {self.since_iter + 1} and "
                f"{iteration}; stopped. Last good checkpoint: {good or 'none'}. Resume from "
                "it with a lower optim.lr, train.grad_clip > 0 or train.precision=fp32"
            )
        now = time.perf_counter()
        rate = steps / max(now - self.since_time, 1e-9)
        self.acc.zero_()
        self.since_iter, self.since_time = iteration, now
        return total / (steps * info.world_size), rate


def _log_images(
    log: RunLogger,
    iteration: int,
    model: RestorationModel,
    inp: torch.Tensor,
    mask: torch.Tensor | None,
    pred: torch.Tensor,
    target: torch.Tensor,
    n_images: int,
) -> None:
    """Input (as the network saw it), prediction and target side by side."""
    shown = inp if mask is None else apply_mask(inp, mask, model.mask_token_for(inp))
    k = min(n_images, inp.shape[0])
    trip = torch.cat([shown[:k], pred[:k].detach(), target[:k]], dim=-1)
    log.images("train/lq_pred_gt", model.normalization.denormalize(trip.float()), iteration)


def _log_validation(
    log: RunLogger,
    iteration: int,
    model: RestorationModel,
    val_sets: Mapping[str, Dataset],
    cfg: TrainingConfig,
    dev: torch.device,
) -> None:
    """Validate on every held-out set and log the PSNRs (rank 0)."""
    scores = {
        name: _validate(model, ds, cfg.val.max_images, cfg.val.crop, dev)
        for name, ds in val_sets.items()
    }
    mean = sum(scores.values()) / len(scores)
    per_set = {f"psnr/{k}": v for k, v in scores.items()}
    log.log({"kind": "val", "iter": iteration, "psnr": mean, **per_set})
    log.write(f"iter {iteration}: validation PSNR {mean:.2f} dB")


@torch.no_grad()
def _validate(
    model: RestorationModel, dataset: Dataset, max_images: int, crop: int | None, dev: torch.device
) -> float:
    """Mean PSNR (RAM convention: uint8, RGB, 4-pixel border crop) of the first images."""
    was_training = model.training
    model.eval()
    values = []
    for i in range(min(max_images, len(dataset))):  # type: ignore[arg-type]
        item = dataset[i]
        lq, gt = center_crop(item["lq"], crop), center_crop(item["gt"], crop)
        x = model.normalization.normalize(lq.unsqueeze(0).to(dev))
        pred = model.normalization.denormalize(model(x)).clamp(0, 1)
        values.append(float(psnr(pred[0].float().cpu(), gt.cpu())))
    model.train(was_training)
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("inf")


def _resolve_precision(precision: str, dev: torch.device) -> str:
    """``train.precision`` with ``auto`` decided: bf16 on a CUDA device that has it."""
    if precision != "auto":
        return precision
    return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def _set_cuda_flags(tf32: bool, closing: contextlib.ExitStack) -> None:
    """cuDNN autotuning on, TF32 as ``train.tf32`` says, for this run (restored after)."""
    old = (
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32

    def restore() -> None:
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        ) = old

    closing.callback(restore)


def _input_size(dataset: Dataset, model: RestorationModel) -> tuple[int, int]:
    """``(H, W)`` of the training set's first item, at least the model's minimum."""
    h, w = dataset[0]["lq"].shape[-2:]
    m = max(model.min_size, 1)
    return max(int(h), m), max(int(w), m)


def _autocast_dtype(precision: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (``None``: fp32, no autocast)."""
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(
            "train.precision=fp16 needs a CUDA device (its gradient scaler is CUDA-only); "
            "use train.precision=bf16 or fp32 on CPU"
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _oom_message(cfg: TrainingConfig, info: ddp.DistInfo, lq: torch.Tensor, iteration: int) -> str:
    h, w = lq.shape[-2:]
    tips = [
        f"train.batch_size (now {cfg.train.batch_size} per GPU)",
        f"the data crop size (now {h}x{w})",
    ]
    if _resolve_precision(cfg.train.precision, info.device) == "fp32":
        tips.append("or set train.precision=bf16")
    return (
        f"CUDA out of memory at iteration {iteration} on {info.device} "
        f"({cfg.model.name}, {cfg.train.precision}): lower " + ", ".join(tips)
    )

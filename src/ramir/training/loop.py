"""The training loop: masked pretraining, fine-tuning and plain paired training.

One visible loop (in the spirit of nanoGPT's ``train.py``): :func:`_train` reads as the
paper's recipe, one step after the other. Stages differ only by injected pieces:

* the **input maker** (``train.input``): ``masked`` pretraining (masked ``lq`` -> ``gt``,
  masked L1), ``whole`` inputs (fine-tuning / paired training, L1 or the PSNR loss),
  ``masked_gt`` (the Table 4 ablation) or ``adaptive`` (RAM++: a mask generator network
  trained beside the model draws the masks; :mod:`ramir.training.rampp`);
* the **parameter selection** (the ``trainable`` argument): every parameter, or a set of
  layers chosen by MAC, e.g.
  ``train(cfg, out, trainable=lambda m: freeze_except(m, layers))``;
* the network's **forward arguments** (:mod:`ramir.training.model`): ``(inp, mask)``, or,
  for RAM++'s RestormerRFR, ``(lq, features)`` with the features of a frozen DINOv2.

The rest lives beside it: the trained parts and one optimiser step
(:mod:`ramir.training.step`), the data stream (:mod:`ramir.training.data`), checkpoints
and resuming (:mod:`ramir.training.checkpoint`), validation
(:mod:`ramir.training.validate`), logging (:mod:`ramir.training.runlog`).

Run it on one process, or on several with ``torchrun`` (DistributedDataParallel; rank 0
logs and writes checkpoints). A run writes into ``OUT``:

* ``config.yaml``: the resolved config;
* ``log.jsonl`` (+ ``tb/`` TensorBoard events, ``training_curve.png`` at the end);
* ``checkpoints/iter_XXXXXXXX/``: resumable training state (last ``keep_last`` kept);
* ``model.safetensors`` and, with EMA, ``model_ema.safetensors``: the final weights.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ramir.checkpoint import EMA_FILE, MODEL_FILE, latest_checkpoint, save_model
from ramir.config import save_config
from ramir.data import build_mixture
from ramir.models.base import RestorationModel
from ramir.training import distributed as ddp
from ramir.training.checkpoint import resume_point, save_checkpoint
from ramir.training.config import TrainingConfig
from ramir.training.data import BatchDegrader, Stream, data_stream
from ramir.training.inputs import make_input_maker
from ramir.training.runlog import (
    LossMeter,
    RunLogger,
    log_images,
    plot_training_curve,
    read_log,
)
from ramir.training.step import (
    ParameterSelection,
    Run,
    Step,
    autocast_dtype,
    resolve_precision,
    set_cuda_flags,
    wrap_network,
)
from ramir.training.validate import build_val_sets, log_validation

__all__ = ["train", "TrainResult"]


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
    precision = resolve_precision(tc.precision, info.device)
    amp_dtype = autocast_dtype(precision, info.device)
    if info.device.type == "cuda":
        set_cuda_flags(tc.tf32, closing)

    # where to start (a checkpoint of this run folder, or scratch); the model, its EMA,
    # optimiser and schedule (same seed everywhere: identical initial weights)
    ckpt, state = resume_point(out, resume, cfg, info)
    run = Run(cfg, info, trainable, ckpt, state)

    # the data: one loader for the run over a dataset that is a pure function of the index
    if dataset is None:
        dataset = build_mixture(cfg.data)
    net = wrap_network(run, dataset, cfg, info)
    stream = data_stream(dataset, tc, info, run.start_iter, closing)
    specs = getattr(dataset, "device_degradations", lambda: [])()
    degrade = BatchDegrader(specs, tc.seed, info.rank)  # data.degrade_on: device
    if cfg.val.every and val_sets is None and info.is_main:
        val_sets = build_val_sets(cfg)
    make_input = make_input_maker(tc, info.rank)
    step = Step(net, run, amp_dtype)
    log = _start_log(out, cfg, info, run, stream, precision, ckpt)
    norm = run.model.normalization

    # the loop
    iteration, meter, clock = run.start_iter, LossMeter(info.device, run.start_iter), _Clock()
    while iteration < tc.total_iter:
        batch = stream.next()  # lq, gt already on the device (CUDA: copied ahead)
        iteration += 1
        lr = run.schedule.step(iteration)
        lq = norm.normalize(degrade(batch, iteration) if degrade else batch["lq"])
        gt = norm.normalize(batch["gt"])
        inp, target, mask = make_input(lq, gt, iteration, batch.get("index"))
        pred, mask, loss = step(inp, target, mask, lq, gt, iteration)  # forward, backward, update
        meter.add(loss)

        # log (and check the loss) every log_every steps and before every checkpoint
        save_now = iteration % cfg.checkpoint.every == 0 or iteration == tc.total_iter
        if iteration % lc.log_every == 0 or save_now:
            clock.last_loss = _log_train(log, meter, clock, stream, run, info, out, iteration, lr)
        else:
            log.progress(iteration)
        if lc.image_every and iteration % lc.image_every == 0 and info.is_main:
            log_images(log, iteration, run.model, inp, mask, pred, target, lc.n_images)
        if cfg.val.every and iteration % cfg.val.every == 0:
            _validate(log, iteration, run, val_sets, cfg, info)
        if save_now:
            save_checkpoint(
                out, iteration, cfg, info, run.model, run.ema, run.optimizer, run.schedule,
                run.scaler, iters_per_epoch=stream.iters_per_epoch, n_trainable=run.n_trainable,
                adaptive=run.adaptive,
            )  # fmt: skip
        clock.tick(iteration)
        if on_step is not None:
            on_step(iteration)
    return _finish(out, cfg, info, run, log, iteration, clock)


# ----------------------------------------------------------------------------- reporting


class _Clock:
    """Iterations per second after the first step of this session; the last logged loss."""

    def __init__(self) -> None:
        self.first_time: float | None = None
        self.first_iter = 0
        self.last_loss: float | None = None
        self.waited = 0.0  # seconds waiting for data at the last log record

    def tick(self, iteration: int) -> None:
        if self.first_time is None:
            self.first_time, self.first_iter = time.perf_counter(), iteration

    def rate(self, iteration: int) -> float:
        if self.first_time is None or iteration <= self.first_iter:
            return 0.0
        return (iteration - self.first_iter) / (time.perf_counter() - self.first_time)


def _start_log(
    out: Path,
    cfg: TrainingConfig,
    info: ddp.DistInfo,
    run: Run,
    stream: Stream,
    precision: str,
    ckpt: Path | None,
) -> RunLogger:
    """The run's logger; rank 0 saves the config and says what is trained how."""
    tc, lc = cfg.train, cfg.logging
    log = RunLogger(
        out,
        tc.total_iter,
        run.start_iter,
        enabled=info.is_main,
        tensorboard=lc.tensorboard,
        progress=lc.progress,
    )
    if info.is_main:
        save_config(cfg, out / "config.yaml")
        log.write(
            f"{'resuming ' + ckpt.name if ckpt else 'training'}: {cfg.model.name} "
            f"{run.n_params / 1e6:.2f}M params ({run.n_trainable / 1e6:.3f}M trainable), input "
            f"{tc.input}, loss {_LOSS_NAMES[run.loss_kind]}, {info.world_size} x "
            f"batch {tc.batch_size} on {info.device}, {precision}, "
            f"{stream.iters_per_epoch} it/epoch"
        )
    return log


def _log_train(
    log: RunLogger,
    meter: LossMeter,
    clock: _Clock,
    stream: Stream,
    run: Run,
    info: ddp.DistInfo,
    out: Path,
    iteration: int,
    lr: float,
) -> float:
    """One ``train`` record (the mean loss since the last, checked finite); returns the loss."""
    steps = iteration - meter.since_iter
    loss, it_per_s = meter.flush(iteration, info, out)
    epoch = (iteration - 1) // stream.iters_per_epoch
    rec: dict[str, Any] = {"iter": iteration, "epoch": epoch, "loss": loss, "lr": lr}
    # milliseconds per step this process waited for its data (0: data kept up)
    rec["data_ms"] = round(1e3 * (stream.wait_s - clock.waited) / max(steps, 1), 3)
    clock.waited = stream.wait_s
    if run.adaptive is not None:  # l_pix, l_prob and the generator's rate
        rec.update(run.adaptive.flush(info))
    log.log({"kind": "train", **rec, "it_per_s": it_per_s})
    log.progress(iteration, loss=loss, lr=lr)
    return loss


def _validate(
    log: RunLogger,
    iteration: int,
    run: Run,
    val_sets: Mapping[str, Dataset] | None,
    cfg: TrainingConfig,
    info: ddp.DistInfo,
) -> None:
    """Rank 0 validates (the EMA weights with ``val.use_ema``); the others wait."""
    if info.is_main:
        assert val_sets is not None
        ema = run.ema
        model = ema.module if (ema is not None and cfg.val.use_ema) else run.model
        log_validation(log, iteration, model, val_sets, cfg, info.device, run.args)
        run.model.train(cfg.train.model_mode == "train")
    ddp.barrier(info)


def _finish(
    out: Path,
    cfg: TrainingConfig,
    info: ddp.DistInfo,
    run: Run,
    log: RunLogger,
    iteration: int,
    clock: _Clock,
) -> TrainResult:
    """The final weights (rank 0) and the curve; the result."""
    it_per_s = clock.rate(iteration)
    ema, adaptive = run.ema, run.adaptive
    if info.is_main:
        extra = {"iteration": iteration, "n_trainable": run.n_trainable}
        save_model(run.model, out / MODEL_FILE, extra={**extra, "kind": "model"})
        if ema is not None:
            save_model(ema.module, out / EMA_FILE, extra={**extra, "kind": "ema"})
        if adaptive is not None:
            adaptive.save_final(out, extra)
        if cfg.logging.plot:
            plot_training_curve(read_log(out), out / "training_curve.png", title=str(out.name))
        log.write(f"done: {iteration} iterations, final weights in {out}")
    log.close()
    ddp.barrier(info)
    return TrainResult(
        out_dir=out,
        iteration=iteration,
        model=run.model,
        ema_model=ema.module if ema is not None else None,
        loss=clock.last_loss,
        n_params=run.n_params,
        n_trainable=run.n_trainable,
        checkpoint=latest_checkpoint(out) if info.is_main else None,
        it_per_s=it_per_s,
        mask_generator=adaptive.model if adaptive is not None else None,
        mask_generator_ema=adaptive.ema.module if adaptive and adaptive.ema else None,
    )


_LOSS_NAMES = {"masked_l1": "masked L1", "psnr": "PSNR", "l1": "L1"}

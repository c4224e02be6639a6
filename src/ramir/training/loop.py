"""The training loop: masked pretraining, fine-tuning and plain paired training.

One visible loop (in the spirit of nanoGPT's ``train.py``). Stages differ only by two
injected pieces:

* the **input maker** (``train.input``): ``masked`` pretraining (masked ``lq`` -> ``gt``,
  masked L1), ``whole`` inputs (fine-tuning / paired training, L1) or ``masked_gt`` (the
  Table 4 ablation);
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

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ramir import __version__
from ramir.checkpoint import save_model
from ramir.config import save_config, to_dict
from ramir.data import DataConfig, build_mixture, build_test_set
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
from ramir.training.config import TrainingConfig
from ramir.training.ema import EMA
from ramir.training.inputs import make_input_maker
from ramir.training.losses import l1_loss, masked_l1_loss
from ramir.training.optim import LRSchedule, build_optimizer
from ramir.training.runlog import RunLogger, plot_training_curve, read_log

__all__ = [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "ParameterSelection",
    "build_dataset",
    "build_val_sets",
]

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


def build_dataset(data_cfg: DataConfig) -> Dataset:
    """The training stream of a ``data:`` section (the data package's task mixture)."""
    return build_mixture(data_cfg)


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
        return _train(cfg, Path(out_dir), info, trainable, dataset, val_sets, resume, on_step)
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
) -> TrainResult:
    tc, lc = cfg.train, cfg.logging
    dev = info.device
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tc.precision]
    if tc.precision == "fp16" and dev.type != "cuda":
        raise ValueError(
            "train.precision=fp16 needs a CUDA device (its gradient scaler is CUDA-only); "
            "use train.precision=bf16 or fp32 on CPU"
        )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # -- where to start: a checkpoint of this run folder, or scratch ----------------------
    ckpt = find_resume_checkpoint(out, resume) if info.is_main else None
    if info.is_main:  # a truncated newest checkpoint: fall back to the one before
        ckpt = readable_checkpoint(out, ckpt, explicit=not isinstance(resume, (bool, type(None))))
    ckpt = ddp.all_gather_objects(str(ckpt) if ckpt else None, info)[0]
    ckpt = Path(ckpt) if ckpt else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
    state = load_training_state(ckpt) if ckpt is not None else None
    if state is not None:
        _check_resume(state, cfg, info, ckpt)

    # -- model, EMA, optimiser (same seed everywhere: identical initial weights) ----------
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model.name, **cfg.model.args)
    if cfg.model.init and state is None:
        load_weights(model, resolve_weights_path(cfg.model.init, cfg.model.init_weights))
    if trainable is not None:
        trainable(model)
    n_params = count_parameters(model)
    n_trainable = count_parameters(model, trainable_only=True)
    params = [p for p in model.parameters() if p.requires_grad]
    model.to(dev).train(tc.model_mode == "train")
    ema = EMA(model, cfg.ema.decay) if cfg.ema.decay > 0 else None
    optimizer = build_optimizer(params, cfg.optim)
    schedule = LRSchedule(optimizer, cfg.optim.lr, cfg.schedule, tc.total_iter)
    scaler = torch.amp.GradScaler(dev.type, enabled=tc.precision == "fp16")
    start_iter = 0
    if state is not None:
        assert ckpt is not None
        load_weights(model, ckpt / MODEL_FILE)
        if ema is not None:
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
        start_iter = int(state["iteration"])
    rng_states = state["rng"] if state is not None else None
    if rng_states is not None and len(rng_states) == info.world_size:
        set_rng_state(rng_states[info.rank])
    else:  # a fresh run (or another world size): one stream per process
        torch.manual_seed(tc.seed + 1 + info.rank + start_iter)
    net: nn.Module = model
    if info.distributed:
        net = DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=tc.find_unused_parameters,
        )

    # -- data: a distributed sampler over a dataset that is a pure function of the index --
    if dataset is None:
        dataset = build_dataset(cfg.data)
    sampler = DistributedSampler(
        dataset,
        num_replicas=info.world_size,
        rank=info.rank,
        shuffle=True,
        seed=tc.seed,
        drop_last=True,
    )
    iters_per_epoch = len(sampler) // tc.batch_size
    if iters_per_epoch < 1:
        raise ValueError(
            f"the training set has {len(dataset)} images, fewer than one global batch "  # type: ignore[arg-type]
            f"(train.batch_size {tc.batch_size} x {info.world_size} processes); "
            "lower train.batch_size or use more data"
        )
    batches = _batches(
        dataset, sampler, tc.batch_size, tc.num_workers, start_iter, iters_per_epoch, dev,
        seed=tc.seed + 1000 * info.rank,
    )  # fmt: skip
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
            f"batch {tc.batch_size} on {dev}, {tc.precision}, {iters_per_epoch} it/epoch"
        )

    # -- the loop -----------------------------------------------------------------------
    iteration = start_iter
    acc = torch.zeros(2, device=dev)  # [sum of losses, number of non-finite losses]
    last_flush_iter, last_flush_time = iteration, time.perf_counter()
    last_loss: float | None = None
    first_step_time: float | None = None
    first_step_iter = start_iter
    epoch = start_iter // iters_per_epoch
    while iteration < tc.total_iter:
        epoch, batch = next(batches)
        iteration += 1
        lr = schedule.step(iteration)
        lq = norm.normalize(batch["lq"].to(dev, non_blocking=True))
        gt = norm.normalize(batch["gt"].to(dev, non_blocking=True))
        inp, target, mask = make_input(lq, gt, iteration, batch.get("index"))

        try:
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = net(inp, mask)
            pred = pred.float()
            loss = masked_l1_loss(pred, target, mask) if masked_loss else l1_loss(pred, target)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        except torch.OutOfMemoryError:
            raise ResourceError(_oom_message(cfg, info, lq, iteration)) from None
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        acc += torch.stack([loss.detach(), (~torch.isfinite(loss.detach())).float()])

        # log (and check the loss) every log_every steps and before every checkpoint
        save_now = iteration % cfg.checkpoint.every == 0 or iteration == tc.total_iter
        if iteration % lc.log_every == 0 or save_now:
            stats = ddp.all_reduce_sum(acc.clone(), info).tolist()
            steps = iteration - last_flush_iter
            if stats[1] > 0:
                good = latest_checkpoint(out) if info.is_main else None
                raise NonFiniteLossError(
                    f"the loss became NaN/Inf between iterations {last_flush_iter + 1} and "
                    f"{iteration}; stopped. Last good checkpoint: {good or 'none'}. Resume from "
                    "it with a lower optim.lr, train.grad_clip > 0 or train.precision=fp32"
                )
            now = time.perf_counter()
            last_loss = stats[0] / (steps * info.world_size)
            rec = {
                "kind": "train",
                "iter": iteration,
                "epoch": epoch,
                "loss": last_loss,
                "lr": lr,
                "it_per_s": steps / max(now - last_flush_time, 1e-9),
            }
            log.log(rec)
            log.progress(iteration, loss=last_loss, lr=lr)
            acc.zero_()
            last_flush_iter, last_flush_time = iteration, now
        else:
            log.progress(iteration)

        if lc.image_every and iteration % lc.image_every == 0 and info.is_main:
            shown = inp if mask is None else apply_mask(inp, mask, model.mask_token_for(inp))
            k = min(lc.n_images, inp.shape[0])
            trip = torch.cat([shown[:k], pred[:k].detach(), target[:k]], dim=-1)
            log.images("train/lq_pred_gt", norm.denormalize(trip.float()), iteration)

        if cfg.val.every and iteration % cfg.val.every == 0:
            if info.is_main:
                assert val_sets is not None
                val_model = ema.module if (ema is not None and cfg.val.use_ema) else model
                scores = {
                    name: _validate(val_model, ds, cfg.val.max_images, cfg.val.crop, dev)
                    for name, ds in val_sets.items()
                }
                psnr = sum(scores.values()) / len(scores)
                per_set = {f"psnr/{k}": v for k, v in scores.items()}
                log.log({"kind": "val", "iter": iteration, "psnr": psnr, **per_set})
                log.write(f"iter {iteration}: validation PSNR {psnr:.2f} dB")
                model.train(tc.model_mode == "train")
            ddp.barrier(info)

        if save_now:
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise NonFiniteLossError(
                    f"the weights hold NaN/Inf at iteration {iteration}; stopped without "
                    f"saving. Last good checkpoint: {latest_checkpoint(out) if info.is_main else ''}"
                )
            rng = ddp.all_gather_objects(get_rng_state(), info)
            if info.is_main:
                state_out = {
                    "iteration": iteration,
                    "epoch": epoch,
                    "position": {
                        "epoch": iteration // iters_per_epoch,
                        "batch_in_epoch": iteration % iters_per_epoch,
                        "iters_per_epoch": iters_per_epoch,
                        "samples_seen": iteration * tc.batch_size * info.world_size,
                    },
                    "world_size": info.world_size,
                    "batch_size": tc.batch_size,
                    "n_trainable": n_trainable,
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng,
                    "ramir_version": __version__,
                }
                save_training_checkpoint(
                    out,
                    iteration,
                    model=model,
                    ema_model=ema.module if ema is not None else None,
                    state=state_out,
                    config=cfg,
                    keep_last=cfg.checkpoint.keep_last,
                )
            ddp.barrier(info)
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
    )


# ----------------------------------------------------------------------------- helpers


def _batches(
    dataset: Dataset,
    sampler: DistributedSampler,
    batch_size: int,
    num_workers: int,
    start_iter: int,
    iters_per_epoch: int,
    device: torch.device,
    seed: int = 0,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Endless ``(epoch, batch)`` pairs starting at global iteration ``start_iter``.

    The order is a pure function of (seed, epoch): resuming skips the indices of the
    batches already done without loading them. Each epoch's loader draws its workers'
    base seed from its own generator seeded by ``(seed, epoch)``, not from the global RNG:
    otherwise a run resumed mid-epoch, which creates that epoch's loader at another
    point of the global stream, would shift every later draw (dropout, stochastic depth,
    masks) against an uninterrupted run.
    """
    epoch, skip = divmod(start_iter, iters_per_epoch)
    while True:
        sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        indices = list(sampler)[skip * batch_size : iters_per_epoch * batch_size]
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=indices,
            drop_last=True,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        )
        for batch in loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0


def _check_resume(
    state: dict[str, Any], cfg: TrainingConfig, info: ddp.DistInfo, ckpt: Path
) -> None:
    """Warn about settings that differ from the checkpoint's run (rank 0 prints)."""
    if not info.is_main:
        return
    if int(state["batch_size"]) != cfg.train.batch_size or int(state["world_size"]) != (
        info.world_size
    ):
        print(
            f"warning: resuming {ckpt} (batch {state['batch_size']} x {state['world_size']} "
            f"processes) with batch {cfg.train.batch_size} x {info.world_size}: the data order "
            "and RNG streams will differ from an uninterrupted run",
            flush=True,
        )
    saved_path = ckpt / "config.yaml"
    if saved_path.is_file():
        try:
            loaded = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
            if not isinstance(loaded, Mapping):
                raise yaml.YAMLError("not a mapping")
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            print(
                f"warning: {saved_path} is not a readable config ({type(e).__name__}); "
                "the resumed settings cannot be compared with the checkpoint's",
                flush=True,
            )
            return
        saved = _flatten(loaded)
        now = _flatten(to_dict(cfg))
        changed = [
            f"{k} ({saved.get(k)!r} -> {now.get(k)!r})"
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)
        ]
        if changed:
            print(f"warning: resuming with changed settings: {', '.join(changed)}", flush=True)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


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


def _oom_message(cfg: TrainingConfig, info: ddp.DistInfo, lq: torch.Tensor, iteration: int) -> str:
    h, w = lq.shape[-2:]
    tips = [
        f"train.batch_size (now {cfg.train.batch_size} per GPU)",
        f"the data crop size (now {h}x{w})",
    ]
    if cfg.train.precision == "fp32":
        tips.append("or set train.precision=bf16")
    return (
        f"CUDA out of memory at iteration {iteration} on {info.device} "
        f"({cfg.model.name}, {cfg.train.precision}): lower " + ", ".join(tips)
    )

"""One run's trained parts and one optimiser step of the loop (:mod:`ramir.training.loop`).

* :class:`Run`: the network with everything that steps with it (EMA, optimiser,
  schedule, gradient scaler, forward arguments, RAM++'s mask generator), restored from
  a checkpoint when resuming;
* :func:`wrap_network`: what the steps call (DistributedDataParallel, ``torch.compile``);
* :class:`Step`: forward under autocast, loss, backward, update, EMA;
* the precision settings (``train.precision``, ``train.tf32``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ramir.errors import ResourceError
from ramir.models import count_parameters
from ramir.training import distributed as ddp
from ramir.training.checkpoint import restore_training_state, seed_process_rng
from ramir.training.config import TrainingConfig
from ramir.training.data import first_item_size
from ramir.training.ema import EMA
from ramir.training.losses import l1_loss, masked_l1_loss, psnr_loss
from ramir.training.model import ForwardArgs, forward_args, initial_model
from ramir.training.optim import LRSchedule, build_optimizer
from ramir.training.rampp import AdaptiveMasking

__all__ = [
    "Run",
    "Step",
    "wrap_network",
    "ParameterSelection",
    "resolve_precision",
    "autocast_dtype",
    "set_cuda_flags",
]

ParameterSelection = Callable[[nn.Module], Any]
"""Sets ``requires_grad`` on a bare model's parameters (e.g. ``ramir.attribution.freeze_except``)."""


class Run:
    """The trained network with everything that steps with it: its EMA, optimiser,
    schedule, gradient scaler, forward arguments and (RAM++ pretraining) the mask
    generator; restored from ``ckpt`` when resuming, RNG streams seeded."""

    def __init__(
        self,
        cfg: TrainingConfig,
        info: ddp.DistInfo,
        trainable: ParameterSelection | None,
        ckpt: Path | None,
        state: dict[str, Any] | None,
    ) -> None:
        tc = cfg.train
        self.cfg, self.info = cfg, info
        self.precision = resolve_precision(tc.precision, info.device)
        torch.manual_seed(tc.seed)
        model = initial_model(cfg, load_init=state is None)
        if trainable is not None:
            trainable(model)
        self.model = model
        self.n_params = count_parameters(model)
        self.n_trainable = count_parameters(model, trainable_only=True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        model.to(info.device).train(tc.model_mode == "train")
        self.args: ForwardArgs = forward_args(cfg, model, info.device)  # RFR: the DINOv2
        self.ema = EMA(model, cfg.ema.decay) if cfg.ema.decay > 0 else None
        self.optimizer = build_optimizer(self.params, cfg.optim)
        self.schedule = LRSchedule(self.optimizer, cfg.optim.lr, cfg.schedule, tc.total_iter)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.precision == "fp16")
        self.start_iter = 0
        if ckpt is not None and state is not None:
            self.start_iter = restore_training_state(
                ckpt, state, model, self.ema, self.optimizer, self.schedule, self.scaler,
                n_trainable=self.n_trainable,
            )  # fmt: skip
        # RAM++: the mask generator with its optimiser, schedule and EMA (training/rampp.py)
        self.adaptive = AdaptiveMasking(cfg, info, ckpt, state) if tc.input == "adaptive" else None
        seed_process_rng(state, tc.seed, info, self.start_iter)

    @property
    def loss_kind(self) -> str:
        """The pixel loss of the steps: ``masked_l1`` (hidden pixels only), ``psnr`` or
        ``l1`` (``train.loss`` with ``auto`` resolved by the input)."""
        tc = self.cfg.train
        if tc.loss == "masked_l1" or (tc.loss == "auto" and tc.masked):
            return "masked_l1"
        return "psnr" if tc.loss == "psnr" else "l1"


def wrap_network(run: Run, dataset: Dataset, cfg: TrainingConfig, info: ddp.DistInfo) -> nn.Module:
    """The network the steps call: the bare model, DistributedDataParallel's wrapper on
    several processes (unused trainable parameters turn its search on: a probe), compiled
    with ``train.compile``."""
    tc = cfg.train
    net: nn.Module = run.model
    if info.distributed:
        probe = None if tc.find_unused_parameters else first_item_size(dataset, run.model.min_size)
        net = ddp.wrap_ddp(
            run.model, info, find_unused=tc.find_unused_parameters, probe_size=probe,
            masked=tc.masked, forward_args=run.args,
        )  # fmt: skip
    if tc.compile:
        net = torch.compile(net)
    return net


class Step:
    """One optimiser step: forward (under autocast), loss, backward, update, EMA."""

    def __init__(self, net: nn.Module, run: Run, amp_dtype: torch.dtype | None) -> None:
        self.net, self.run, self.amp_dtype = net, run, amp_dtype
        self.loss_kind = run.loss_kind
        self.grad_clip = run.cfg.train.grad_clip

    def __call__(
        self,
        inp: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None,
        lq: torch.Tensor,
        gt: torch.Tensor,
        iteration: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(pred (B, 3, H, W) float32, mask, loss)`` of iteration ``iteration``; ``inp``,
        ``target``, ``lq``, ``gt`` normalised ``(B, 3, H, W)``, ``mask`` 1 = hidden."""
        run, dev = self.run, self.run.info.device
        adaptive, optimizer, scaler = run.adaptive, run.optimizer, run.scaler
        try:  # the loader's workers checked the batch finite
            with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                if adaptive is not None:  # RAM++: the generator draws the mask
                    pred, mask, loss = adaptive.forward(self.net, lq, gt, iteration)
                else:
                    pred = self.net(*run.args.training(inp, mask), check_finite=False)
            pred = pred.float()
            if adaptive is None:
                if self.loss_kind == "masked_l1":
                    loss = masked_l1_loss(pred, target, mask)
                elif self.loss_kind == "psnr":
                    loss = psnr_loss(pred, target)
                else:
                    loss = l1_loss(pred, target)
            scaler.scale(loss).backward()
            if self.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(run.params, self.grad_clip)
            scaler.step(optimizer)
            if adaptive is not None:
                adaptive.step(scaler, self.grad_clip)
            scaler.update()
        except torch.OutOfMemoryError:
            raise ResourceError(_oom_message(run.cfg, run.info, lq, iteration)) from None
        optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.update(run.model)
        return pred, mask, loss


# ----------------------------------------------------------------------------- precision


def resolve_precision(precision: str, dev: torch.device) -> str:
    """``train.precision`` with ``auto`` decided: bf16 on a CUDA device that has it."""
    if precision != "auto":
        return precision
    return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast_dtype(precision: str, dev: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` (``None``: fp32, no autocast)."""
    if precision == "fp16" and dev.type != "cuda":
        raise ValueError(
            "train.precision=fp16 needs a CUDA device (its gradient scaler is CUDA-only); "
            "use train.precision=bf16 or fp32 on CPU"
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def set_cuda_flags(tf32: bool, closing: contextlib.ExitStack) -> None:
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


def _oom_message(cfg: TrainingConfig, info: ddp.DistInfo, lq: torch.Tensor, iteration: int) -> str:
    h, w = lq.shape[-2:]
    tips = [
        f"train.batch_size (now {cfg.train.batch_size} per GPU)",
        f"the data crop size (now {h}x{w})",
    ]
    if resolve_precision(cfg.train.precision, info.device) == "fp32":
        tips.append("or set train.precision=bf16")
    return (
        f"CUDA out of memory at iteration {iteration} on {info.device} "
        f"({cfg.model.name}, {cfg.train.precision}): lower " + ", ".join(tips)
    )

"""Optimisers and the learning-rate schedule (linear warmup + cosine to ``eta_min``)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ramir.training.config import OptimSection, ScheduleSection

__all__ = ["build_optimizer", "lr_at", "LRSchedule"]


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimSection) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` (only those with ``requires_grad`` should be passed),
    in the implementation ``cfg.impl`` names (``auto``: fused where PyTorch has it for
    these parameters' device, else PyTorch's default)."""
    params = list(params)
    if not params:
        raise ValueError(
            "no trainable parameters: the parameter selection froze every layer; "
            "select at least one layer to fine-tune"
        )
    cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[cfg.type]
    kwargs: dict[str, Any] = {
        "lr": cfg.lr,
        "betas": tuple(cfg.betas),
        "weight_decay": cfg.weight_decay,
        "eps": cfg.eps,
    }
    impl = getattr(cfg, "impl", "auto")
    if impl == "foreach":
        return cls(params, foreach=True, **kwargs)
    if impl == "for_loop":
        return cls(params, foreach=False, **kwargs)
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # not for this device, dtype or PyTorch
        if impl == "fused":
            raise
        return cls(params, **kwargs)


def lr_at(iteration: int, base_lr: float, cfg: ScheduleSection, total_iter: int) -> float:
    """The learning rate used by 1-based ``iteration`` (BasicSR's warmup + cosine).

    While ``iteration < warmup_iter`` the rate rises linearly, ``base_lr * iteration /
    warmup_iter``; otherwise it follows the cosine ``eta_min + (base_lr - eta_min) *
    (1 + cos(pi * (iteration - 1) / period)) / 2`` (``period`` defaults to ``total_iter``;
    past the period it stays at ``eta_min``), or stays at ``base_lr`` for ``constant``.
    """
    if iteration < 1:
        raise ValueError(f"iteration is 1-based, got {iteration}")
    if iteration < cfg.warmup_iter:
        return base_lr * iteration / cfg.warmup_iter
    if cfg.type == "constant":
        return base_lr
    period = cfg.period or total_iter
    progress = min((iteration - 1) / period, 1.0)
    return cfg.eta_min + (base_lr - cfg.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets an optimiser's learning rate from the iteration number (a pure function of it).

    Call :meth:`step` with the 1-based iteration before the optimiser step. Its state is
    the last iteration, so resuming needs nothing else.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        cfg: ScheduleSection,
        total_iter: int,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = base_lr
        self.cfg = cfg
        self.total_iter = total_iter
        self.last_iter = 0

    def step(self, iteration: int) -> float:
        """Set and return the learning rate of 1-based ``iteration``."""
        lr = lr_at(iteration, self.base_lr, self.cfg, self.total_iter)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_iter = iteration
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
        if self.last_iter:
            self.step(self.last_iter)

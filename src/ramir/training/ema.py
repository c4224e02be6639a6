"""Exponential moving average of a model's weights (the reference's ``model_ema``).

After every optimiser step, every parameter of the EMA copy becomes
``decay * ema + (1 - decay) * weight`` (frozen parameters too, as the reference; they
simply stay equal). Buffers are copied as they are. The copy starts equal to the model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """An EMA copy of ``model`` (kept in eval mode, never trained).

    Args:
        model: the bare (not DDP-wrapped) model; its current weights start the average.
        decay: in [0, 1); the reference uses 0.995.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._ema_params = list(self.module.parameters())
        self._ema_buffers = list(self.module.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s current weights in: ``ema = decay * ema + (1 - decay) * w``."""
        params = [p.detach() for p in model.parameters()]
        if len(params) != len(self._ema_params):
            raise ValueError("EMA.update: the model's parameters differ from the EMA copy's")
        torch._foreach_mul_(self._ema_params, self.decay)
        torch._foreach_add_(self._ema_params, params, alpha=1.0 - self.decay)
        for e, b in zip(self._ema_buffers, model.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

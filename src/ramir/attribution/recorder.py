"""What the MAC engine attaches to a model: one recorder per layer, and the saved model state.

A :class:`Recorder` hooks one layer's forward pass and, through a tensor hook on the
layer's output, consumes ``dF/dy`` the moment backward produces it, accumulating the
layer's conductance chunk by chunk of path steps (docs/method.md#mac). Only the
accumulated conductance and the previous step's output stay between chunks.

Layer outputs: a module's output tensor is used; for a tuple/list output, its first
floating-point tensor (:func:`first_tensor`). A module called several times per forward
gets one conductance over all its calls' outputs together. An output that does not
depend on the input is made a differentiable leaf (same values), so ``dF/dy`` exists for
it; a layer that is never called, or never returns a tensor, scores 0 with a warning.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

__all__ = ["Accumulate", "CallState", "ModelState", "Recorder", "first_tensor"]

Accumulate = Literal["conductance", "gradient"]
"""What a layer accumulates over the path: ``"conductance"``,
``sum_t dF/dy(x_t) * (y(x_t) - y(x_{t-1}))``, or ``"gradient"``, ``sum_t dF/dy(x_t)``."""


def _replace_tensor(output: object, old: torch.Tensor, new: torch.Tensor) -> object | None:
    """``output`` with tensor ``old`` replaced by ``new`` (tensor, tuple or list), else None."""
    if output is old:
        return new
    if type(output) in (tuple, list):
        return type(output)(new if item is old else item for item in output)  # type: ignore[call-arg]
    return None


def first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output if torch.is_floating_point(output) else None
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and torch.is_floating_point(item):
                return item
    return None


class CallState:
    """Accumulators of one call site of a layer: conductance and the previous output."""

    def __init__(self, cond: torch.Tensor) -> None:
        self.cond = cond  # (B, k, ...): per image, the layer output's shape
        self.prev: torch.Tensor | None = None  # same shape: the output at the previous step


class Recorder:
    """Hooks one layer; accumulates its conductance chunk by chunk (batched path)."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        n_images: int,
        accumulate: Accumulate,
        leaves: list[torch.Tensor],
    ) -> None:
        self.name = name
        self.leaves = leaves  # shared: input-independent outputs made differentiable
        self.n_images = n_images
        self.accumulate = accumulate
        self.calls: list[CallState] = []
        self.current: list[tuple[torch.Tensor, int]] = []
        self.t0 = 0
        self.c = 1
        self.saw_non_tensor = False
        self.handle = module.register_forward_hook(self._forward_hook)

    def begin(self, t0: int, c: int) -> None:
        self.t0, self.c = t0, c
        self.current = []

    def _forward_hook(self, module: nn.Module, inputs: object, output: object) -> object:
        y = first_tensor(output)
        if y is None:
            self.saw_non_tensor = True
            return None
        replaced = None
        if not y.requires_grad:
            # The output does not depend on the input (or the model detached it): make it a
            # leaf so that dF/dy is still computed; same values, so the model is unchanged.
            leaf = y.detach().requires_grad_(True)
            replaced = _replace_tensor(output, y, leaf)
            if replaced is not None:
                self.leaves.append(leaf)
                y = leaf
        idx = len(self.current)
        self.current.append((y, y._version))
        if y.requires_grad:
            y.register_hook(lambda g, idx=idx: self._on_grad(idx, g))
        return replaced

    def _view(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` (an output or its gradient) as ``(B, c, k, ...)``, detached.

        A view when the batch leads (any memory format). With one path step per forward
        (``c = 1``) any layout works (see :mod:`ramir.attribution.mac`), so other shapes are
        flattened per image slot.
        """
        bc = self.n_images * self.c
        if y.dim() > 0 and y.shape[0] % bc == 0:
            return y.detach().unflatten(0, (self.n_images, self.c, -1))
        if self.c == 1 and y.numel() % self.n_images == 0:
            return y.detach().reshape(self.n_images, 1, 1, -1)
        raise ValueError(
            f"layer {self.name!r}: output of shape {tuple(y.shape)} cannot be split into "
            f"{self.n_images} images x {self.c} path steps; exclude it with layers=..."
        )

    def after_forward(self) -> None:
        if self.calls and len(self.current) != len(self.calls):
            raise RuntimeError(
                f"layer {self.name!r} was called {len(self.current)} times in this forward "
                f"pass but {len(self.calls)} times before; MAC needs a fixed computation graph"
            )
        for idx, (y, version) in enumerate(self.current):
            if y._version != version:
                raise RuntimeError(
                    f"the output of layer {self.name!r} is modified in place after the layer "
                    "(e.g. by an inplace=True activation); MAC needs the layer's own output. "
                    "Use an out-of-place operation there or exclude the layer with layers=..."
                )
            first = self._view(y)[:, 0]  # (B, k, ...): one path step
            if idx == len(self.calls):
                # zeros_like keeps y's memory format, so the accumulation runs in its layout
                self.calls.append(CallState(torch.zeros_like(first)))
            elif self.calls[idx].cond.shape != first.shape:
                raise RuntimeError(
                    f"layer {self.name!r}: output shape changed between forward passes "
                    f"({tuple(self.calls[idx].cond.shape)} vs {tuple(first.shape)} per image)"
                )

    def _on_grad(self, idx: int, grad: torch.Tensor) -> None:
        state = self.calls[idx]
        g = self._view(grad)
        if self.accumulate == "gradient":
            for s in range(self.c):
                state.cond.add_(g[:, s])
            return
        y = self._view(self.current[idx][0])
        for s in range(self.c):
            if self.t0 + s == 0:
                continue
            prev = state.prev if s == 0 else y[:, s - 1]
            assert prev is not None
            state.cond.addcmul_(g[:, s], y[:, s] - prev)

    def end_chunk(self) -> None:
        for idx, (y, _) in enumerate(self.current):
            yv = self._view(y)
            state = self.calls[idx]
            # One step per forward: keep the output itself (no copy); else copy the last step
            # so that the chunk's outputs can be freed.
            state.prev = yv[:, -1] if self.c == 1 else yv[:, -1].clone()
        self.current = []

    def scores(self, device: torch.device) -> torch.Tensor:
        """``(B,)`` float64 on ``device``: ``mean(|cond|)`` per image over all calls' outputs."""
        if not self.calls:
            why = "never returns a tensor" if self.saw_non_tensor else "is never called"
            warnings.warn(
                f"layer {self.name!r} {why} during the forward pass; it scores 0",
                RuntimeWarning,
                stacklevel=4,
            )
            return torch.zeros(self.n_images, dtype=torch.float64, device=device)
        total = sum(s.cond.abs().flatten(1).sum(dim=1, dtype=torch.float64) for s in self.calls)
        count = sum(s.cond[0].numel() for s in self.calls)
        return total / count

    def remove(self) -> None:
        self.handle.remove()
        self.current = []


# ----------------------------------------------------------------------------- model state


class ModelState:
    """Saves and restores module modes, ``requires_grad`` flags and ``.grad`` of a model."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.params = [(p, p.requires_grad, p.grad) for p in model.parameters()]

    def restore(self) -> None:
        for m, mode in self.modes:
            m.training = mode
        for p, flag, grad in self.params:
            p.requires_grad_(flag)
            p.grad = grad

"""The literal reference computation of MAC and its IG baseline: slow, plain, for checking.

:func:`ramir.attribution.mask_attribution_conductance` computes Mask Attribution
Conductance with several tricks (activation gradients only, many path steps per batch,
gradients consumed by hooks as backward produces them). This module computes the same
numbers the obvious way, following the formula of ``docs/method.md#mac`` step by step, as
the authors' script does:

* one image and one path step at a time;
* the soft mask built pixel by pixel in a Python loop (:func:`reference_soft_mask`);
* a full ``backward()`` with parameter gradients on and ``retain_grad()`` on every layer
  output, then ``cond_l += dF/dy_l(x_t) * (y_l(x_t) - y_l(x_{t-1}))`` for ``t >= 1``;
* the score of a layer for one image is ``mean(|cond_l|)``; scores add over images.

It is the oracle that tests and ``benchmarks/bench_mac.py`` compare the fast
implementation against; it is about as slow as the reference script (minutes per image
for a full-size backbone at 200 steps), so do not use it to analyse models.

Conventions it shares with the fast implementation (so that both can be compared at all):
layers are :func:`ramir.attribution.list_layers`; a layer's output is its output tensor,
or the first floating-point tensor of a tuple/list output; a layer called several times
per forward gets one conductance over all its calls' outputs; reveal orders drawn from a
generator are :func:`ramir.attribution.random_orders`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import nn

from ramir.attribution.path import random_orders
from ramir.attribution.recorder import Accumulate, ModelState, first_tensor
from ramir.attribution.selection import check_layer_names, list_layers
from ramir.attribution.targets import Target, gradient_magnitude

__all__ = ["mac_reference", "reference_soft_mask"]


def reference_soft_mask(
    order: Sequence[int], alpha: float, sharpness: float, height: int, width: int
) -> torch.Tensor:
    """The soft mask of one path step, pixel by pixel (1 = revealed).

    The pixel at rank ``i`` of ``order`` (row-major pixel indices) gets
    ``sigmoid(sharpness * (alpha - i / n))`` when ``i < ceil(alpha * n)``, else 0, with
    ``n = height * width``.

    Returns:
        ``(height, width)`` float64.
    """
    n = len(order)
    count = math.ceil(n * alpha)
    mask = [0.0] * n
    for i in range(count):
        mask[order[i]] = 1.0 / (1.0 + math.exp(-sharpness * (alpha - i / n)))
    return torch.tensor(mask, dtype=torch.float64).view(height, width)


def mac_reference(
    model: nn.Module,
    lq: torch.Tensor,
    *,
    steps: int = 200,
    start_ratio: float = 0.5,
    sharpness: float = 1e4,
    order: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    target: Target | None = None,
    layers: Iterable[str] | None = None,
    path: Literal["mask", "line"] = "mask",
    accumulate: Accumulate = "conductance",
) -> dict[str, float]:
    """MAC (or, with ``path="line"``, the integrated-gradients baseline), the literal way.

    Arguments and result as :func:`ramir.attribution.mask_attribution_conductance`
    (``path="line"`` with ``accumulate`` as
    :func:`ramir.attribution.integrated_gradients_conductance`). The model is run in eval
    mode and left as it was (modes, ``requires_grad`` flags and ``.grad`` restored, no
    hooks left). No argument checks: give it what the fast function accepts.
    """
    b, _, h, w = lq.shape
    if order is None and path == "mask":
        order = random_orders(b, h, w, generator=generator)
    target = gradient_magnitude if target is None else target
    names = list_layers(model) if layers is None else check_layer_names(model, layers)
    alphas = [1 - start_ratio + start_ratio * t / steps for t in range(steps)]
    saved = ModelState(model)
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            y = first_tensor(output)
            if y is not None:
                if y.requires_grad:
                    y.retain_grad()
                outputs[name].append(y)

        return hook

    handles = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    totals = dict.fromkeys(names, 0.0)
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
        for i in range(b):
            img = lq[i : i + 1]
            base = torch.zeros_like(img)
            rows = order[i].tolist() if order is not None else None
            cond: dict[str, list[torch.Tensor]] = {}
            prev: dict[str, list[torch.Tensor]] = {}
            for t, alpha in enumerate(alphas):
                if path == "mask":
                    assert rows is not None
                    m = reference_soft_mask(rows, alpha, sharpness, h, w).to(img)
                    x = base + m * (img - base)
                else:
                    x = base + alpha * (img - base)
                x = x.detach().requires_grad_(True)
                for n in names:
                    outputs[n] = []
                model.zero_grad()
                with torch.enable_grad():
                    f = target(model(x)).sum()
                    f.backward()
                for n in names:
                    now = [y.detach() for y in outputs[n]]
                    grads = [
                        y.grad if y.grad is not None else torch.zeros_like(y) for y in outputs[n]
                    ]
                    if n not in cond:
                        cond[n] = [torch.zeros_like(y) for y in now]
                    if accumulate == "gradient":
                        cond[n] = [c + g for c, g in zip(cond[n], grads, strict=True)]
                    elif t >= 1:
                        cond[n] = [
                            c + g * (y - yp)
                            for c, g, y, yp in zip(cond[n], grads, now, prev[n], strict=True)
                        ]
                    prev[n] = now
            for n in names:
                if cond[n]:
                    total = sum(c.abs().sum(dtype=torch.float64) for c in cond[n])
                    count = sum(c.numel() for c in cond[n])
                    totals[n] += float(total / count)
        return totals
    finally:
        for hd in handles:
            hd.remove()
        saved.restore()

"""Target functions ``F`` for attribution: what a layer's conductance is measured against.

A target maps a batch of predictions ``pred`` ``(N, C, H, W)`` to one value per sample,
``(N,)``. Attribution sums these values, so a target must treat samples independently
(the conductance of sample ``n`` then only sees ``F(pred[n])``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Target", "gradient_magnitude", "check_target_output"]

Target = Callable[[torch.Tensor], torch.Tensor]
"""``pred (N, C, H, W) -> (N,)`` per-sample target values."""


def gradient_magnitude(pred: torch.Tensor) -> torch.Tensor:
    """Total gradient magnitude of each image: MAC's default target (docs/method.md#mac).

    ``F(I) = sum_{c, y < H-1, x < W-1} sqrt((I[c,y,x] - I[c,y+1,x])^2 + (I[c,y,x] - I[c,y,x+1])^2)``

    as in the authors' code: per channel (no colour conversion), over the valid
    ``(H-1) x (W-1)`` region, no epsilon inside the square root, no ground truth.
    Where both differences are exactly 0 the square root's derivative is undefined (the
    reference code gets NaN there); we use the subgradient 0 instead.

    Args:
        pred: ``(N, C, H, W)`` float predictions (any range; normalised space in MAC),
            ``H, W >= 2``.

    Returns:
        ``(N,)`` float, one value per image.
    """
    if pred.dim() != 4:
        raise ValueError(f"pred must be (N, C, H, W), got shape {tuple(pred.shape)}")
    if pred.shape[-2] < 2 or pred.shape[-1] < 2:
        raise ValueError(
            f"gradient magnitude needs images of at least 2x2, got {tuple(pred.shape)}"
        )
    dv = pred[:, :, :-1, :-1] - pred[:, :, 1:, :-1]
    dh = pred[:, :, :-1, :-1] - pred[:, :, :-1, 1:]
    sq = dv * dv + dh * dh
    nonzero = sq > 0
    # Double where: sqrt's gradient is never evaluated at 0, so no 0 * inf = NaN.
    safe = torch.where(nonzero, sq, torch.ones_like(sq))
    mag = torch.where(nonzero, torch.sqrt(safe), torch.zeros_like(sq))
    return mag.flatten(1).sum(1)


def check_target_output(value: torch.Tensor, n: int) -> torch.Tensor:
    """Validate a target's output: a float tensor of shape ``(n,)``."""
    if not isinstance(value, torch.Tensor) or value.shape != (n,):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"the attribution target must return one value per sample, shape ({n},); got "
            f"{shape}. Reduce over every dimension except the first (e.g. "
            "x.flatten(1).sum(1))."
        )
    return value

"""Dual-mask inference (paper Fig. 4): a diagnostic of the input integrity gap.

See docs/method.md#dual-mask.

A masked-pretrained model has only ever seen inputs with half of the pixels hidden. Run
it on ``lq`` masked by ``M`` and by ``1 - M`` and keep, from each prediction, the pixels
that its input hid: every pixel is then predicted from a masked input, as in
pretraining. Comparing this merge with the whole-input prediction shows how much the
model loses when it sees whole images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ramir.masking import check_mask

__all__ = ["DualMaskResult", "dual_mask_predict"]


@dataclass
class DualMaskResult:
    """Predictions in the model's normalised space, ``(B, 3, H, W)``."""

    whole: torch.Tensor  # model(lq)
    merged: torch.Tensor  # pred(M) on M's hidden pixels, pred(1 - M) elsewhere
    pred_mask: torch.Tensor  # model(lq, mask=M)
    pred_complement: torch.Tensor  # model(lq, mask=1 - M)


@torch.no_grad()
def dual_mask_predict(model: nn.Module, lq: torch.Tensor, mask: torch.Tensor) -> DualMaskResult:
    """Whole-input and dual-mask predictions of ``model`` for ``lq``.

    Args:
        model: a :class:`~ramir.models.base.RestorationModel` (``forward(lq, mask=None)``);
            run in eval mode and left in its mode.
        lq: ``(B, 3, H, W)`` normalised degraded images.
        mask: ``(1|B, H, W)`` binary, 1 = hidden (e.g. ``ramir.masking.random_mask``).

    Returns:
        :class:`DualMaskResult` with ``merged = M * model(lq, M) + (1 - M) * model(lq, 1 - M)``.
    """
    m = check_mask(mask, lq)  # (1|B, 1, H, W)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("dual-mask inference needs a binary mask (values 0 or 1)")
    modes = [(mod, mod.training) for mod in model.modules()]
    try:
        model.eval()
        whole = model(lq)
        pred_m = model(lq, mask=mask)
        pred_c = model(lq, mask=1.0 - mask)
    finally:
        for mod, mode in modes:
            mod.training = mode
    merged = m * pred_m + (1.0 - m) * pred_c
    return DualMaskResult(whole=whole, merged=merged, pred_mask=pred_m, pred_complement=pred_c)

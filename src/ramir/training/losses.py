"""Pixel losses: L1 on whole images and the masked L1 of masked pretraining.

See docs/method.md#masking.
"""

from __future__ import annotations

import torch

__all__ = ["l1_loss", "masked_l1_loss"]


def l1_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over every element.

    Args:
        pred, gt: ``(B, C, H, W)`` in the same (normalised) space.

    Returns:
        A scalar tensor.
    """
    _check_pair(pred, gt)
    return (pred - gt).abs().mean()


def masked_l1_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 on hidden pixels only.

    ``sum(|pred - gt| * M) / (number of hidden pixels * C)``, summed over the batch: every
    channel of a hidden pixel counts, visible pixels contribute nothing (and get zero
    gradient). A mask shared by the batch counts its hidden pixels once per image.

    Args:
        pred, gt: ``(B, C, H, W)`` in the same (normalised) space.
        mask: ``(B, H, W)`` or ``(1, H, W)``, 1 = hidden, 0 = visible.

    Returns:
        A scalar tensor (0 when no pixel is hidden).
    """
    _check_pair(pred, gt)
    b, c, h, w = pred.shape
    if mask.dim() != 3 or tuple(mask.shape[-2:]) != (h, w) or mask.shape[0] not in (1, b):
        raise ValueError(
            f"mask must be (B, H, W) or (1, H, W) matching the images {tuple(pred.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    m = mask.to(device=pred.device, dtype=pred.dtype).unsqueeze(1)
    hidden = m.sum() * (b if mask.shape[0] == 1 else 1)
    # clamp: a mask hiding nothing gives 0 (no device sync to check it here).
    return ((pred - gt).abs() * m).sum() / (hidden.clamp_min(1.0) * c)


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if pred.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(pred.shape)}")

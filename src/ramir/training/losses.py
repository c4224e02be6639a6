"""Pixel losses: L1 on whole images, the masked L1 of masked pretraining, and the PSNR
loss (NAFNet's) for fine-tuning on tasks whose errors differ by orders of magnitude.

See docs/method.md#masking.
"""

from __future__ import annotations

import math

import torch

__all__ = ["l1_loss", "masked_l1_loss", "psnr_loss"]

_DB = 10.0 / math.log(10.0)


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


def psnr_loss(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Minus the PSNR of each image, averaged over the batch (up to a constant).

    ``mean_b 10 * log10(mean_{c,h,w} (pred - gt)^2 + eps)``: NAFNet's PSNR loss. Its
    gradient for an image is that of its MSE divided by the MSE, so every image pulls with
    the same weight per decibel: a JPEG or mild-blur crop, whose error is a hundredth of a
    noisy one's, is not drowned by it as under L1. ``eps`` bounds the weight of an image
    already restored almost exactly (1e-8 in the normalised space: about 80 dB).

    Args:
        pred, gt: ``(B, C, H, W)`` in the same (normalised) space.
        eps: added to each image's MSE (> 0).

    Returns:
        A scalar tensor in dB (lower is better; not clamped at 0).
    """
    _check_pair(pred, gt)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    mse = (pred.float() - gt.float()).pow(2).mean(dim=(1, 2, 3))
    return _DB * torch.log(mse + eps).mean()


def _check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}"
        )
    if pred.dim() != 4:
        raise ValueError(f"expected (B, C, H, W) images, got shape {tuple(pred.shape)}")

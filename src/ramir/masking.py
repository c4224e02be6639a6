"""Random masks for masked image pretraining (docs/method.md#masking).

A mask is a float tensor with 1 = hidden and 0 = visible. Shapes:

* ``(1, H, W)``: one mask shared by every image of the batch (the reference default);
* ``(B, H, W)``: one mask per sample.

The number of hidden pixels is exact: ``ceil(ratio * H * W)`` at pixel granularity, or
``ceil(ratio * h * w)`` hidden patches of ``patch_size x patch_size`` pixels on the
``h x w = ceil(H / p) x ceil(W / p)`` patch grid (cropped back to ``H x W``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["random_mask", "apply_mask", "check_mask"]


def random_mask(
    height: int,
    width: int,
    *,
    ratio: float = 0.5,
    patch_size: int = 1,
    batch_size: int = 1,
    shared: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draw a random binary mask with exactly ``ceil(ratio * n)`` hidden cells.

    Args:
        height, width: image size in pixels.
        ratio: fraction of hidden cells, in ``[0, 1)``.
        patch_size: side of one mask cell in pixels (1 = per pixel; 4, 8, 16 for the
            paper's ablation).
        batch_size: number of images; ignored when ``shared``.
        shared: one mask for the whole batch (``(1, H, W)``) or one per sample
            (``(batch_size, H, W)``).
        generator: the source of randomness (pass one for reproducible masks). The mask
            is drawn on the generator's device: a CUDA generator draws it there (no copy
            from the host), a CPU one draws the same mask for every device.
        device: where to put the mask.

    Returns:
        float32 tensor ``(1 or B, H, W)`` in ``{0, 1}``, 1 = hidden.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if patch_size < 1:
        raise ValueError(f"mask patch_size must be >= 1, got {patch_size}")
    if height < 1 or width < 1:
        raise ValueError(f"mask size must be positive, got {height}x{width}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gh, gw = math.ceil(height / patch_size), math.ceil(width / patch_size)
    n = gh * gw
    n_hidden = math.ceil(ratio * n)
    count = 1 if shared else batch_size
    where = generator.device if generator is not None else None
    masks = torch.zeros(count, n, device=where)
    for i in range(count):
        perm = torch.randperm(n, generator=generator, device=where)
        masks[i, perm[:n_hidden]] = 1.0
    masks = masks.view(count, gh, gw)
    if patch_size > 1:
        masks = masks.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
        masks = masks[:, :height, :width]
    return masks.contiguous().to(device) if device is not None else masks.contiguous()


def check_mask(mask: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Validate ``mask`` against images ``lq`` ``(B, C, H, W)``; return it as ``(B|1, 1, H, W)``."""
    if mask.dim() != 3:
        raise ValueError(
            f"mask must be (B, H, W) or (1, H, W) with 1 = hidden, got shape {tuple(mask.shape)}"
        )
    b, _, h, w = lq.shape
    if tuple(mask.shape[-2:]) != (h, w):
        raise ValueError(
            f"mask size {tuple(mask.shape[-2:])} does not match the image size {(h, w)}"
        )
    if mask.shape[0] not in (1, b):
        raise ValueError(f"mask batch {mask.shape[0]} must be 1 or the image batch {b}")
    return mask.to(dtype=lq.dtype, device=lq.device).unsqueeze(1)


def apply_mask(
    lq: torch.Tensor, mask: torch.Tensor, token: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Replace hidden pixels of ``lq`` by ``token``.

    Args:
        lq: images ``(B, C, H, W)``, usually in normalised space.
        mask: ``(B, H, W)`` or ``(1, H, W)``, 1 = hidden (soft values in [0, 1] blend).
        token: the mask token: a scalar (0 = zeros in normalised space) or a tensor that
            broadcasts to ``lq`` (e.g. a learnable ``(1, C, 1, 1)``).

    Returns:
        ``lq * (1 - mask) + token * mask``, same shape as ``lq``.
    """
    m = check_mask(mask, lq)
    if isinstance(token, (int, float)) and token == 0:
        return lq * (1.0 - m)
    return lq * (1.0 - m) + token * m

"""Small image transforms shared by the data, training and attribution code.

:func:`center_crop` is the one centre crop of the package: evaluation sets
(:class:`ramir.data.testsets.PairedTestSet`), validation during training and the images of
an attribution analysis all crop with it, so the same ``size`` gives the same pixels
everywhere.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["center_crop", "center_crop_box"]

ImageT = TypeVar("ImageT", torch.Tensor, np.ndarray)


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the centre ``size x size`` window of an ``h x w``
    image. A side shorter than ``size`` is kept whole; an odd margin leaves its extra
    pixel at the bottom / right (the offset is rounded down).
    """
    if size < 1:
        raise ValueError(f"a centre crop needs size >= 1, got {size}")
    ch, cw = min(size, h), min(size, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def center_crop(img: ImageT, size: int | None, *, channels_last: bool = False) -> ImageT:
    """The centre ``size x size`` crop of an image (a view, no copy).

    Args:
        img: a tensor or array ``(..., H, W)`` (e.g. ``(C, H, W)`` or ``(B, C, H, W)``),
            or with ``channels_last`` ``(H, W, ...)`` (e.g. an ``(H, W, C)`` array).
        size: the crop side; ``None`` or ``0`` returns ``img`` unchanged. A side of the
            image shorter than ``size`` is kept whole (callers that need the full size
            check it first).
        channels_last: the height and width are the first two axes, not the last two.

    Returns:
        The crop, of the same type as ``img``.
    """
    if not size:
        return img
    if channels_last:
        h, w = img.shape[0], img.shape[1]
        top, left, ch, cw = center_crop_box(h, w, size)
        return img[top : top + ch, left : left + cw]
    h, w = img.shape[-2], img.shape[-1]
    top, left, ch, cw = center_crop_box(h, w, size)
    return img[..., top : top + ch, left : left + cw]

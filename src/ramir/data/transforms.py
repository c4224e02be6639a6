"""Small image transforms shared by the data, training and attribution code.

:func:`center_crop` is the one centre crop of the package: evaluation sets
(:class:`ramir.data.testsets.PairedTestSet`), validation during training and the images of
an attribution analysis all crop with it, so the same ``size`` gives the same pixels
everywhere. :func:`tone_shift` gives the identity task clean photos that look dim or
veiled (see ``DataConfig.identity_tone``).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["TONE_KINDS", "center_crop", "center_crop_box", "tone_shift"]

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


TONE_KINDS = ("dim", "veil", "bright")
"""The global tone changes of :func:`tone_shift`."""


def tone_shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random mild global tone change of a clean photo, drawn from ``rng``.

    One of :data:`TONE_KINDS`, equally likely:

    - ``dim``: ``s * x ** g``, ``s ~ U(0.45, 1)``, ``g ~ U(1, 1.4)`` (an underexposed or
      dusk photo; the low-light task darkens far more, ``g >= 2``, and adds sensor noise);
    - ``veil``: ``c * x + a * (1 - c)``, ``c ~ U(0.7, 0.95)``, ``a ~ U(0.6, 1)`` (an even,
      light veil: overcast or misty, without the haze task's depth-dependent transmission);
    - ``bright``: ``1 - s * (1 - x)``, ``s ~ U(0.6, 0.95)`` (pale: snow, sand, white walls).

    The identity task applies it to both sides of a pair, so that the model learns to
    leave such photos alone rather than brighten or dehaze them.

    Args:
        img: ``(H, W, C)`` float32 in ``[0, 1]``.
        rng: the sample's generator.

    Returns:
        ``(H, W, C)`` float32 in ``[0, 1]``.
    """
    kind = TONE_KINDS[int(rng.integers(len(TONE_KINDS)))]
    x = np.clip(img, 0.0, 1.0)
    if kind == "dim":
        s, g = rng.uniform(0.45, 1.0), rng.uniform(1.0, 1.4)
        out = s * np.power(x, g)
    elif kind == "veil":
        c, a = rng.uniform(0.7, 0.95), rng.uniform(0.6, 1.0)
        out = c * x + a * (1.0 - c)
    else:
        s = rng.uniform(0.6, 0.95)
        out = 1.0 - s * (1.0 - x)
    return np.clip(out, 0.0, 1.0).astype(np.float32)

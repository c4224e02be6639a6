"""Integer pixels to floats in ``[0, 1]`` and arrays to ``(C, H, W)`` tensors."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["to_float01", "array_to_tensor"]


def _integer_scale(dtype: np.dtype) -> float | None:
    """The largest value of an 8- or 16-bit unsigned pixel type (what 1.0 is in
    ``[0, 1]`` floats), else ``None``."""
    if dtype.kind != "u":
        return None
    return {1: 255.0, 2: 65535.0}.get(dtype.itemsize)


def to_float01(raw: np.ndarray) -> np.ndarray:
    """Integer pixels (any shape) -> float32 in ``[0, 1]`` of the same shape: uint8
    divided by 255, uint16 by 65535.

    Raises:
        TypeError: ``raw`` is not uint8 or uint16.
    """
    scale = _integer_scale(raw.dtype)
    if scale is None:
        raise TypeError(f"expected uint8 or uint16 pixels, got {raw.dtype}")
    return raw.astype(np.float32) / np.float32(scale)


def array_to_tensor(a: np.ndarray, *, scale: float | None = None) -> torch.Tensor:
    """``(H, W, C)`` array -> ``(C, H, W)`` float32 tensor.

    Integer arrays are divided by ``scale`` (default 255 for uint8, 65535 for uint16);
    float arrays are taken as already in ``[0, 1]`` (``scale`` default 1).
    """
    if scale is None:
        scale = _integer_scale(a.dtype) or 1.0
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float32)
    if scale != 1.0:
        t = t / scale
    return t

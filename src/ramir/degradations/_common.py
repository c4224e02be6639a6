"""Helpers shared by the degradation functions: input checks and parameter sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["as_image", "pick", "pick_int", "finish"]


def as_image(img: np.ndarray, name: str) -> np.ndarray:
    """Check a degradation input: float ``(H, W, C)`` (or ``(H, W)``) -> float32 ``(H, W, C)``."""
    if not isinstance(img, np.ndarray):
        raise TypeError(
            f"{name}: expected a numpy float array (H, W, C) in [0, 1], got {type(img).__name__}; "
            "use ramir.degradations.apply() for torch tensors"
        )
    if img.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a float array in [0, 1], got dtype {img.dtype}; divide by 255 first"
        )
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"{name}: expected an image of shape (H, W, C), got {img.shape}")
    return img.astype(np.float32, copy=False)


def _check_range(lo_hi: Sequence[float], what: str) -> tuple[float, float]:
    if len(lo_hi) != 2:
        raise ValueError(f"{what} must be a [low, high] pair, got {lo_hi!r}")
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if lo > hi:
        raise ValueError(f"{what} must have low <= high, got {lo_hi!r}")
    return lo, hi


def pick(
    rng: np.random.Generator,
    value: float | None,
    value_range: Sequence[float],
    what: str,
    *,
    bounds: tuple[float, float] | None = None,
) -> float:
    """``value`` if given, else a uniform draw from ``value_range``; checked against ``bounds``."""
    if value is None:
        lo, hi = _check_range(value_range, f"{what}_range")
        value = lo if lo == hi else float(rng.uniform(lo, hi))
    value = float(value)
    if bounds is not None and not (bounds[0] <= value <= bounds[1]):
        raise ValueError(f"{what} must be in [{bounds[0]}, {bounds[1]}], got {value}")
    return value


def pick_int(
    rng: np.random.Generator,
    value: int | None,
    value_range: Sequence[int],
    what: str,
    *,
    bounds: tuple[int, int] | None = None,
) -> int:
    """Like :func:`pick` for integers; the range is inclusive at both ends."""
    if value is None:
        lo, hi = _check_range(value_range, f"{what}_range")
        value = int(rng.integers(int(lo), int(hi) + 1))
    if int(value) != value:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if bounds is not None and not (bounds[0] <= value <= bounds[1]):
        raise ValueError(f"{what} must be in [{bounds[0]}, {bounds[1]}], got {value}")
    return value


def finish(x: np.ndarray) -> np.ndarray:
    """Clip to ``[0, 1]`` and return a contiguous float32 array."""
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0), dtype=np.float32)

"""Noise degradations: additive Gaussian (the training task) and the out-of-distribution
noises of the paper's Table 6 (Poisson, salt-and-pepper, speckle).

All functions take a float32 ``(H, W, C)`` image in ``[0, 1]`` and a
``numpy.random.Generator`` and return a new float32 ``(H, W, C)`` image in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ramir.degradations._common import as_image, finish, pick

__all__ = ["gaussian_noise", "poisson_noise", "salt_pepper_noise", "speckle_noise", "quantize_u8"]


def quantize_u8(x255: np.ndarray, how: Literal["round", "trunc", "none"]) -> np.ndarray:
    """Quantise values on the 0-255 scale (already clipped) to integers.

    ``"round"``: nearest integer; ``"trunc"``: towards zero, i.e. NumPy's ``astype(uint8)``
    as in the reference code; ``"none"``: keep the float values.
    """
    if how == "round":
        return np.rint(x255)
    if how == "trunc":
        return np.floor(x255)
    if how == "none":
        return x255
    raise ValueError(f"quantize must be 'round', 'trunc' or 'none', got {how!r}")


def gaussian_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float | None = None,
    sigma_range: Sequence[float] = (0.0, 50.0),
    quantize: Literal["round", "trunc", "none"] = "round",
) -> np.ndarray:
    """Additive white Gaussian noise, independent per pixel and channel.

    ``lq = Q(clip(255 * img + N(0, sigma^2), 0, 255)) / 255``.

    Args:
        sigma: standard deviation on the **0-255 scale**, in ``[0, 255]``. ``None`` draws it
            uniformly from ``sigma_range`` (reference training: ``[0, 50]``, where the
            reference draws an integer; standard tests: 15, 25, 50).
        sigma_range: ``[low, high]`` for the draw.
        quantize: how the noisy 0-255 values become integers, as when the reference stores
            them in uint8: ``"round"`` (default, unbiased), ``"trunc"`` (exactly the
            reference's ``astype(np.uint8)``, which truncates and so darkens by ~0.5/255)
            or ``"none"`` (float output).
    """
    x = as_image(img, "gaussian_noise")
    s = pick(rng, sigma, sigma_range, "sigma", bounds=(0.0, 255.0))
    noisy = x * np.float32(255.0) + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(s)
    noisy = quantize_u8(np.clip(noisy, 0.0, 255.0), quantize)
    return finish(noisy / np.float32(255.0))


def poisson_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    peak: float | None = None,
    peak_range: Sequence[float] = (5.0, 50.0),
) -> np.ndarray:
    """Signal-dependent shot noise: ``lq = Poisson(peak * img) / peak``.

    Args:
        peak: expected photon count of a white pixel (> 0); smaller is noisier. At
            ``peak = 10`` a mid-gray image has PSNR about 13 dB. The paper (Table 6) does not
            state its level; ``None`` draws it uniformly from ``peak_range``.
        peak_range: ``[low, high]`` for the draw.
    """
    x = as_image(img, "poisson_noise")
    p = pick(rng, peak, peak_range, "peak", bounds=(1e-6, float("inf")))
    return finish(rng.poisson(x.astype(np.float64) * p).astype(np.float32) / np.float32(p))


def salt_pepper_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    amount: float | None = None,
    amount_range: Sequence[float] = (0.01, 0.1),
    salt_ratio: float = 0.5,
) -> np.ndarray:
    """Impulse noise: a random ``amount`` of pixels become white (salt) or black (pepper).

    Whole pixels are hit (all channels together), so the impulses are white and black dots.

    Args:
        amount: fraction of pixels replaced, in ``[0, 1]``; ``None`` draws it uniformly from
            ``amount_range`` (the paper's level is not stated).
        amount_range: ``[low, high]`` for the draw.
        salt_ratio: fraction of the replaced pixels that become white, in ``[0, 1]``.
    """
    x = as_image(img, "salt_pepper_noise")
    a = pick(rng, amount, amount_range, "amount", bounds=(0.0, 1.0))
    if not 0.0 <= salt_ratio <= 1.0:
        raise ValueError(f"salt_ratio must be in [0, 1], got {salt_ratio}")
    u = rng.random(x.shape[:2], dtype=np.float32)
    out = x.copy()
    out[u < a * salt_ratio] = 1.0
    out[(u >= a * salt_ratio) & (u < a)] = 0.0
    return finish(out)


def speckle_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float | None = None,
    sigma_range: Sequence[float] = (0.1, 0.4),
) -> np.ndarray:
    """Multiplicative noise: ``lq = img * (1 + N(0, sigma^2))``, per pixel and channel.

    Args:
        sigma: standard deviation of the multiplicative factor (>= 0; scikit-image's
            ``random_noise(mode="speckle", var=v)`` is ``sigma = sqrt(v)``). ``None`` draws it
            uniformly from ``sigma_range`` (the paper's level is not stated).
        sigma_range: ``[low, high]`` for the draw.
    """
    x = as_image(img, "speckle_noise")
    s = pick(rng, sigma, sigma_range, "sigma", bounds=(0.0, float("inf")))
    return finish(x * (1.0 + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(s)))

"""Blur degradations: isotropic Gaussian blur and camera-shake motion blur.

Images are float32 ``(H, W, C)`` in ``[0, 1]``; the border is handled by mirror
reflection without repeating the edge pixel (OpenCV's default ``BORDER_REFLECT_101``,
as in the reference's ``cv2.filter2D``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, signal

from ramir.degradations._common import as_image, finish, pick, pick_int

__all__ = [
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_kernel",
    "motion_blur",
    "motion_kernel",
    "convolve",
]


def gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of odd ``size`` and std ``sigma`` (as ``cv2.getGaussianKernel``)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return k / k.sum()


def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` normalised isotropic Gaussian kernel (outer product of 1-D kernels)."""
    k = gaussian_kernel1d(size, sigma)
    return np.outer(k, k)


def gaussian_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float | None = None,
    sigma_range: Sequence[float] = (2.0, 3.0),
    kernel_size: int = 15,
) -> np.ndarray:
    """Isotropic Gaussian blur with a ``kernel_size`` x ``kernel_size`` kernel (15 x 15).

    Args:
        sigma: std of the kernel in pixels (> 0). ``None`` draws it uniformly from
            ``sigma_range``. Reference code: ``[2.0, 3.0]`` (it draws from steps of 0.1);
            paper: ``[0.1, 3.1]``; the LSDIR-Blur test set: 2.0.
        sigma_range: ``[low, high]`` for the draw.
        kernel_size: odd kernel width.

    The output is not re-quantised (as in the reference).
    """
    x = as_image(img, "gaussian_blur")
    s = pick(rng, sigma, sigma_range, "sigma", bounds=(1e-6, float("inf")))
    k = gaussian_kernel1d(kernel_size, s).astype(np.float32)
    out = ndimage.correlate1d(x, k, axis=0, mode="mirror")
    out = ndimage.correlate1d(out, k, axis=1, mode="mirror")
    return finish(out)


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of ``(H, W, C)`` ``img`` with a 2-D ``kernel`` (odd sizes).

    Uses FFTs; the border is mirror-reflected (``BORDER_REFLECT_101``); output same size.
    """
    x = as_image(img, "convolve")
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sides must be odd, got {kernel.shape}")
    ph, pw = kh // 2, kw // 2
    padded = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    out = signal.fftconvolve(
        padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1)
    )
    return out.astype(np.float32)


def motion_kernel(
    rng: np.random.Generator,
    size: int = 15,
    *,
    anxiety: float = 0.1,
    n_points: int = 64,
    shake_prob: float = 0.05,
) -> np.ndarray:
    """A random camera-shake blur kernel: a rasterised random trajectory.

    The camera moves as a 2-D random walk with inertia: each step keeps most of the previous
    velocity, adds a random acceleration of scale ``anxiety``, is pulled back towards the
    start, and with probability ``shake_prob`` jerks in a new direction (after the
    trajectory model of Boracchi & Foi, 2012). The trajectory is scaled to span up to
    ``size - 2`` pixels, centred on its centroid, and splatted bilinearly onto the grid.

    Returns:
        ``(size, size)`` float32 kernel, non-negative, summing to 1, centred.
    """
    if size < 3 or size % 2 == 0:
        raise ValueError(f"motion kernel size must be an odd number >= 3, got {size}")
    if anxiety < 0:
        raise ValueError(f"anxiety must be >= 0, got {anxiety}")
    angle = rng.uniform(0, 2 * np.pi)
    v = np.exp(1j * angle)
    x = np.zeros(n_points, dtype=np.complex128)
    for t in range(1, n_points):
        if rng.random() < shake_prob:
            v = abs(v) * np.exp(1j * rng.uniform(0, 2 * np.pi))
        accel = anxiety * (rng.standard_normal() + 1j * rng.standard_normal())
        v = 0.9 * v + accel - 0.01 * x[t - 1]
        v = v / max(abs(v), 1e-8)  # constant speed: the length of the blur is set by scaling
        x[t] = x[t - 1] + v
    x = x - x.mean()
    extent = max(np.ptp(x.real), np.ptp(x.imag), 1e-8)
    length = rng.uniform(0.5, 1.0) * (size - 2)
    x = x * (length / extent)
    # keep the whole trajectory inside the grid
    x = x - (x.real.max() + x.real.min()) / 2 - 1j * (x.imag.max() + x.imag.min()) / 2
    c = (size - 1) / 2
    # dense resampling so the splatted path is continuous
    seg = np.linspace(0, n_points - 1, n_points * 8)
    px = np.interp(seg, np.arange(n_points), x.real) + c
    py = np.interp(seg, np.arange(n_points), x.imag) + c
    k = np.zeros((size, size), dtype=np.float64)
    x0 = np.floor(px).astype(int)
    y0 = np.floor(py).astype(int)
    fx = px - x0
    fy = py - y0
    for dy, dx, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        yy = np.clip(y0 + dy, 0, size - 1)
        xx = np.clip(x0 + dx, 0, size - 1)
        np.add.at(k, (yy, xx), w)
    k /= k.sum()
    return k.astype(np.float32)


def motion_blur(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    kernel_size: int | None = None,
    kernel_size_range: Sequence[int] = (7, 21),
    anxiety: float | None = None,
    anxiety_range: Sequence[float] = (0.05, 0.5),
) -> np.ndarray:
    """Camera-shake motion blur with a random trajectory kernel (see :func:`motion_kernel`).

    Args:
        kernel_size: odd kernel width in pixels (the blur spans up to ``kernel_size - 2``
            pixels); ``None`` draws an odd size from ``kernel_size_range`` (inclusive).
        kernel_size_range: ``[low, high]`` for the draw.
        anxiety: how erratic the camera path is (0 = straight line; > 0.3 = shaky curves);
            ``None`` draws it uniformly from ``anxiety_range``.
        anxiety_range: ``[low, high]`` for the draw.
    """
    x = as_image(img, "motion_blur")
    size = pick_int(rng, kernel_size, kernel_size_range, "kernel_size", bounds=(3, 255))
    if size % 2 == 0:
        if kernel_size is not None:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        size += 1
    anx = pick(rng, anxiety, anxiety_range, "anxiety", bounds=(0.0, float("inf")))
    k = motion_kernel(rng, size, anxiety=anx)
    return finish(convolve(x, k))

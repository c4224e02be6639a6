"""Batched blur: isotropic Gaussian blur and camera-shake motion blur, a kernel per sample.

``x`` is ``(B, C, H, W)`` float in ``[0, 1]``. As in :mod:`ramir.degradations.blur`, the
border is mirrored without repeating the edge pixel (``BORDER_REFLECT_101``, for any
image size). Gaussian blur is a separable grouped convolution (one group per sample and
channel); motion blur convolves by FFT (as the NumPy version's ``fftconvolve``), every
sample's kernel zero-padded, centred, to the batch's largest size, which changes nothing:
the wider mirrored border only meets zero weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ramir.degradations.device._common import (
    ParamValue,
    check_batch,
    draw_int,
    draw_uniform,
    finish,
    float64_ok,
    rand,
    randn,
    render_chunked,
)

__all__ = [
    "mirror_pad",
    "fast_fft_len",
    "convolve_valid_fft",
    "gaussian_kernels1d",
    "GaussianBlurDraws",
    "draw_gaussian_blur",
    "render_gaussian_blur",
    "gaussian_blur",
    "MotionBlurDraws",
    "draw_motion_blur",
    "motion_kernels",
    "render_motion_blur",
    "motion_blur",
]


def _mirror_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` on each side, reflect-101."""
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i > n - 1, period - i, i)


def mirror_pad(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """Pad the last two axes of ``x`` by ``ph``/``pw`` mirrored pixels (reflect-101, as
    ``np.pad(mode="reflect")`` and ``ndimage``'s ``"mirror"``), for any size."""
    h, w = x.shape[-2:]
    if ph < h and pw < w:
        return F.pad(x, (pw, pw, ph, ph), mode="reflect") if ph or pw else x
    x = x.index_select(-2, _mirror_index(h, ph, x.device))
    return x.index_select(-1, _mirror_index(w, pw, x.device))


def fast_fft_len(n: int) -> int:
    """The smallest ``2**a * 3**b * 5**c >= n`` (a size the FFT handles quickly)."""
    best = 1 << max(n - 1, 0).bit_length()
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def convolve_valid_fft(xp: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """True 2-D convolution of every channel of sample ``b`` with ``kernels[b]``, 'valid'.

    ``xp``: ``(B, C, Hp, Wp)``; ``kernels``: ``(B, Kh, Kw)`` with ``Kh <= Hp``,
    ``Kw <= Wp``. Returns ``(B, C, Hp - Kh + 1, Wp - Kw + 1)``. A circular FFT of at
    least the padded size is exact on the valid part; the size is rounded up to
    :func:`fast_fft_len` (as ``scipy.signal.fftconvolve`` does).
    """
    hp, wp = xp.shape[-2:]
    kh, kw = kernels.shape[-2:]
    s = (fast_fft_len(hp), fast_fft_len(wp))
    xf = torch.fft.rfft2(xp, s=s)
    kf = torch.fft.rfft2(kernels.to(xp.dtype), s=s)
    y = torch.fft.irfft2(xf * kf[:, None], s=s)
    return y[..., kh - 1 : hp, kw - 1 : wp].contiguous()


def gaussian_kernels1d(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """``(B, size)`` normalised 1-D Gaussians of std ``sigma`` ``(B,)``, float64, as
    :func:`ramir.degradations.blur.gaussian_kernel1d` (``cv2.getGaussianKernel``)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    dt = torch.float64 if float64_ok(sigma.device) else torch.float32
    s = sigma.to(dt).view(-1, 1)
    t = torch.arange(size, dtype=dt, device=sigma.device) - (size - 1) / 2
    k = torch.exp(-(t**2) / (2.0 * s**2))
    return k / k.sum(1, keepdim=True)


@dataclass
class GaussianBlurDraws:
    """``sigma`` ``(B,)`` float64 in pixels; ``kernel_size`` odd."""

    sigma: torch.Tensor
    kernel_size: int = 15


def draw_gaussian_blur(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (2.0, 3.0),
    kernel_size: int = 15,
) -> GaussianBlurDraws:
    """Per sample ``sigma ~ U(sigma_range)`` (or the given one)."""
    s = draw_uniform(
        generator, int(shape[0]), sigma, sigma_range, "sigma", device, bounds=(1e-6, float("inf"))
    )
    return GaussianBlurDraws(s, int(kernel_size))


def render_gaussian_blur(x: torch.Tensor, d: GaussianBlurDraws) -> torch.Tensor:
    """Separable ``kernel_size`` x ``kernel_size`` Gaussian per sample, reflect-101 border."""
    b, c, h, w = x.shape
    k = gaussian_kernels1d(d.kernel_size, d.sigma).to(torch.float32)
    p = d.kernel_size // 2
    xp = mirror_pad(x.to(torch.float32), p, p).reshape(1, b * c, h + 2 * p, w + 2 * p)
    kk = k.repeat_interleave(c, 0)
    y = F.conv2d(xp, kk.view(b * c, 1, -1, 1), groups=b * c)
    y = F.conv2d(y, kk.view(b * c, 1, 1, -1), groups=b * c)
    return finish(y.view(b, c, h, w))


def gaussian_blur(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (2.0, 3.0),
    kernel_size: int = 15,
) -> torch.Tensor:
    """Isotropic Gaussian blur, ``sigma ~ U(sigma_range)`` per sample (see
    :func:`ramir.degradations.gaussian_blur`).

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "gaussian_blur")
    d = draw_gaussian_blur(
        generator, x.shape, x.device, sigma=sigma, sigma_range=sigma_range, kernel_size=kernel_size
    )
    return render_chunked(render_gaussian_blur, x, d)


@dataclass
class MotionBlurDraws:
    """The draws of one camera-shake kernel per sample (``n = n_points``):

    ``size`` ``(B,)`` odd int64; ``anxiety`` ``(B,)``; ``angle`` ``(B,)`` the first
    direction in ``[0, 2 pi)``; ``shake_u`` ``(B, n - 1)`` U(0, 1), a jerk where below
    ``shake_prob``; ``shake_angle`` ``(B, n - 1)`` the jerk's direction; ``accel``
    ``(B, n - 1, 2)`` N(0, 1) (real, imaginary); ``length_u`` ``(B,)`` U(0.5, 1), the
    blur length over ``size - 2``. All float64 but ``size``.
    """

    size: torch.Tensor
    anxiety: torch.Tensor
    angle: torch.Tensor
    shake_u: torch.Tensor
    shake_angle: torch.Tensor
    accel: torch.Tensor
    length_u: torch.Tensor
    shake_prob: float = 0.05


def draw_motion_blur(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    kernel_size: ParamValue = None,
    kernel_size_range: Sequence[int] = (7, 21),
    anxiety: ParamValue = None,
    anxiety_range: Sequence[float] = (0.05, 0.5),
    n_points: int = 64,
) -> MotionBlurDraws:
    """Per sample: an integer size from ``kernel_size_range`` (even ones + 1, as NumPy),
    ``anxiety ~ U(anxiety_range)`` and the trajectory's random numbers."""
    b = int(shape[0])
    size = draw_int(
        generator, b, kernel_size, kernel_size_range, "kernel_size", device, bounds=(3, 255)
    )
    if kernel_size is not None and bool((size % 2 == 0).any()):
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    size = size + (size % 2 == 0).long()
    anx = draw_uniform(
        generator, b, anxiety, anxiety_range, "anxiety", device, bounds=(0.0, float("inf"))
    )
    two_pi = 2 * torch.pi
    m = n_points - 1
    return MotionBlurDraws(
        size=size,
        anxiety=anx,
        angle=two_pi * rand(generator, (b,), device),
        shake_u=rand(generator, (b, m), device),
        shake_angle=two_pi * rand(generator, (b, m), device),
        accel=randn(generator, (b, m, 2), device, torch.float64),
        length_u=0.5 + 0.5 * rand(generator, (b,), device),
    )


def _splat(px: torch.Tensor, py: torch.Tensor, w: torch.Tensor, size: torch.Tensor, kmax: int):
    """Bilinear splat of points ``(B, N)`` (weights ``w``) into centred ``size`` x ``size``
    grids (indices clipped to each grid) inside ``(B, kmax, kmax)``."""
    b = px.shape[0]
    off = ((kmax - size) // 2).view(-1, 1)
    hi = (size - 1).view(-1, 1)
    x0, y0 = torch.floor(px), torch.floor(py)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    k = torch.zeros(b, kmax * kmax, dtype=px.dtype, device=px.device)
    for dy, dx, wt in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        yy = torch.minimum((y0 + dy).clamp_min(0), hi) + off
        xx = torch.minimum((x0 + dx).clamp_min(0), hi) + off
        k.scatter_add_(1, yy * kmax + xx, wt * w)
    return k.view(b, kmax, kmax)


def _walk(d: MotionBlurDraws, n_points: int) -> np.ndarray:
    """The camera's random walk, ``(B, n_points)`` complex128, vectorised over the batch.

    A loop over the walk's steps (each depends on the last) on the host in NumPy: 63
    steps of a few operations on ``(B,)`` arrays, far cheaper there than as ~900 tiny
    device kernels; the draws come over once."""
    angle = d.angle.detach().cpu().numpy()
    shake = d.shake_u.detach().cpu().numpy() < d.shake_prob
    jerk = np.exp(1j * d.shake_angle.detach().cpu().numpy())
    acc = d.accel.detach().cpu().numpy()
    accel = d.anxiety.detach().cpu().numpy()[:, None] * (acc[..., 0] + 1j * acc[..., 1])
    v = np.exp(1j * angle)
    x = np.zeros((angle.shape[0], n_points), dtype=np.complex128)
    for t in range(1, n_points):
        v = np.where(shake[:, t - 1], np.abs(v) * jerk[:, t - 1], v)
        v = 0.9 * v + accel[:, t - 1] - 0.01 * x[:, t - 1]
        v = v / np.maximum(np.abs(v), 1e-8)
        x[:, t] = x[:, t - 1] + v
    return x


def motion_kernels(d: MotionBlurDraws, n_points: int = 64) -> torch.Tensor:
    """``(B, K, K)`` float32 kernels (``K`` = the largest size), each non-negative, summing
    to 1 and centred, from the draws; the trajectory model of
    :func:`ramir.degradations.blur.motion_kernel`, vectorised over the batch (a loop over
    the ``n_points`` steps of the walk, not over pixels), on the draws' device."""
    dt = torch.float64 if float64_ok(d.angle.device) else torch.float32
    dev = d.angle.device
    walk = torch.from_numpy(_walk(d, n_points))
    px, py = walk.real.to(dev, dt), walk.imag.to(dev, dt)
    px = px - px.mean(1, keepdim=True)
    py = py - py.mean(1, keepdim=True)

    def ptp(v: torch.Tensor) -> torch.Tensor:
        return v.amax(1) - v.amin(1)

    extent = torch.maximum(ptp(px), ptp(py)).clamp_min(1e-8)
    size = d.size.to(dev)
    scale = (d.length_u.to(dt) * (size - 2).to(dt) / extent).view(-1, 1)
    px, py = px * scale, py * scale
    px = px - (px.amax(1, keepdim=True) + px.amin(1, keepdim=True)) / 2
    py = py - (py.amax(1, keepdim=True) + py.amin(1, keepdim=True)) / 2
    c = ((size - 1).to(dt) / 2).view(-1, 1)
    # dense resampling (np.interp on a uniform grid) so the splatted path is continuous
    seg = torch.linspace(0, n_points - 1, n_points * 8, dtype=dt, device=dev)
    i0 = torch.floor(seg).long().clamp(max=n_points - 2)
    f = seg - i0.to(dt)
    qx = px[:, i0] + (px[:, i0 + 1] - px[:, i0]) * f + c
    qy = py[:, i0] + (py[:, i0 + 1] - py[:, i0]) * f + c
    kmax = int(size.max())
    k = _splat(qx, qy, torch.ones_like(qx), size, kmax)
    k = k / k.sum((1, 2), keepdim=True)
    return k.to(torch.float32)


def render_motion_blur(x: torch.Tensor, d: MotionBlurDraws) -> torch.Tensor:
    """Convolve sample ``b`` with its kernel, reflect-101 border, by FFT."""
    k = motion_kernels(d)
    p = k.shape[-1] // 2
    xp = mirror_pad(x.to(torch.float32), p, p)
    return finish(convolve_valid_fft(xp, k))


def motion_blur(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    kernel_size: ParamValue = None,
    kernel_size_range: Sequence[int] = (7, 21),
    anxiety: ParamValue = None,
    anxiety_range: Sequence[float] = (0.05, 0.5),
) -> torch.Tensor:
    """Camera-shake motion blur, a random trajectory kernel per sample (see
    :func:`ramir.degradations.motion_blur`; same size, anxiety and trajectory draws).

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "motion_blur")
    d = draw_motion_blur(
        generator,
        x.shape,
        x.device,
        kernel_size=kernel_size,
        kernel_size_range=kernel_size_range,
        anxiety=anxiety,
        anxiety_range=anxiety_range,
    )
    return render_chunked(render_motion_blur, x, d)

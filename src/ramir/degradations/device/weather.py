"""Batched weather: haze over a per-sample pseudo-depth (with its scene scale) and rain
streaks, as :mod:`ramir.degradations.weather` computes them, vectorised over the batch.

``x`` is ``(B, C, H, W)`` float in ``[0, 1]``. Both degradations reproduce the NumPy ones
exactly (to float rounding) for the same draws; ``draw_*`` makes the draws from the same
distributions, ``render_*`` the rest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ramir.degradations.device._common import (
    ParamValue,
    check_batch,
    draw_uniform,
    finish,
    float64_ok,
    rand,
    render_chunked,
)
from ramir.degradations.device.blur import _splat, convolve_valid_fft

__all__ = [
    "HazeDraws",
    "draw_haze",
    "haze_depths",
    "render_haze",
    "haze",
    "RainDraws",
    "draw_rain",
    "streak_kernels",
    "render_rain",
    "rain",
]

_INF = float("inf")


def _dtype(device: torch.device) -> torch.dtype:
    return torch.float64 if float64_ok(device) else torch.float32


@dataclass
class HazeDraws:
    """Per sample: ``beta``, ``airlight``, ``scene_scale``, ``ramp`` (the ramp's share,
    U(0.3, 0.8)) ``(B,)`` float64; ``coarse`` ``(B, g, g)`` U(0, 1) the depth lattice;
    ``offset`` ``(B, 2)`` int64 the window's top-left corner in the scene (0 where
    ``scene_scale <= 1``); ``tint_u`` ``(B, C)`` U(-tint, tint) the airlight's jitter."""

    beta: torch.Tensor
    airlight: torch.Tensor
    scene_scale: torch.Tensor
    ramp: torch.Tensor
    coarse: torch.Tensor
    offset: torch.Tensor
    tint_u: torch.Tensor
    min_depth: float = 0.2


def _scene_size(n: int, scale: torch.Tensor) -> torch.Tensor:
    """``ceil(n * scale)`` where ``scale > 1``, else ``n`` (int64)."""
    return torch.where(scale > 1.0, torch.ceil(n * scale), torch.full_like(scale, n)).long()


def draw_haze(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    beta: ParamValue = None,
    beta_range: Sequence[float] = (0.6, 2.0),
    airlight: ParamValue = None,
    airlight_range: Sequence[float] = (0.7, 1.0),
    tint: float = 0.03,
    min_depth: float = 0.2,
    scene_scale: ParamValue = None,
    scene_scale_range: Sequence[float] = (1.0, 1.0),
    grid: int = 4,
) -> HazeDraws:
    """Per sample ``beta``, ``airlight`` and ``scene_scale`` from their ranges (or given),
    the depth lattice, ramp share and window offset of :func:`ramir.degradations.weather.
    haze_depth` (uniform over the scene's possible windows), and the airlight tint."""
    if not 0.0 <= min_depth <= 1.0:
        raise ValueError(f"min_depth must be in [0, 1], got {min_depth}")
    n, c, h, w = (int(v) for v in shape)
    b = draw_uniform(generator, n, beta, beta_range, "beta", device, bounds=(0.0, _INF))
    a = draw_uniform(generator, n, airlight, airlight_range, "airlight", device, bounds=(0.0, 1.0))
    s = draw_uniform(
        generator, n, scene_scale, scene_scale_range, "scene_scale", device, bounds=(1.0, 1e3)
    )
    coarse = rand(generator, (n, grid, grid), device)
    ramp = 0.3 + 0.5 * rand(generator, (n,), device)
    room = torch.stack([_scene_size(h, s) - h + 1, _scene_size(w, s) - w + 1], 1)
    offset = torch.minimum((rand(generator, (n, 2), device) * room).long(), room - 1)
    tint_u = tint * (2.0 * rand(generator, (n, c), device) - 1.0)
    return HazeDraws(b, a, s, ramp, coarse, offset, tint_u, float(min_depth))


def _smooth_rows(start: torch.Tensor, n: int, big: torch.Tensor, grid: int, dt) -> torch.Tensor:
    """Rows ``start .. start + n`` of ``_smooth_upsample_matrix(big, grid)``: ``(B, n, grid)``."""
    i = torch.arange(n, device=start.device, dtype=dt)
    step = (grid - 1) / (big - 1).clamp_min(1).to(dt)
    pos = (start.to(dt).view(-1, 1) + i) * step.view(-1, 1)
    i0 = torch.floor(pos).clamp(0, max(grid - 2, 0))
    f = pos - i0
    f = f * f * (3 - 2 * f)
    if grid == 1:
        return torch.ones(*pos.shape, 1, dtype=dt, device=pos.device)
    i0 = i0.long()
    m = F.one_hot(i0, grid).to(dt) * (1 - f)[..., None]
    return m + F.one_hot(i0 + 1, grid).to(dt) * f[..., None]


def haze_depths(d: HazeDraws, h: int, w: int) -> torch.Tensor:
    """``(B, h, w)`` pseudo-depths in ``[0, 1]`` (float32), as ``haze_depth`` computes
    them: a vertical ramp mixed with the smooth lattice field over a window of a scene
    ``scene_scale`` times larger, normalised by the image's range (scale 1) or the
    scene's (scale > 1)."""
    dev = d.coarse.device
    dt = _dtype(dev)
    grid = d.coarse.shape[-1]
    scale = d.scene_scale.to(dev)
    big = scale > 1.0
    big_h, big_w = _scene_size(h, scale), _scene_size(w, scale)
    zero = torch.zeros_like(big_h)
    y0 = torch.where(big, d.offset[:, 0].to(dev), zero)
    x0 = torch.where(big, d.offset[:, 1].to(dev), zero)
    coarse = d.coarse.to(dt)
    my = _smooth_rows(y0, h, big_h, grid, dt)
    mx = _smooth_rows(x0, w, big_w, grid, dt)
    field = my @ coarse @ mx.transpose(1, 2)
    i = torch.arange(h, device=dev, dtype=dt)
    ramp_part = 1.0 + (y0.to(dt).view(-1, 1) + i) * (-1.0 / (big_h - 1).clamp_min(1).to(dt)).view(
        -1, 1
    )
    a = d.ramp.to(dt).view(-1, 1, 1)
    dep = a * ramp_part[:, :, None] + (1 - a) * field
    a1 = a.view(-1)
    lo = torch.where(big, (1 - a1) * coarse.amin((1, 2)), dep.amin((1, 2)))
    hi = torch.where(big, a1 + (1 - a1) * coarse.amax((1, 2)), dep.amax((1, 2)))
    lo, hi = lo.view(-1, 1, 1), hi.view(-1, 1, 1)
    out = torch.where(
        hi > lo, ((dep - lo) / torch.where(hi > lo, hi - lo, 1.0)).clamp(0.0, 1.0), 0.0
    )
    return out.to(torch.float32)


def render_haze(x: torch.Tensor, d: HazeDraws) -> torch.Tensor:
    """``I = J t + A (1 - t)``, ``t = exp(-beta d)``, ``d`` in ``[min_depth, 1]``."""
    h, w = x.shape[-2:]
    dep = d.min_depth + (1.0 - d.min_depth) * haze_depths(d, h, w)
    t = torch.exp(-d.beta.to(torch.float32).view(-1, 1, 1) * dep)[:, None]
    air = (d.airlight.view(-1, 1) * (1.0 + d.tint_u)).clamp(0.0, 1.0).to(torch.float32)
    return finish(x.to(torch.float32) * t + air[:, :, None, None] * (1.0 - t))


def haze(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    beta: ParamValue = None,
    beta_range: Sequence[float] = (0.6, 2.0),
    airlight: ParamValue = None,
    airlight_range: Sequence[float] = (0.7, 1.0),
    tint: float = 0.03,
    min_depth: float = 0.2,
    scene_scale: ParamValue = None,
    scene_scale_range: Sequence[float] = (1.0, 1.0),
) -> torch.Tensor:
    """Atmospheric scattering over a smooth random pseudo-depth, a depth map, scene scale,
    ``beta`` and airlight per sample (see :func:`ramir.degradations.haze`).

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "haze")
    d = draw_haze(
        generator,
        x.shape,
        x.device,
        beta=beta,
        beta_range=beta_range,
        airlight=airlight,
        airlight_range=airlight_range,
        tint=tint,
        min_depth=min_depth,
        scene_scale=scene_scale,
        scene_scale_range=scene_scale_range,
    )
    return render_chunked(render_haze, x, d)


@dataclass
class RainDraws:
    """Per sample ``(B,)`` float64: ``density``, ``length``, ``angle`` (degrees),
    ``intensity``, ``width``, ``jitter`` (U(-3, 3) degrees added to the angle); per pixel
    ``(B, 1, H, W)`` float32: ``u`` U(0, 1) (a drop where below the density) and
    ``bright`` U(0.6, 1) (the drop's brightness)."""

    density: torch.Tensor
    length: torch.Tensor
    angle: torch.Tensor
    intensity: torch.Tensor
    width: torch.Tensor
    jitter: torch.Tensor
    u: torch.Tensor
    bright: torch.Tensor


def draw_rain(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    density: ParamValue = None,
    density_range: Sequence[float] = (0.002, 0.012),
    length: ParamValue = None,
    length_range: Sequence[float] = (8.0, 24.0),
    angle: ParamValue = None,
    angle_range: Sequence[float] = (-30.0, 30.0),
    intensity: ParamValue = None,
    intensity_range: Sequence[float] = (0.5, 0.9),
    width: ParamValue = None,
    width_range: Sequence[float] = (1.0, 2.0),
) -> RainDraws:
    """Each parameter ``U(its range)`` per sample (or given), the angle jitter, and a
    uniform and a brightness per pixel, as :func:`ramir.degradations.rain` draws them."""
    n, _, h, w = (int(v) for v in shape)

    def u(v: ParamValue, r: Sequence[float], what: str, bounds: tuple[float, float]):
        return draw_uniform(generator, n, v, r, what, device, bounds=bounds)

    return RainDraws(
        density=u(density, density_range, "density", (0.0, 1.0)),
        length=u(length, length_range, "length", (1.0, 1e4)),
        angle=u(angle, angle_range, "angle", (-90.0, 90.0)),
        intensity=u(intensity, intensity_range, "intensity", (0.0, 1.0)),
        width=u(width, width_range, "width", (1.0, 50.0)),
        jitter=-3.0 + 6.0 * rand(generator, (n,), device),
        u=rand(generator, (n, 1, h, w), device, torch.float32),
        bright=0.6 + 0.4 * rand(generator, (n, 1, h, w), device, torch.float32),
    )


def _reflect_index(j: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Half-sample symmetric reflection of indices ``j`` into ``[0, n)`` (``ndimage``'s
    ``"reflect"``: d c b a | a b c d | d c b a)."""
    m = j.remainder(2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _gaussian_filter_matrices(
    sigma: torch.Tensor, size: torch.Tensor, kmax: int, dt: torch.dtype
) -> torch.Tensor:
    """``(B, kmax, kmax)`` matrices applying ``ndimage.gaussian_filter1d(sigma, mode=
    "reflect", truncate=4)`` to each sample's centred ``size`` window."""
    b = sigma.shape[0]
    dev = sigma.device
    radius = torch.floor(4.0 * sigma + 0.5).long()  # int(truncate * sd + 0.5)
    rmax = int(radius.max())
    t = torch.arange(-rmax, rmax + 1, device=dev)
    g = torch.exp(-0.5 / sigma.view(-1, 1).to(dt) ** 2 * t.to(dt) ** 2)
    g = torch.where(t.abs() <= radius.view(-1, 1), g, 0.0)
    g = g / g.sum(1, keepdim=True)
    off = ((kmax - size) // 2).view(-1, 1, 1)
    i = torch.arange(kmax, device=dev).view(1, -1, 1)
    inside = (i >= off) & (i < off + size.view(-1, 1, 1))
    j = _reflect_index(i - off + t.view(1, 1, -1), size.view(-1, 1, 1)) + off
    wts = torch.where(inside, g.view(b, 1, -1), 0.0).expand(b, kmax, t.numel())
    m = torch.zeros(b, kmax, kmax, dtype=dt, device=dev)
    return m.scatter_add_(2, j.expand(b, kmax, t.numel()).clamp(0, kmax - 1), wts)


def streak_kernels(length: torch.Tensor, angle: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """``(B, K, K)`` float32 rain-streak kernels, each as
    :func:`ramir.degradations.weather.streak_kernel` draws it (anti-aliased line of
    ``length`` pixels at ``angle`` degrees from vertical, peak 1, thickened by a Gaussian
    where ``width > 1``), centred in the batch's largest size ``K``."""
    dev = length.device
    dt = _dtype(dev)
    length, angle, width = length.to(dt), angle.to(dt), width.to(dt)
    size = (torch.ceil(length).long() | 1) + 2
    kmax = int(size.max())
    c = ((size - 1).to(dt) / 2).view(-1, 1)
    theta = angle * (math.pi / 180.0)
    npts = torch.floor(length * 4).long().clamp_min(2)
    i = torch.arange(int(npts.max()), device=dev, dtype=dt)
    half = (length / 2).view(-1, 1)
    s = -half + i * (length / (npts - 1).to(dt)).view(-1, 1)
    last = i.long() == (npts - 1).view(-1, 1)
    s = torch.where(last, half, s)  # np.linspace ends exactly at its stop
    px = c + s * torch.sin(theta).view(-1, 1)
    py = c + s * torch.cos(theta).view(-1, 1)
    valid = (i.long() < npts.view(-1, 1)).to(dt)
    k = _splat(torch.where(valid > 0, px, c), torch.where(valid > 0, py, c), valid, size, kmax)
    wide = width > 1.0
    if bool(wide.any()):
        gm = _gaussian_filter_matrices((width - 1.0) / 2 + 0.3, size, kmax, dt)
        k = torch.where(wide.view(-1, 1, 1), gm @ k @ gm.transpose(1, 2), k)
    return (k / k.amax((1, 2), keepdim=True)).to(torch.float32)


def render_rain(x: torch.Tensor, d: RainDraws) -> torch.Tensor:
    """Drops where ``u < density`` (brightness ``bright``), convolved with the sample's
    streak kernel (zero border, 'same'), clipped, times ``intensity``, screen-blended:
    ``I = 1 - (1 - J)(1 - R)``."""
    drops = (d.u < d.density.to(torch.float32).view(-1, 1, 1, 1)).to(torch.float32) * d.bright
    k = streak_kernels(d.length, d.angle + d.jitter, d.width)
    p = k.shape[-1] // 2
    layer = convolve_valid_fft(F.pad(drops, (p, p, p, p)), k)
    layer = layer.clamp(0.0, 1.0) * d.intensity.to(torch.float32).view(-1, 1, 1, 1)
    return finish(1.0 - (1.0 - x.to(torch.float32)) * (1.0 - layer))


def rain(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    density: ParamValue = None,
    density_range: Sequence[float] = (0.002, 0.012),
    length: ParamValue = None,
    length_range: Sequence[float] = (8.0, 24.0),
    angle: ParamValue = None,
    angle_range: Sequence[float] = (-30.0, 30.0),
    intensity: ParamValue = None,
    intensity_range: Sequence[float] = (0.5, 0.9),
    width: ParamValue = None,
    width_range: Sequence[float] = (1.0, 2.0),
) -> torch.Tensor:
    """Rain streaks, every parameter and streak kernel per sample (see
    :func:`ramir.degradations.rain`; the same drops, kernels and blending).

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "rain")
    d = draw_rain(
        generator,
        x.shape,
        x.device,
        density=density,
        density_range=density_range,
        length=length,
        length_range=length_range,
        angle=angle,
        angle_range=angle_range,
        intensity=intensity,
        intensity_range=intensity_range,
        width=width,
        width_range=width_range,
    )
    return render_chunked(render_rain, x, d)

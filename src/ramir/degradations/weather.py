"""Weather degradations synthesised on clean photos: haze and rain streaks.

Images are float32 ``(H, W, C)`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, signal

from ramir.degradations._common import as_image, finish, pick

__all__ = ["haze", "haze_depth", "rain", "streak_kernel"]


def _smooth_upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix interpolating ``n_in`` grid values with smoothstep weights."""
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    f = pos - i0
    f = f * f * (3 - 2 * f)  # C1-smooth blend between grid points
    m = np.zeros((n_out, n_in))
    if n_in == 1:
        m[:, 0] = 1.0
        return m
    m[np.arange(n_out), i0] = 1 - f
    m[np.arange(n_out), i0 + 1] += f
    return m


def haze_depth(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    grid: int = 4,
    ramp: float | None = None,
    scene_scale: float = 1.0,
) -> np.ndarray:
    """A smooth random pseudo-depth map in ``[0, 1]`` of ``shape = (H, W)``.

    A vertical ramp (far at the top, as in most outdoor photos) mixed with a smooth random
    field (a ``grid`` x ``grid`` random lattice, smoothstep-interpolated). ``ramp`` is the
    ramp's share in ``[0, 1]`` (``None`` draws it from ``[0.3, 0.8]``).

    ``scene_scale`` (>= 1): the image is a random window of a scene that many times larger
    in each direction, and the depth spans the scene, not the window. Training crops of
    64 pixels see, with ``scene_scale`` of 4-8, the nearly even haze that a crop of a
    whole hazy photo shows (with 1, every crop holds the full depth range). With 1 the
    map and the random stream are exactly those of earlier versions.
    """
    h, w = shape
    coarse = rng.random((grid, grid))
    a = float(rng.uniform(0.3, 0.8)) if ramp is None else float(ramp)
    if scene_scale <= 1.0:
        field = _smooth_upsample_matrix(h, grid) @ coarse @ _smooth_upsample_matrix(w, grid).T
        d = a * np.linspace(1.0, 0.0, h)[:, None] + (1 - a) * field
        lo, hi = d.min(), d.max()
    else:
        big_h, big_w = int(np.ceil(h * scene_scale)), int(np.ceil(w * scene_scale))
        y0 = int(rng.integers(0, big_h - h + 1))
        x0 = int(rng.integers(0, big_w - w + 1))
        my = _smooth_upsample_matrix(big_h, grid)[y0 : y0 + h]
        mx = _smooth_upsample_matrix(big_w, grid)[x0 : x0 + w]
        ramp_part = np.linspace(1.0, 0.0, big_h)[y0 : y0 + h, None]
        d = a * ramp_part + (1 - a) * (my @ coarse @ mx.T)
        # the scene's range: the field spans the lattice's values, the ramp [0, 1]
        lo, hi = (1 - a) * coarse.min(), a + (1 - a) * coarse.max()
    return (np.clip((d - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(d)).astype(
        np.float32
    )


def haze(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    beta: float | None = None,
    beta_range: Sequence[float] = (0.6, 2.0),
    airlight: float | None = None,
    airlight_range: Sequence[float] = (0.7, 1.0),
    tint: float = 0.03,
    min_depth: float = 0.2,
    scene_scale: float | None = None,
    scene_scale_range: Sequence[float] = (1.0, 1.0),
) -> np.ndarray:
    """Atmospheric scattering: ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``.

    ``d`` is a smooth random pseudo-depth in ``[min_depth, 1]`` (:func:`haze_depth`), since
    clean photos have no depth map; RESIDE's OTS used estimated depth with
    ``A in [0.8, 1.0]``, ``beta in [0.04, 0.2]`` on its own depth scale.

    Args:
        beta: scattering coefficient (>= 0); the transmission ranges over
            ``[exp(-beta), exp(-beta * min_depth)]``. ``None`` draws from ``beta_range``.
        beta_range: ``[low, high]`` for the draw (default gives ``t`` from 0.14 to 0.89).
        airlight: global atmospheric light ``A`` in ``[0, 1]``; ``None`` draws from
            ``airlight_range``.
        airlight_range: ``[low, high]`` for the draw.
        tint: per-channel airlight jitter ``A_c = A * (1 + u_c)``, ``u_c ~ U(-tint, tint)``.
        min_depth: pseudo-depth of the nearest point, in ``[0, 1]``.
        scene_scale: the image shows a window of a scene this many times larger (>= 1;
            see :func:`haze_depth`); ``None`` draws from ``scene_scale_range``. Use a range
            such as ``[1, 8]`` when degrading training crops, so that crops look like
            parts of hazy photos; 1 (the default) for whole images.
    """
    x = as_image(img, "haze")
    b = pick(rng, beta, beta_range, "beta", bounds=(0.0, float("inf")))
    a = pick(rng, airlight, airlight_range, "airlight", bounds=(0.0, 1.0))
    if not 0.0 <= min_depth <= 1.0:
        raise ValueError(f"min_depth must be in [0, 1], got {min_depth}")
    scale = pick(rng, scene_scale, scene_scale_range, "scene_scale", bounds=(1.0, 1e3))
    d = min_depth + (1.0 - min_depth) * haze_depth(x.shape[:2], rng, scene_scale=scale)
    t = np.exp(-b * d).astype(np.float32)[:, :, None]
    air = np.clip(a * (1.0 + rng.uniform(-tint, tint, size=x.shape[2])), 0.0, 1.0)
    return finish(x * t + air.astype(np.float32) * (1.0 - t))


def streak_kernel(length: float, angle: float, width: float = 1.0) -> np.ndarray:
    """A line kernel for rain streaks: ``length`` pixels at ``angle`` degrees from vertical.

    Anti-aliased, peak value 1 (not sum-normalised, so a streak keeps its brightness);
    ``width`` (>= 1) thickens it with a small Gaussian.
    """
    size = int(np.ceil(length)) | 1
    size += 2
    c = (size - 1) / 2
    k = np.zeros((size, size), dtype=np.float64)
    theta = np.deg2rad(angle)
    s = np.linspace(-length / 2, length / 2, max(int(length * 4), 2))
    px = c + s * np.sin(theta)
    py = c + s * np.cos(theta)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    for dy, dx, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(k, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), w)
    if width > 1.0:
        k = ndimage.gaussian_filter(k, sigma=(width - 1.0) / 2 + 0.3)
    return (k / k.max()).astype(np.float32)


def rain(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    density: float | None = None,
    density_range: Sequence[float] = (0.002, 0.012),
    length: float | None = None,
    length_range: Sequence[float] = (8.0, 24.0),
    angle: float | None = None,
    angle_range: Sequence[float] = (-30.0, 30.0),
    intensity: float | None = None,
    intensity_range: Sequence[float] = (0.5, 0.9),
    width: float | None = None,
    width_range: Sequence[float] = (1.0, 2.0),
) -> np.ndarray:
    """Rain streaks: a sparse random drop layer, motion-blurred along one direction into
    streaks, screen-blended onto the image (``I = 1 - (1 - J) * (1 - R)``, only brightens).

    Args:
        density: fraction of pixels that start a streak, in ``[0, 1]`` (Rain100L-like light
            rain ~0.003, heavy rain ~0.01); ``None`` draws from ``density_range``.
        length: streak length in pixels; ``None`` draws from ``length_range``.
        angle: streak direction in degrees from vertical (all streaks share it, with
            +-3 degrees of jitter per image); ``None`` draws from ``angle_range``.
        intensity: brightness of a streak's core in ``[0, 1]``; ``None`` draws from
            ``intensity_range`` (each drop also varies in ``[0.6, 1]`` times this).
        width: streak width in pixels (>= 1); ``None`` draws from ``width_range``.
    """
    x = as_image(img, "rain")
    dens = pick(rng, density, density_range, "density", bounds=(0.0, 1.0))
    ln = pick(rng, length, length_range, "length", bounds=(1.0, 1e4))
    ang = pick(rng, angle, angle_range, "angle", bounds=(-90.0, 90.0))
    inten = pick(rng, intensity, intensity_range, "intensity", bounds=(0.0, 1.0))
    wid = pick(rng, width, width_range, "width", bounds=(1.0, 50.0))
    h, w = x.shape[:2]
    drops = (rng.random((h, w), dtype=np.float32) < dens).astype(np.float32)
    drops *= rng.uniform(0.6, 1.0, size=(h, w)).astype(np.float32)
    k = streak_kernel(ln, ang + float(rng.uniform(-3.0, 3.0)), wid)
    layer = signal.fftconvolve(drops, k, mode="same")
    layer = np.clip(layer, 0.0, 1.0) * np.float32(inten)
    layer = layer.astype(np.float32)[:, :, None]
    return finish(1.0 - (1.0 - x) * (1.0 - layer))

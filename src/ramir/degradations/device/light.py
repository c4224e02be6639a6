"""Batched low light: the reference's gamma/scale curve plus sensor noise, per sample.

As :func:`ramir.degradations.low_light`, computed in float64 (float32 on devices without
it) so that the 8-bit output equals the NumPy one for the same draws. The curve is a
lookup table per sample over the 256 input levels (the reference's ``LightAdder``
table), so ``pow`` runs 256 times a sample, not once a pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ramir.degradations.device._common import (
    ParamValue,
    check_batch,
    draw_uniform,
    finish,
    float64_ok,
    randn,
    render_chunked,
)

__all__ = ["LowLightDraws", "draw_low_light", "render_low_light", "low_light"]

_INF = float("inf")


@dataclass
class LowLightDraws:
    """Per sample ``(B,)`` float64: ``gamma``, ``a``, ``b``, ``shot_noise``,
    ``read_noise``; ``z`` ``(B, C, H, W)`` N(0, 1), float32 (drawn 3.5x faster than
    float64 on the CPU; NumPy draws float64, the same distribution to 7 digits)."""

    gamma: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    shot_noise: torch.Tensor
    read_noise: torch.Tensor
    z: torch.Tensor
    max_mean: float | None = None  # a constant, not a draw: see render_low_light


def draw_low_light(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    gamma: ParamValue = None,
    gamma_range: Sequence[float] = (2.0, 3.5),
    a: ParamValue = None,
    a_range: Sequence[float] = (0.9, 1.0),
    b: ParamValue = None,
    b_range: Sequence[float] = (0.5, 1.0),
    shot_noise: ParamValue = None,
    shot_noise_range: Sequence[float] = (0.0, 0.002),
    read_noise: ParamValue = None,
    read_noise_range: Sequence[float] = (0.0, 0.01),
    max_mean: float | None = None,
) -> LowLightDraws:
    """Each parameter ``U(its range)`` per sample (or the given value), and the noise."""
    n = int(shape[0])
    if max_mean is not None and not 0.0 < float(max_mean) <= 1.0:
        raise ValueError(f"low_light: max_mean must be in (0, 1], got {max_mean}")

    def u(v: ParamValue, r: Sequence[float], what: str, lo: float) -> torch.Tensor:
        return draw_uniform(generator, n, v, r, what, device, bounds=(lo, _INF))

    return LowLightDraws(
        gamma=u(gamma, gamma_range, "gamma", 1e-6),
        a=u(a, a_range, "a", 0.0),
        b=u(b, b_range, "b", 0.0),
        shot_noise=u(shot_noise, shot_noise_range, "shot_noise", 0.0),
        read_noise=u(read_noise, read_noise_range, "read_noise", 0.0),
        z=randn(generator, shape, device),
        max_mean=None if max_mean is None else float(max_mean),
    )


def render_low_light(x: torch.Tensor, d: LowLightDraws) -> torch.Tensor:
    """``rint(255 clip(dark + sqrt(shot dark + read^2) z)) / 255`` with
    ``dark = b a q^gamma``, ``q = rint(255 x) / 255``; with ``d.max_mean``, a sample
    whose ``dark`` is brighter than that on average is scaled down to it."""
    dt = torch.float64 if float64_ok(x.device) else torch.float32
    b = x.shape[0]

    def v(t: torch.Tensor) -> torch.Tensor:
        return t.to(dt).view(-1, 1, 1, 1)

    level = torch.round(x.to(torch.float32).clamp(0.0, 1.0) * 255.0)
    q = torch.arange(256, device=x.device, dtype=torch.float32) / 255.0  # as NumPy: float32
    lut = (d.b * d.a).to(dt).view(-1, 1) * torch.pow(q.to(dt), d.gamma.to(dt).view(-1, 1))
    dark = lut.gather(1, level.long().view(b, -1)).view(x.shape)
    if d.max_mean is not None:
        mean = dark.mean(dim=(1, 2, 3), keepdim=True)
        dark = dark * torch.clamp(d.max_mean / mean.clamp_min(1e-12), max=1.0)
    std = torch.sqrt(v(d.shot_noise) * dark + v(d.read_noise) ** 2)
    dark = dark + std * d.z.to(dt)
    out = torch.round(dark.clamp(0.0, 1.0) * 255.0) / 255.0
    return finish(out.to(torch.float32))


def low_light(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    gamma: ParamValue = None,
    gamma_range: Sequence[float] = (2.0, 3.5),
    a: ParamValue = None,
    a_range: Sequence[float] = (0.9, 1.0),
    b: ParamValue = None,
    b_range: Sequence[float] = (0.5, 1.0),
    shot_noise: ParamValue = None,
    shot_noise_range: Sequence[float] = (0.0, 0.002),
    read_noise: ParamValue = None,
    read_noise_range: Sequence[float] = (0.0, 0.01),
    max_mean: float | None = None,
) -> torch.Tensor:
    """Darken with the reference's curve, add Poisson-Gaussian sensor noise, 8-bit output
    (see :func:`ramir.degradations.low_light`), every parameter drawn per sample.

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "low_light")
    d = draw_low_light(
        generator,
        x.shape,
        x.device,
        gamma=gamma,
        gamma_range=gamma_range,
        a=a,
        a_range=a_range,
        b=b,
        b_range=b_range,
        shot_noise=shot_noise,
        shot_noise_range=shot_noise_range,
        read_noise=read_noise,
        read_noise_range=read_noise_range,
        max_mean=max_mean,
    )
    return render_chunked(render_low_light, x, d)

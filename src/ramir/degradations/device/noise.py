"""Batched noise: additive Gaussian (the training task) and the out-of-distribution noises
of the paper's Table 6 (Poisson, salt-and-pepper, speckle).

Each takes ``x`` ``(B, C, H, W)`` float in ``[0, 1]`` and returns a new tensor of the same
shape in ``[0, 1]``; every sample draws its own level from the range, as the NumPy
version (:mod:`ramir.degradations.noise`) draws one per image. ``draw_*`` makes the
random draws, ``render_*`` the deterministic rest, so tests can feed NumPy's draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ramir.degradations.device._common import (
    ParamValue,
    check_batch,
    draw_uniform,
    finish,
    rand,
    randn,
    render_chunked,
)

__all__ = [
    "GaussianNoiseDraws",
    "draw_gaussian_noise",
    "render_gaussian_noise",
    "gaussian_noise",
    "poisson_noise",
    "SaltPepperDraws",
    "draw_salt_pepper_noise",
    "render_salt_pepper_noise",
    "salt_pepper_noise",
    "SpeckleDraws",
    "draw_speckle_noise",
    "render_speckle_noise",
    "speckle_noise",
    "quantize_u8",
]


def quantize_u8(x255: torch.Tensor, how: str) -> torch.Tensor:
    """0-255 values (clipped) to integers: ``round`` (half to even, as ``np.rint``),
    ``trunc`` (towards zero, as ``astype(uint8)``) or ``none``."""
    if how == "round":
        return torch.round(x255)
    if how == "trunc":
        return torch.floor(x255)
    if how == "none":
        return x255
    raise ValueError(f"quantize must be 'round', 'trunc' or 'none', got {how!r}")


@dataclass
class GaussianNoiseDraws:
    """``sigma`` ``(B,)`` float64 on the 0-255 scale; ``z`` ``(B, C, H, W)`` float32 N(0, 1)."""

    sigma: torch.Tensor
    z: torch.Tensor
    quantize: str = "round"


def draw_gaussian_noise(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (0.0, 50.0),
    quantize: Literal["round", "trunc", "none"] = "round",
) -> GaussianNoiseDraws:
    """Per sample ``sigma ~ U(sigma_range)`` (or the given one), and the noise tensor."""
    quantize_u8(torch.zeros(1), quantize)  # checks the name
    b = int(shape[0])
    s = draw_uniform(generator, b, sigma, sigma_range, "sigma", device, bounds=(0.0, 255.0))
    return GaussianNoiseDraws(s, randn(generator, shape, device), quantize)


def render_gaussian_noise(x: torch.Tensor, d: GaussianNoiseDraws) -> torch.Tensor:
    """``Q(clip(255 x + sigma z, 0, 255)) / 255``: float32, as the NumPy version."""
    s = d.sigma.to(torch.float32).view(-1, 1, 1, 1)
    noisy = x.to(torch.float32) * 255.0 + d.z * s
    noisy = quantize_u8(noisy.clamp(0.0, 255.0), d.quantize)
    return finish(noisy / 255.0)


def gaussian_noise(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (0.0, 50.0),
    quantize: Literal["round", "trunc", "none"] = "round",
) -> torch.Tensor:
    """Additive white Gaussian noise, a sigma per sample (see
    :func:`ramir.degradations.gaussian_noise`): ``sigma ~ U(sigma_range)`` on the 0-255
    scale, ``z ~ N(0, 1)`` per pixel and channel, 8-bit output by ``quantize``.

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``; returns float32 ``(B, C, H, W)``.
    """
    x = check_batch(x, "gaussian_noise")
    d = draw_gaussian_noise(
        generator, x.shape, x.device, sigma=sigma, sigma_range=sigma_range, quantize=quantize
    )
    return render_chunked(render_gaussian_noise, x, d)


def poisson_noise(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    peak: ParamValue = None,
    peak_range: Sequence[float] = (5.0, 50.0),
) -> torch.Tensor:
    """Shot noise ``Poisson(peak x) / peak``, ``peak ~ U(peak_range)`` per sample.

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``. The Poisson counts are drawn on the
    generator's device (``torch.poisson``), so the randomness depends on ``x``.
    """
    x = check_batch(x, "poisson_noise")
    p = draw_uniform(
        generator, x.shape[0], peak, peak_range, "peak", x.device, bounds=(1e-6, float("inf"))
    )
    dt = torch.float64 if x.device.type != "mps" else torch.float32
    rate = (x.to(dt).clamp_min(0.0) * p.to(dt).view(-1, 1, 1, 1)).to(generator.device)
    counts = torch.poisson(rate, generator=generator).to(x.device)
    return finish((counts / p.to(dt).view(-1, 1, 1, 1)).to(torch.float32))


@dataclass
class SaltPepperDraws:
    """``amount`` ``(B,)`` float64, ``u`` ``(B, 1, H, W)`` float32 U(0, 1) per pixel."""

    amount: torch.Tensor
    u: torch.Tensor
    salt_ratio: float = 0.5


def draw_salt_pepper_noise(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    amount: ParamValue = None,
    amount_range: Sequence[float] = (0.01, 0.1),
    salt_ratio: float = 0.5,
) -> SaltPepperDraws:
    """Per sample ``amount ~ U(amount_range)``; one uniform per pixel (all channels)."""
    if not 0.0 <= salt_ratio <= 1.0:
        raise ValueError(f"salt_ratio must be in [0, 1], got {salt_ratio}")
    b, _, h, w = (int(v) for v in shape)
    a = draw_uniform(generator, b, amount, amount_range, "amount", device, bounds=(0.0, 1.0))
    return SaltPepperDraws(a, rand(generator, (b, 1, h, w), device, torch.float32), salt_ratio)


def render_salt_pepper_noise(x: torch.Tensor, d: SaltPepperDraws) -> torch.Tensor:
    """Pixels with ``u < amount * salt_ratio`` white, ``u < amount`` black."""
    a = d.amount.view(-1, 1, 1, 1)
    salt = d.u < (a * d.salt_ratio).to(torch.float32)
    pepper = (d.u < a.to(torch.float32)) & ~salt
    out = x.to(torch.float32).masked_fill(salt, 1.0).masked_fill(pepper, 0.0)
    return finish(out)


def salt_pepper_noise(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    amount: ParamValue = None,
    amount_range: Sequence[float] = (0.01, 0.1),
    salt_ratio: float = 0.5,
) -> torch.Tensor:
    """Impulse noise on whole pixels, ``amount ~ U(amount_range)`` per sample (see
    :func:`ramir.degradations.salt_pepper_noise`). ``x``: ``(B, C, H, W)`` in ``[0, 1]``."""
    x = check_batch(x, "salt_pepper_noise")
    d = draw_salt_pepper_noise(
        generator,
        x.shape,
        x.device,
        amount=amount,
        amount_range=amount_range,
        salt_ratio=salt_ratio,
    )
    return render_chunked(render_salt_pepper_noise, x, d)


@dataclass
class SpeckleDraws:
    """``sigma`` ``(B,)`` float64; ``z`` ``(B, C, H, W)`` float32 N(0, 1)."""

    sigma: torch.Tensor
    z: torch.Tensor


def draw_speckle_noise(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (0.1, 0.4),
) -> SpeckleDraws:
    """Per sample ``sigma ~ U(sigma_range)``, and the noise tensor."""
    s = draw_uniform(
        generator, int(shape[0]), sigma, sigma_range, "sigma", device, bounds=(0.0, float("inf"))
    )
    return SpeckleDraws(s, randn(generator, shape, device))


def render_speckle_noise(x: torch.Tensor, d: SpeckleDraws) -> torch.Tensor:
    """``x (1 + sigma z)``, clipped."""
    s = d.sigma.to(torch.float32).view(-1, 1, 1, 1)
    return finish(x.to(torch.float32) * (1.0 + d.z * s))


def speckle_noise(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma: ParamValue = None,
    sigma_range: Sequence[float] = (0.1, 0.4),
) -> torch.Tensor:
    """Multiplicative Gaussian noise ``x (1 + N(0, sigma^2))``, a sigma per sample (see
    :func:`ramir.degradations.speckle_noise`). ``x``: ``(B, C, H, W)`` in ``[0, 1]``."""
    x = check_batch(x, "speckle_noise")
    d = draw_speckle_noise(generator, x.shape, x.device, sigma=sigma, sigma_range=sigma_range)
    return render_chunked(render_speckle_noise, x, d)

"""Low-light degradation: the reference's gamma/scale curve plus sensor noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ramir.degradations._common import as_image, finish, pick

__all__ = ["low_light"]


def low_light(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    gamma: float | None = None,
    gamma_range: Sequence[float] = (2.0, 3.5),
    a: float | None = None,
    a_range: Sequence[float] = (0.9, 1.0),
    b: float | None = None,
    b_range: Sequence[float] = (0.5, 1.0),
    shot_noise: float | None = None,
    shot_noise_range: Sequence[float] = (0.0, 0.002),
    read_noise: float | None = None,
    read_noise_range: Sequence[float] = (0.0, 0.01),
    max_mean: float | None = None,
) -> np.ndarray:
    """Darken with the reference's curve, add sensor noise, store as 8 bits.

    ``dark = b * a * q ** gamma`` where ``q = round(255 * img) / 255`` (the reference's
    ``LightAdder`` lookup table on 8-bit values); then Poisson-Gaussian sensor noise,
    ``dark + sqrt(shot_noise * dark + read_noise^2) * N(0, 1)``; finally clipped and
    rounded to 8 bits. With ``shot_noise = read_noise = 0`` this is exactly the reference
    lookup table ``round(255 * b * a * (k / 255) ** gamma)``.

    The reference curve keeps a bright, flat crop bright (a pale sky at 0.85 comes out
    at 0.53 for ``gamma = 2``, ``a * b = 0.73``): such a "low-light" sample is a
    clean-looking pale photo with a brighter target, and teaches a blind model to
    brighten clean foggy or pale photos. ``max_mean`` (not in the reference; ``None``
    keeps it exact) scales ``dark`` down, before the noise, to that mean level when it
    would be brighter, so that every low-light sample is dark.

    Args:
        gamma: exponent (> 0), reference draw ``[2, 3.5]``; ``None`` draws from ``gamma_range``.
        a: first scale, reference ``[0.9, 1]``; ``None`` draws from ``a_range``.
        b: second scale, reference ``[0.5, 1]``; ``None`` draws from ``b_range``.
        shot_noise: signal-dependent noise variance per unit intensity (>= 0);
            ``None`` draws from ``shot_noise_range``.
        read_noise: signal-independent noise std in ``[0, 1]`` units (>= 0);
            ``None`` draws from ``read_noise_range``.
        max_mean: ``None`` (the reference), or a mean level in ``(0, 1]``: a darkened
            image brighter than that on average is scaled down to it.
    """
    x = as_image(img, "low_light")
    if max_mean is not None and not 0.0 < float(max_mean) <= 1.0:
        raise ValueError(f"low_light: max_mean must be in (0, 1], got {max_mean}")
    g = pick(rng, gamma, gamma_range, "gamma", bounds=(1e-6, float("inf")))
    sa = pick(rng, a, a_range, "a", bounds=(0.0, float("inf")))
    sb = pick(rng, b, b_range, "b", bounds=(0.0, float("inf")))
    shot = pick(rng, shot_noise, shot_noise_range, "shot_noise", bounds=(0.0, float("inf")))
    read = pick(rng, read_noise, read_noise_range, "read_noise", bounds=(0.0, float("inf")))
    q = np.rint(np.clip(x, 0.0, 1.0) * 255.0) / 255.0
    dark = (sb * sa) * np.power(q.astype(np.float64), g)
    if max_mean is not None and float(dark.mean()) > max_mean:
        dark = dark * (float(max_mean) / float(dark.mean()))
    if shot > 0 or read > 0:
        std = np.sqrt(shot * dark + read * read)
        dark = dark + std * rng.standard_normal(dark.shape)
    out = np.rint(np.clip(dark, 0.0, 1.0) * 255.0) / 255.0
    return finish(out)

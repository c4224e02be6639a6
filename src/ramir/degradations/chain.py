"""Several degradations in a row: the mixed degradations of real photos.

A photo from a phone is rarely hit by one clean degradation: it is noisy *and* JPEG
compressed, or slightly out of focus *and* compressed. :func:`chain` applies a list of
registered degradations in order, each with its own parameters and an optional
probability, all drawn from the one generator, so a chain is as seedable as its parts:

>>> import numpy as np
>>> x = np.full((16, 16, 3), 0.5, np.float32)
>>> steps = [{"name": "gaussian_noise", "sigma": 10}, {"name": "jpeg", "quality": 40}]
>>> chain(x, np.random.default_rng(0), steps=steps).shape
(16, 16, 3)

Images are float32 ``(H, W, C)`` in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ramir.degradations._common import as_image, finish

__all__ = ["chain", "check_steps", "CAMERA_STEPS"]

CAMERA_STEPS: tuple[dict[str, Any], ...] = (
    {"name": "gaussian_blur", "p": 0.4, "sigma_range": [0.1, 2.0]},
    {"name": "gaussian_noise", "p": 0.7, "sigma_range": [0.0, 30.0]},
    {"name": "jpeg", "quality_range": [20, 95]},
)
"""The default chain: sometimes a little blur, often sensor noise, then JPEG, each mild to
strong, like a photo from a phone or a web page."""


def check_steps(
    steps: Sequence[Mapping[str, Any]],
    lookup: Callable[[str], Callable[..., np.ndarray]],
    validate: Callable[[str, Mapping[str, Any]], None],
) -> list[tuple[str, float, dict[str, Any]]]:
    """Validate chain ``steps``; returns ``(name, probability, params)`` per step.

    Each step is a mapping with ``name`` (a registered degradation other than ``chain``),
    an optional ``p`` (probability that the step is applied, in ``[0, 1]``, default 1)
    and the degradation's own keyword parameters.

    Raises:
        ValueError: no steps, a step without ``name``, a nested chain, a bad ``p`` or an
            unknown parameter (the message names the step).
    """
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(
            "chain: steps must be a non-empty list of {name: DEGRADATION, ...params} "
            f"mappings, got {steps!r}"
        )
    out = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or "name" not in step:
            raise ValueError(
                f"chain: step {i} must be a mapping with a 'name' (e.g. "
                f"{{name: jpeg, quality: 40}}), got {step!r}"
            )
        params = {k: v for k, v in step.items() if k not in ("name", "p")}
        name = str(step["name"])
        if name == "chain":
            raise ValueError(f"chain: step {i} is itself a chain; list its steps instead")
        lookup(name)  # unknown names list the choices
        try:
            validate(name, params)
        except ValueError as e:
            raise ValueError(f"chain: step {i} ({name}): {e}") from None
        p = float(step.get("p", 1.0))
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"chain: step {i} ({name}): p must be in [0, 1], got {p}")
        out.append((name, p, params))
    return out


def chain(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    steps: Sequence[Mapping[str, Any]] = CAMERA_STEPS,
) -> np.ndarray:
    """Apply the degradations of ``steps`` in order (mixed degradations).

    Args:
        steps: a list of ``{"name": DEGRADATION, "p": PROBABILITY, **params}``; ``p``
            (default 1) is the chance that the step is applied. Parameters left out are
            drawn from their ranges, as for the degradation alone. Example, the mixed
            test of the photo evaluation set:
            ``[{"name": "gaussian_noise", "sigma": 10}, {"name": "jpeg", "quality": 40}]``.
            Default: :data:`CAMERA_STEPS` (blur with probability 0.4, sigma 0.1-2; noise
            with probability 0.7, sigma 0-30; JPEG quality 20-95).
    """
    from ramir.degradations import get, validate_params

    x = as_image(img, "chain")
    for name, p, params in check_steps(steps, get, validate_params):
        # One draw per step, applied or not, so later steps see the same stream.
        if rng.random() < p:
            x = get(name)(x, rng, **params)
    return finish(x)

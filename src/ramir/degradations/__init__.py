"""Seedable image degradations, registered by name.

Every degradation is a pure function ``fn(img, rng, **params) -> img``:

* ``img``: ``numpy.ndarray`` float32 ``(H, W, C)`` in ``[0, 1]`` (C = 3 for RGB);
  the input is never modified;
* ``rng``: a ``numpy.random.Generator``; all randomness comes from it, so the same
  generator state gives the same output;
* ``params``: keyword-only. A parameter ``p`` left at ``None`` is drawn uniformly from
  ``p_range`` (training); giving ``p`` fixes it (test sets);
* returns a new float32 ``(H, W, C)`` array in ``[0, 1]``.

Use :func:`apply` for torch ``(C, H, W)`` tensors. :func:`names` lists the registry,
:func:`get` returns a function, :func:`describe` its documentation. Batched versions on
any device, ``(B, C, H, W)`` tensors with per-sample parameters: :mod:`ramir.degradations.
device` (:func:`apply_batch`, :func:`has_device_version`).

===================  ===========================================================
name                 what
===================  ===========================================================
identity             clean -> clean (the reference's "origin" task)
gaussian_noise       additive Gaussian, sigma on the 0-255 scale, 8-bit output
gaussian_blur        15x15 isotropic Gaussian
jpeg                 JPEG compression at a quality
haze                 atmospheric scattering with a smooth pseudo-depth
rain                 oriented motion-blurred streaks, screen-blended
low_light            reference gamma/scale curve + Poisson-Gaussian sensor noise
motion_blur          random camera-trajectory kernel
poisson_noise        shot noise (paper Table 6, out of distribution)
salt_pepper_noise    impulse noise (paper Table 6)
speckle_noise        multiplicative Gaussian (paper Table 6)
chain                several of the above in a row (noise then JPEG, ...)
===================  ===========================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ramir.degradations._common import as_image
from ramir.degradations.blur import gaussian_blur, gaussian_kernel, motion_blur, motion_kernel
from ramir.degradations.chain import chain, check_steps
from ramir.degradations.jpeg import jpeg
from ramir.degradations.light import low_light
from ramir.degradations.noise import gaussian_noise, poisson_noise, salt_pepper_noise, speckle_noise
from ramir.degradations.weather import haze, rain
from ramir.registry import Registry

__all__ = [
    "DegradationFn",
    "Degradation",
    "REGISTRY",
    "names",
    "get",
    "describe",
    "parameters",
    "validate_params",
    "apply",
    "identity",
    "gaussian_noise",
    "gaussian_blur",
    "jpeg",
    "haze",
    "rain",
    "low_light",
    "motion_blur",
    "poisson_noise",
    "salt_pepper_noise",
    "speckle_noise",
    "chain",
    "gaussian_kernel",
    "motion_kernel",
    "apply_batch",
    "has_device_version",
]

DegradationFn = Callable[..., np.ndarray]


def identity(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """No degradation: a copy of the clean image (the reference's identity/"origin" task)."""
    return np.array(as_image(img, "identity"), dtype=np.float32, copy=True)


REGISTRY: Registry[DegradationFn] = Registry("degradation", word="parameter", keyword_only=True)
for _fn in (
    identity,
    gaussian_noise,
    gaussian_blur,
    jpeg,
    haze,
    rain,
    low_light,
    motion_blur,
    poisson_noise,
    salt_pepper_noise,
    speckle_noise,
    chain,
):
    REGISTRY.add(_fn.__name__, _fn)
del _fn


def names() -> list[str]:
    """Registered degradation names, sorted."""
    return REGISTRY.names()


def get(name: str) -> DegradationFn:
    """The degradation function called ``name`` (unknown names list the choices)."""
    return REGISTRY.get(name)


def parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of degradation ``name`` and their defaults."""
    return REGISTRY.kwargs_of(name)


def describe(name: str) -> str:
    """The documentation of degradation ``name`` (parameters and ranges)."""
    fn = get(name)
    return f"{name}{inspect.signature(fn)}\n\n{inspect.getdoc(fn) or ''}"


def validate_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise an error if ``params`` has a key that degradation ``name`` does not take.

    The error is a :class:`ramir.registry.UnknownArgumentError` (a ``ValueError`` and a
    ``TypeError``) listing the valid parameters.
    """
    REGISTRY.check_kwargs(name, params)
    if name == "chain" and "steps" in params:
        check_steps(params["steps"], get, validate_params)


def apply(
    name: str, img: np.ndarray | torch.Tensor, rng: np.random.Generator, **params: Any
) -> np.ndarray | torch.Tensor:
    """Apply degradation ``name``; a torch ``(C, H, W)`` tensor in gives a tensor out.

    NumPy input is ``(H, W, C)`` float in ``[0, 1]``.
    """
    fn = get(name)
    validate_params(name, params)
    if isinstance(img, torch.Tensor):
        if img.ndim != 3:
            raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(img.shape)}")
        arr = img.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0)
        out = fn(np.ascontiguousarray(arr), rng, **params)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).to(img.device)
    return fn(img, rng, **params)


@dataclass(frozen=True)
class Degradation:
    """A named degradation with fixed keyword parameters, callable as ``d(img, rng)``.

    >>> d = Degradation("jpeg", {"quality": 50})
    >>> d(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0)).shape
    (8, 8, 3)
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get(self.name)
        validate_params(self.name, self.params)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return get(self.name)(img, rng, **self.params)


# the batched (device) versions; imported last, they use the registry above
from ramir.degradations.device import apply_batch, has_device_version  # noqa: E402

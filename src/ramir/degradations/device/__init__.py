"""Degradations as batched tensor operations on the training device.

Every registered degradation of :mod:`ramir.degradations` has a batched version here:
``fn(x, generator, **params) -> tensor`` with

* ``x``: float tensor ``(B, C, H, W)`` in ``[0, 1]`` on any device (CPU, CUDA); the input
  is never modified; the output is float32 ``(B, C, H, W)`` in ``[0, 1]`` on that device;
* ``generator``: a ``torch.Generator`` (or an int seed). Draws are made on the
  generator's device: ``torch.Generator(device=x.device)`` is the fast path, a CPU
  generator gives the same draws on every device. Same seed, same device type, same
  parameters -> identical output;
* ``params``: the NumPy version's keyword parameters, same names, defaults and ranges;
  a parameter left at ``None`` is drawn **per sample** from the distribution the NumPy
  version draws it from; a number fixes it for the batch, a sequence or 1-D tensor of
  length ``B`` fixes it per sample. Unknown names are the NumPy registry's error.

The NumPy versions stay the reference: for the same random draws each batched version
gives the NumPy output (exactly, or to float32 rounding where an FFT or a convolution
sums in another order), and ``tests/test_degradations_device.py`` checks it by feeding
the draws NumPy made. JPEG is bit-identical to Pillow (see :mod:`.compression`).

=================  ==========================================================  ==========
name               per-sample draws (NumPy's distribution)                      how
=================  ==========================================================  ==========
identity           none                                                         a copy
gaussian_noise     sigma ~ U(sigma_range); z ~ N(0, 1) per pixel                elementwise
gaussian_blur      sigma ~ U(sigma_range)                                       grouped conv
motion_blur        size ~ U{range} (even + 1); anxiety ~ U; trajectory draws     FFT conv
jpeg               quality ~ U{quality_range}                                   PIL / tensor
haze               beta, airlight, scene_scale ~ U; lattice, ramp, window       matmuls
rain               density, length, angle, intensity, width ~ U; drops          FFT conv
low_light          gamma, a, b, shot_noise, read_noise ~ U; z ~ N(0, 1)          elementwise
poisson_noise      peak ~ U(peak_range); Poisson counts                         elementwise
salt_pepper_noise  amount ~ U(amount_range); u ~ U(0, 1) per pixel              elementwise
speckle_noise      sigma ~ U(sigma_range); z ~ N(0, 1)                          elementwise
chain              per step u ~ U(0, 1) < p, then the step's own draws          subsets
=================  ==========================================================  ==========

Dispatch: :func:`apply_batch` takes a name, a :class:`ramir.degradations.Degradation`
(what :mod:`ramir.data.mixture` holds per task), a ``(name, params)`` pair or a mapping;
:func:`batch_version` turns any of those into a :class:`BatchDegradation`;
:func:`apply_per_sample` degrades a batch whose samples belong to different tasks.

Path (``path="auto"``): on CUDA (any device but the CPU) the batched version always
runs. On the CPU, the degradations in :data:`CPU_NUMPY_FASTER` would run the NumPy
reference one sample at a time instead (each sample seeded from the torch generator);
measured, none is faster that way (the batched renders run in cache-sized chunks of 8
samples there, and JPEG is Pillow per sample either way). ``path="batched"`` or
``"numpy"`` forces one (``numpy``: the reference itself, e.g. to compare).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from ramir.degradations.device._common import as_generator, check_batch, make_generator
from ramir.degradations.device.blur import gaussian_blur, motion_blur
from ramir.degradations.device.compression import jpeg, jpeg_backend, jpeg_pil, jpeg_tensor
from ramir.degradations.device.light import low_light
from ramir.degradations.device.mixed import chain
from ramir.degradations.device.noise import (
    gaussian_noise,
    poisson_noise,
    salt_pepper_noise,
    speckle_noise,
)
from ramir.degradations.device.weather import haze, rain

__all__ = [
    "BatchFn",
    "BatchDegradation",
    "Spec",
    "Path",
    "CPU_NUMPY_FASTER",
    "preferred_path",
    "numpy_per_sample",
    "identity",
    "gaussian_noise",
    "gaussian_blur",
    "motion_blur",
    "jpeg",
    "jpeg_tensor",
    "jpeg_pil",
    "jpeg_backend",
    "haze",
    "rain",
    "low_light",
    "poisson_noise",
    "salt_pepper_noise",
    "speckle_noise",
    "chain",
    "device_names",
    "has_device_version",
    "get_batch",
    "batch_version",
    "apply_batch",
    "apply_per_sample",
    "make_generator",
]

BatchFn = Callable[..., torch.Tensor]
Path = Literal["auto", "batched", "numpy"]

CPU_NUMPY_FASTER: frozenset[str] = frozenset()
"""Degradations whose NumPy version, one sample at a time, is faster on the CPU than the
batched one: none. Measured with ``benchmarks/bench_degradations.py`` (batch 32 of
128 x 128 crops, 1 and 2 threads, renders in chunks of ``CPU_CHUNK`` = 8), batched /
NumPy route over 6 runs: identity 4-16x, noise 1.8-2.7x, blur 1.7-2.9x, haze 1.6-2.7x,
motion blur 1.3-1.6x, rain 1.2-1.6x, low light 0.95-1.3x, the chain 0.9-1.2x, JPEG
0.9-1.1x (Pillow per sample on both paths). Before chunking, JPEG, low light and motion
blur were here."""


def identity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """No degradation: a float32 copy of ``x`` ``(B, C, H, W)``."""
    return check_batch(x, "identity").to(torch.float32, copy=True)


_BATCH: dict[str, BatchFn] = {
    fn.__name__: fn
    for fn in (
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
    )
}


def device_names() -> list[str]:
    """Names of the degradations with a batched version, sorted."""
    return sorted(_BATCH)


def has_device_version(name: str) -> bool:
    """Whether degradation ``name`` has a batched tensor version."""
    return name in _BATCH


def get_batch(name: str) -> BatchFn:
    """The batched version of degradation ``name`` (unknown names list the choices)."""
    from ramir.degradations import get

    get(name)  # an unknown name: the NumPy registry's error
    if name not in _BATCH:
        raise KeyError(
            f"degradation {name!r} has no batched version; these do: {', '.join(device_names())}"
        )
    return _BATCH[name]


def preferred_path(name: str, device: torch.device | str) -> Literal["batched", "numpy"]:
    """The faster path for ``name`` on ``device`` (see :data:`CPU_NUMPY_FASTER`)."""
    if torch.device(device).type == "cpu" and name in CPU_NUMPY_FASTER:
        return "numpy"
    return "batched"


def _sample_params(params: Mapping[str, Any], i: int, n: int) -> dict[str, Any]:
    """Sample ``i``'s keyword parameters: per-sample values (length ``n``) indexed."""
    out = {}
    for k, v in params.items():
        if k == "steps" or k.endswith("_range") or v is None or isinstance(v, (str, int, float)):
            out[k] = v
            continue
        t = torch.as_tensor(v)
        if t.ndim == 0:
            out[k] = t.item()
        elif t.shape == (n,):
            out[k] = t[i].item()
        else:
            raise ValueError(
                f"{k}: expected one value or {n} (one per sample), got {tuple(t.shape)}"
            )
    return out


def numpy_per_sample(
    name: str, x: torch.Tensor, generator: torch.Generator, params: Mapping[str, Any]
) -> torch.Tensor:
    """Degrade ``x`` ``(B, C, H, W)`` with the NumPy reference, one sample at a time; sample
    ``i`` uses ``numpy.random.default_rng(seed_i)`` with ``seed_i`` drawn from
    ``generator``, so the batch is reproducible under the torch seed. Float32 out on
    ``x``'s device."""
    from ramir.degradations import get

    x = check_batch(x, name)
    fn = get(name)
    b = x.shape[0]
    seeds = torch.randint(0, 2**62, (b,), generator=generator, device=generator.device).tolist()
    arr = x.detach().to("cpu", torch.float32).permute(0, 2, 3, 1).contiguous().numpy()
    out = np.stack(
        [
            fn(arr[i], np.random.default_rng(seeds[i]), **_sample_params(params, i, b))
            for i in range(b)
        ]
    )
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device)


def _run(
    name: str, x: torch.Tensor, g: torch.Generator, params: Mapping[str, Any], path: Path
) -> torch.Tensor:
    """Run degradation ``name`` on the chosen path (``auto``: :func:`preferred_path`; a
    batched chain runs each step on ``path`` again)."""
    if path not in ("auto", "batched", "numpy"):
        raise ValueError(f"path must be 'auto', 'batched' or 'numpy', got {path!r}")
    chosen = preferred_path(name, x.device) if path == "auto" else path
    if chosen == "numpy":
        return numpy_per_sample(name, x, g, params)
    if name == "chain":
        return chain(x, g, path=path, **params)
    return _BATCH[name](x, g, **params)


@dataclass(frozen=True)
class BatchDegradation:
    """A named batched degradation with fixed parameters, callable as ``d(x, generator)``.

    The batched twin of :class:`ramir.degradations.Degradation` (same name and params).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from ramir.degradations import validate_params

        get_batch(self.name)
        validate_params(self.name, self.params)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator | int, path: Path = "auto"
    ) -> torch.Tensor:
        """Degrade ``x`` ``(B, C, H, W)`` in ``[0, 1]`` on ``path`` (see the module);
        float32 out."""
        g = as_generator(generator, x.device)
        return _run(self.name, check_batch(x, self.name), g, self.params, path)


Spec = Any
"""A degradation as the configs hold it: a name; a :class:`ramir.degradations.
Degradation` or :class:`BatchDegradation` (``.name``, ``.params``); a ``(name, params)``
pair; a mapping ``{"name": NAME, **params}`` (a chain step) or ``{"degradation": NAME,
"params": {...}}`` (a dataset entry); or an object with ``.degradation`` and ``.params``
(a :class:`ramir.data.config.DatasetSpec`)."""


def batch_version(spec: Spec, params: Mapping[str, Any] | None = None) -> BatchDegradation:
    """The batched version of a degradation spec (see :data:`Spec`); ``params`` are
    merged over the spec's own."""
    name, own = _parse(spec)
    return BatchDegradation(name, {**own, **dict(params or {})})


def _parse(spec: Spec) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "degradation" in spec:
            return str(spec["degradation"]), dict(spec.get("params") or {})
        if "name" in spec:
            return str(spec["name"]), {k: v for k, v in spec.items() if k != "name"}
        raise ValueError(f"a degradation mapping needs 'name' or 'degradation', got {spec!r}")
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], dict(spec[1] or {})
    deg = getattr(spec, "degradation", None)
    if isinstance(deg, str):
        return deg, dict(getattr(spec, "params", None) or {})
    name = getattr(spec, "name", None)
    if isinstance(name, str) and hasattr(spec, "params"):
        return name, dict(spec.params or {})
    raise TypeError(f"not a degradation spec: {spec!r}")


def apply_batch(
    name_or_spec: Spec,
    x: torch.Tensor,
    generator: torch.Generator | int,
    params: Mapping[str, Any] | None = None,
    *,
    path: Path = "auto",
) -> torch.Tensor:
    """Degrade the batch ``x`` ``(B, C, H, W)`` (float in ``[0, 1]``, any device) with the
    batched version of ``name_or_spec`` (see :data:`Spec`), ``params`` over its own;
    ``path`` as in the module. Float32 ``(B, C, H, W)`` in ``[0, 1]`` out.

    >>> x = torch.full((2, 3, 16, 16), 0.5)
    >>> apply_batch("gaussian_noise", x, 0, {"sigma": [5.0, 25.0]}).shape
    torch.Size([2, 3, 16, 16])
    """
    return batch_version(name_or_spec, params)(x, generator, path)


def apply_per_sample(
    x: torch.Tensor,
    specs: Sequence[Spec],
    generator: torch.Generator | int,
    *,
    path: Path = "auto",
) -> torch.Tensor:
    """Degrade sample ``i`` of ``x`` ``(B, C, H, W)`` with ``specs[i]`` (a mixed batch of
    tasks): samples with the same spec go through its batched version together, in
    the order the specs first appear. Returns float32 ``(B, C, H, W)``."""
    x = check_batch(x, "apply_per_sample")
    if len(specs) != x.shape[0]:
        raise ValueError(f"expected {x.shape[0]} specs (one per sample), got {len(specs)}")
    g = as_generator(generator, x.device)
    groups: dict[str, tuple[BatchDegradation, list[int]]] = {}
    for i, spec in enumerate(specs):
        d = spec if isinstance(spec, BatchDegradation) else batch_version(spec)
        key = repr((d.name, sorted((k, repr(v)) for k, v in d.params.items())))
        groups.setdefault(key, (d, []))[1].append(i)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for d, idx in groups.values():
        ii = torch.tensor(idx, device=x.device)
        out[ii] = d(x.index_select(0, ii), g, path)
    return out

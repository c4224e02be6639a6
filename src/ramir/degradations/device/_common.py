"""Helpers of the batched degradations: input checks, generators and per-sample draws.

Every batched degradation takes ``x``, a float tensor ``(B, C, H, W)`` in ``[0, 1]`` on
any device, and a ``torch.Generator``. Draws are made **on the generator's device** and
then moved to ``x``'s device, so:

* a generator on ``x``'s device (``torch.Generator(device=x.device)``) is the fast path:
  nothing crosses the bus;
* a CPU generator gives the same draws whatever device ``x`` is on (slower on CUDA: the
  noise tensors are drawn on the CPU and copied);
* the same seed on the same kind of device gives identical outputs. CPU (Mersenne
  Twister) and CUDA (Philox) generators give different streams, and neither is NumPy's:
  the batched degradations match the NumPy ones in distribution, not draw for draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from ramir.degradations._common import _check_range

__all__ = [
    "ParamValue",
    "check_batch",
    "make_generator",
    "as_generator",
    "rand",
    "randn",
    "draw_uniform",
    "draw_int",
    "float64_ok",
    "finish",
    "CPU_CHUNK",
    "render_chunked",
]

D = TypeVar("D")

CPU_CHUNK = 8
"""On the CPU, renders run this many samples at a time: a batch of 32 128 x 128 crops
(6 MB a tensor) leaves the cache, and measured 1.5-2x slower per sample, and twice as
variable beside other processes, than chunks of 8 (``benchmarks/bench_degradations.py``).
The draws are made for the whole batch first, so the output does not depend on it."""

ParamValue = float | int | Sequence[float] | torch.Tensor | None
"""A parameter override: ``None`` (draw it), one number (every sample), or one value per
sample (a sequence or 1-D tensor of length ``B``)."""


def check_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    """Check a batched degradation input: a float tensor ``(B, C, H, W)``; returns it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a float tensor (B, C, H, W) in [0, 1], got {type(x).__name__}; "
            "use ramir.degradations.get() for NumPy (H, W, C) images"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name}: expected a batch of shape (B, C, H, W), got {tuple(x.shape)}")
    return x


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def as_generator(generator: torch.Generator | int, device: torch.device) -> torch.Generator:
    """``generator`` itself, or for an int seed a new generator on ``device``."""
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            f"expected a torch.Generator or an int seed, got {type(generator).__name__}"
        )
    return make_generator(generator, device)


def float64_ok(device: torch.device) -> bool:
    """Whether ``device`` computes in float64 (CPU and CUDA do; Apple's MPS does not)."""
    return device.type != "mps"


def rand(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uniform ``[0, 1)`` draws made on the generator's device, returned on ``device``."""
    out = torch.rand(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)


def randn(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal draws made on the generator's device, returned on ``device``."""
    out = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)


def _given(value: ParamValue, n: int, what: str, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype).detach().cpu()
    if t.ndim == 0:
        return t.expand(n).clone()
    if t.shape != (n,):
        raise ValueError(
            f"{what}: expected one value or {n} (one per sample), got {tuple(t.shape)}"
        )
    return t.clone()


def _check_bounds(t: torch.Tensor, what: str, bounds: tuple[float, float] | None) -> None:
    if bounds is None or t.numel() == 0:
        return
    lo, hi = float(t.min()), float(t.max())
    if not (bounds[0] <= lo and hi <= bounds[1]) or t.isnan().any():
        bad = lo if not bounds[0] <= lo else hi
        raise ValueError(f"{what} must be in [{bounds[0]}, {bounds[1]}], got {bad}")


def draw_uniform(
    generator: torch.Generator,
    n: int,
    value: ParamValue,
    value_range: Sequence[float],
    what: str,
    device: torch.device,
    *,
    bounds: tuple[float, float] | None = None,
) -> torch.Tensor:
    """``n`` per-sample values (float64, on ``device``), as the NumPy ``pick`` draws one.

    ``value`` given: that value (one, or one per sample), checked against ``bounds``.
    ``None``: ``U(low, high)`` from ``value_range`` (``low`` itself when equal), as
    ``rng.uniform(low, high)``.
    """
    if value is None:
        lo, hi = _check_range(value_range, f"{what}_range")
        # every draw lies in [lo, hi]: check the range once, not the draws
        _check_bounds(torch.tensor([lo, hi]), f"{what}_range", bounds)
        if lo == hi:
            return torch.full((n,), lo, dtype=torch.float64, device=device)
        return lo + (hi - lo) * rand(generator, (n,), device)
    out = _given(value, n, what, torch.float64)
    _check_bounds(out, what, bounds)
    return out.to(device)


def draw_int(
    generator: torch.Generator,
    n: int,
    value: ParamValue,
    value_range: Sequence[int],
    what: str,
    device: torch.device,
    *,
    bounds: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Like :func:`draw_uniform` for integers (int64); the range is inclusive at both ends,
    as ``rng.integers(low, high + 1)``."""
    if value is None:
        lo, hi = _check_range(value_range, f"{what}_range")
        _check_bounds(torch.tensor([lo, hi]), f"{what}_range", bounds)
        out = torch.randint(
            int(lo), int(hi) + 1, (n,), generator=generator, device=generator.device
        )
        return out.to(device)
    f = _given(value, n, what, torch.float64)
    if not torch.equal(f, f.round()):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    out = f.long()
    _check_bounds(out, what, bounds)
    return out.to(device)


def finish(x: torch.Tensor) -> torch.Tensor:
    """Clip to ``[0, 1]`` (a new tensor)."""
    return x.clamp(0.0, 1.0)


def _rows(d: Any, i: int, j: int) -> Any:
    """Samples ``i:j`` of a draws dataclass (every tensor field is per sample on dim 0)."""
    parts = {
        f.name: getattr(d, f.name)[i:j]
        for f in dataclasses.fields(d)
        if isinstance(getattr(d, f.name), torch.Tensor)
    }
    return dataclasses.replace(d, **parts)


def render_chunked(
    render: Callable[[torch.Tensor, D], torch.Tensor], x: torch.Tensor, draws: D
) -> torch.Tensor:
    """``render(x, draws)``; on the CPU :data:`CPU_CHUNK` samples at a time."""
    b = x.shape[0]
    if x.device.type != "cpu" or b <= CPU_CHUNK:
        return render(x, draws)
    return torch.cat(
        [
            render(x[i : i + CPU_CHUNK], _rows(draws, i, i + CPU_CHUNK))
            for i in range(0, b, CPU_CHUNK)
        ]
    )

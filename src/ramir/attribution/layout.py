"""Whether several MAC path steps may share a batch: layer-output layouts, declared or probed.

Pairing ``y_l(x_t)`` with ``y_l(x_{t-1})`` inside one batch needs *sample-major*
outputs (the leading dimension is the batch, or the batch times e.g. windows, sample
outermost). A model states whether its layer outputs are laid out so with a
``per_sample_outputs`` attribute (ramir's backbones do: ``True`` by default on
:class:`ramir.models.base.RestorationModel`); for a module that says nothing, a one-off
probe (cached per model and shape) checks every layer before path steps are batched.
RAM-SwinIR's ``"fast"`` attention groups windows of all samples by mask pattern, so it is
switched to its ``"plain"`` implementation (the official computation) for the run and
switched back afterwards; any other model whose outputs are not sample-major runs one
path step per forward (``chunk = 1``), which is exact for any layout, with a warning.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ramir.attribution.recorder import first_tensor
from ramir.attribution.selection import list_layers

__all__ = ["choose_chunk", "declared_per_sample", "not_sample_major", "probe_inputs"]

# model -> {(batch, C, H, W, dtype, device, attn_impl): layers not sample-major}. Layouts
# depend on shapes and code paths, not on weights, so one probe per shape is enough.
_LAYOUT_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, set[str]]] = (
    weakref.WeakKeyDictionary()
)


def probe_inputs(lq: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` clearly different inputs built from the first image (for layout probes)."""
    x = lq[:1]
    h, w = x.shape[-2:]
    samples = [
        torch.roll(x, shifts=(3 * j % h, 5 * j % w), dims=(-2, -1)) * (1.0 - 0.37 * j)
        for j in range(n)
    ]
    return torch.cat(samples)


def _slot_stats(y: torch.Tensor, n: int) -> torch.Tensor | None:
    """Per-sample statistics ``(n, 4)`` (sum |y|, sum y^2, max, min) of a batched output.

    They do not depend on the order of a sample's elements, only on which elements its
    slot holds, which is what pairing path steps needs. ``None`` if ``y`` cannot be split.
    """
    if y.dim() == 0 or y.shape[0] % n:
        return None
    v = y.detach().unflatten(0, (n, -1)).flatten(1).to(torch.float64)
    return torch.stack([v.abs().sum(1), (v * v).sum(1), v.amax(1), v.amin(1)], dim=1).cpu()


def not_sample_major(model: nn.Module, names: Sequence[str], probe: torch.Tensor) -> list[str]:
    """Layers whose output for a batch is not the per-sample outputs stacked sample-major.

    Runs ``probe`` ``(N, ...)`` as one batch and its first and last samples alone (no
    gradients) and compares statistics of each layer's output slots with those of the
    single runs; layouts that mix samples (e.g. windows grouped across the batch) show up
    as large differences. Only a few numbers per layer are kept.
    """
    n = probe.shape[0]
    stats: dict[str, list[torch.Tensor | None]] = {}
    size = n

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            y = first_tensor(output)
            if y is not None:
                stats[name].append(_slot_stats(y, size))

        return hook

    handles = [model.get_submodule(nm).register_forward_hook(hook_for(nm)) for nm in names]
    runs: list[dict[str, list[torch.Tensor | None]]] = []
    try:
        with torch.no_grad():
            for x in (probe, probe[:1], probe[-1:]):
                stats = {nm: [] for nm in names}
                size = x.shape[0]
                model(x)
                runs.append(stats)
    finally:
        for hd in handles:
            hd.remove()
    batch, first, last = runs
    failed = []
    for nm in names:
        ok = len(batch[nm]) == len(first[nm]) == len(last[nm])
        for sb, s0, s1 in zip(batch[nm], first[nm], last[nm], strict=False):
            if sb is None or s0 is None or s1 is None:
                ok = False
                break
            for slot, single in ((sb[0], s0[0]), (sb[-1], s1[0])):
                scale = float(single[:2].abs().max()) + float(single[2:].abs().max())
                if float((slot - single).abs().max()) > 1e-4 * scale + 1e-6:
                    ok = False
        if not ok:
            failed.append(nm)
    return failed


def declared_per_sample(model: nn.Module) -> bool | None:
    """What ``model`` says about the layout of its layer outputs, or ``None`` if silent.

    A model declares it with a ``per_sample_outputs`` attribute (ramir's backbones inherit
    ``True`` from :class:`ramir.models.base.RestorationModel`; RAM-SwinIR's says ``True``
    only with its ``"plain"`` attention): ``True`` means that for a batch of ``N`` inputs
    the output of every layer is the ``N`` single-input outputs stacked along the leading
    dimension, sample outermost (the leading dimension may be ``N`` times e.g. windows).
    """
    value = getattr(model, "per_sample_outputs", None)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise TypeError(
            f"{type(model).__name__}.per_sample_outputs must be True or False, got {value!r}"
        )
    return value


def choose_chunk(
    model: nn.Module, names: Sequence[str], lq: torch.Tensor, steps: int, chunk: int
) -> tuple[int, str | None]:
    """The chunk to use and the attention implementation to switch back to afterwards.

    Several path steps in one batch need sample-major layer outputs. A model that declares
    its layout (:func:`declared_per_sample`) is taken at its word; for any other
    module a one-off probe (cached per model and shape) checks every layer. A model whose
    outputs are not sample-major but that offers ``set_attention_impl("plain")``
    (RAM-SwinIR: its ``"fast"`` attention groups the windows of all samples by mask
    pattern) is switched to ``"plain"`` when that makes the layout sample-major; any other
    runs one path step per forward (``chunk = 1``, which is exact for any layout), with a
    warning.
    """
    if chunk == 1 or steps == 1:
        return chunk, None
    b = lq.shape[0]
    sizes = {b * min(chunk, steps)} | ({b * (steps % chunk)} if steps % chunk else set())
    sizes.discard(1)
    cache = _LAYOUT_CACHE.setdefault(model, {})

    def failures() -> list[str]:
        declared = declared_per_sample(model)
        if declared is not None:
            return [] if declared else list(names)
        bad: set[str] = set()
        for size in sorted(sizes):
            impl = getattr(model, "attn_impl", None)
            key = (size, *lq.shape[1:], lq.dtype, lq.device, impl)
            if key not in cache:
                probe = probe_inputs(lq, size)
                cache[key] = set(not_sample_major(model, list_layers(model), probe))
            bad |= cache[key] & set(names)
        return sorted(bad)

    bad = failures()
    if not bad:
        return chunk, None
    switch = getattr(model, "set_attention_impl", None)
    old = getattr(model, "attn_impl", None)
    if callable(switch) and old is not None and old != "plain":
        switch("plain")
        if not failures():
            return chunk, old
        switch(old)
    if declared_per_sample(model) is False:
        what = f"{type(model).__name__}.per_sample_outputs is False: its layer outputs mix samples"
    else:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        what = f"the outputs of {len(bad)} layer(s) ({shown}) are not laid out sample by sample"
    warnings.warn(
        f"{what} when {b * chunk} inputs are batched, so several path steps cannot share a "
        "batch; running one path step per forward (chunk=1, exact but slower)",
        RuntimeWarning,
        stacklevel=4,
    )
    return 1, None

"""Mask Attribution Conductance (MAC) and the paper's baselines (paper Eq. 5-9; see docs/method.md#mac).

MAC ranks every layer of a masked-pretrained network by how much of the change from a
masked input to the whole input flows through it. Along a *mask path* that reveals the
pixels of ``lq`` in a random order, starting from ``1 - start_ratio`` of them revealed,

* step ``t = 0..N-1`` has ``alpha_t = (1 - r) + r * t / N``;
* the pixel of rank ``i`` in the reveal order gets the soft mask
  ``sigmoid(k * (alpha_t - i / (H*W)))`` if ``i < ceil(alpha_t * H * W)``, else 0;
* the input is ``x_t = x' + m_t * (lq - x')`` with baseline ``x' = 0``;
* for ``t >= 1`` the conductance of layer ``l`` accumulates, elementwise over the layer's
  output ``y_l``, ``dF/dy_l(x_t) * (y_l(x_t) - y_l(x_{t-1}))`` (gradient at the later
  point, as in the authors' corrected code);
* the score of layer ``l`` for one image is ``mean(|cond_l|)``; scores add over images.

``F`` is the total gradient magnitude of the prediction by default
(:func:`ramir.attribution.targets.gradient_magnitude`). Layers are the modules that
directly own parameters (:func:`ramir.attribution.selection.list_layers`).

How this is fast: parameters are temporarily frozen so backward computes activation
gradients only; masks are built for many steps at once; ``chunk`` path steps of every
image go through the network as one batch; each layer's gradient is consumed by a tensor
hook the moment backward produces it (so gradients for all layers are never alive at
once); only the accumulated conductance and the previous step's output stay between
chunks. :func:`ramir.attribution.reference.mac_reference` is the literal
one-step-at-a-time computation (parameter gradients on) that tests and the benchmark
compare against.

Layer outputs: a module's output tensor is used; for a tuple/list output, its first
floating-point tensor. A module called several times per forward gets one conductance
over all its calls' outputs together. A layer whose output does not depend on the input
scores 0 (its output never changes; the hook makes such an output a differentiable leaf,
so ``dF/dy`` exists for the gradient variant of the IG baseline); a layer that is never
called, or never returns a tensor, scores 0 with a warning.

Layouts: pairing ``y_l(x_t)`` with ``y_l(x_{t-1})`` inside one batch needs *sample-major*
outputs (the leading dimension is the batch, or the batch times e.g. windows, sample
outermost). A model states whether its layer outputs are laid out so with a
``per_sample_outputs`` attribute (ramir's backbones do: ``True`` by default on
:class:`ramir.models.base.RestorationModel`); for a module that says nothing, a one-off
probe (cached per model and shape) checks every layer before path steps are batched.
RAM-SwinIR's ``"fast"`` attention groups windows of all samples by mask pattern, so it is
switched to its ``"plain"`` implementation (the official computation) for the run and
switched back afterwards; any other model whose outputs are not sample-major runs one
path step per forward (``chunk = 1``), which is exact for any layout, with a warning.
Images need no such care: the per-image means are summed, which is the sum over all
elements divided by the elements per image.
The root module is not a layer (see :mod:`ramir.attribution.selection`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ramir.attribution.selection import check_layer_names, list_layers
from ramir.attribution.targets import Target, check_target_output, gradient_magnitude

__all__ = [
    "DEFAULT_CHUNK",
    "mask_attribution_conductance",
    "integrated_gradients_conductance",
    "random_scores",
    "soft_reveal_masks",
    "mask_path_alphas",
    "random_orders",
]

DEFAULT_CHUNK: dict[str, int] = {"cpu": 1, "cuda": 8}
"""Path steps per forward pass when ``chunk`` is not given, by device type (8 for others).

On a CPU larger batches hardly raise throughput (one 64x64 image already makes large
matrix products) and memory grows linearly with the chunk; GPUs gain from batching."""

Accumulate = Literal["conductance", "gradient"]


# ----------------------------------------------------------------------------- the path


def mask_path_alphas(steps: int, start_ratio: float) -> list[float]:
    """``alpha_t = (1 - r) + r * t / N`` for ``t = 0..N-1`` (Python floats, as the reference)."""
    return [1 - start_ratio + start_ratio * t / steps for t in range(steps)]


def random_orders(
    n_images: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One random reveal order (a permutation of the ``H*W`` pixels) per image: ``(B, H*W)`` long."""
    orders = torch.stack(
        [torch.randperm(height * width, generator=generator) for _ in range(n_images)]
    )
    return orders.to(device) if device is not None else orders


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutations: ``ranks[b, p]`` is the position of pixel ``p`` in ``order[b]``."""
    b, n = order.shape
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    return ranks


def soft_reveal_masks(
    order: torch.Tensor,
    alphas: Sequence[float],
    sharpness: float,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The soft masks of the mask path (1 = revealed), vectorised over images and steps.

    Pixel of rank ``i`` in ``order[b]``: ``sigmoid(k * (alpha - i / n))`` if
    ``i < ceil(alpha * n)`` else 0, with ``n = H * W`` and ``k = sharpness`` (computed in
    float64, then cast to ``dtype``).

    Args:
        order: ``(B, H*W)`` long, each row a permutation of the pixel indices
            (row-major ``y * W + x``).
        alphas: the ``c`` path positions.
        sharpness: ``k``.
        height, width: image size.
        dtype: output dtype.

    Returns:
        ``(B, c, H, W)`` in ``[0, 1]``.
    """
    n = height * width
    if order.dim() != 2 or order.shape[1] != n:
        raise ValueError(
            f"order must be (B, {n}) for {height}x{width} images, got {tuple(order.shape)}"
        )
    ranks = _ranks(order).to(torch.float64).unsqueeze(1)  # (B, 1, n)
    a = torch.tensor(list(alphas), dtype=torch.float64, device=order.device).view(1, -1, 1)
    counts = torch.tensor(
        [math.ceil(n * float(x)) for x in alphas], dtype=torch.float64, device=order.device
    ).view(1, -1, 1)
    soft = 1.0 / (1.0 + torch.exp(-sharpness * (a - ranks / n)))
    masks = torch.where(
        ranks < counts, soft, torch.zeros((), dtype=torch.float64, device=order.device)
    )
    return masks.to(dtype).view(order.shape[0], len(alphas), height, width)


def _check_order(order: torch.Tensor, n_images: int, n_pixels: int) -> torch.Tensor:
    if not isinstance(order, torch.Tensor) or order.dtype not in (torch.int64, torch.int32):
        raise TypeError("order must be an integer (long) tensor (B, H*W) of reveal orders")
    if tuple(order.shape) != (n_images, n_pixels):
        raise ValueError(
            f"order must have shape (B, H*W) = ({n_images}, {n_pixels}), got {tuple(order.shape)}"
        )
    ref = torch.arange(n_pixels, device=order.device).expand(n_images, n_pixels)
    if not torch.equal(order.sort(dim=1).values.long(), ref):
        raise ValueError("each row of order must be a permutation of 0..H*W-1")
    return order.long()


# ----------------------------------------------------------------------------- hooks


def _replace_tensor(output: object, old: torch.Tensor, new: torch.Tensor) -> object | None:
    """``output`` with tensor ``old`` replaced by ``new`` (tensor, tuple or list), else None."""
    if output is old:
        return new
    if type(output) in (tuple, list):
        return type(output)(new if item is old else item for item in output)  # type: ignore[call-arg]
    return None


def _first_tensor(output: object) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output if torch.is_floating_point(output) else None
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and torch.is_floating_point(item):
                return item
    return None


class _CallState:
    """Accumulators of one call site of a layer: conductance and the previous output."""

    def __init__(self, cond: torch.Tensor) -> None:
        self.cond = cond  # (B, k, ...): per image, the layer output's shape
        self.prev: torch.Tensor | None = None  # same shape: the output at the previous step


class _Recorder:
    """Hooks one layer; accumulates its conductance chunk by chunk (batched path)."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        n_images: int,
        accumulate: Accumulate,
        leaves: list[torch.Tensor],
    ) -> None:
        self.name = name
        self.leaves = leaves  # shared: input-independent outputs made differentiable
        self.n_images = n_images
        self.accumulate = accumulate
        self.calls: list[_CallState] = []
        self.current: list[tuple[torch.Tensor, int]] = []
        self.t0 = 0
        self.c = 1
        self.saw_non_tensor = False
        self.handle = module.register_forward_hook(self._forward_hook)

    def begin(self, t0: int, c: int) -> None:
        self.t0, self.c = t0, c
        self.current = []

    def _forward_hook(self, module: nn.Module, inputs: object, output: object) -> object:
        y = _first_tensor(output)
        if y is None:
            self.saw_non_tensor = True
            return None
        replaced = None
        if not y.requires_grad:
            # The output does not depend on the input (or the model detached it): make it a
            # leaf so that dF/dy is still computed; same values, so the model is unchanged.
            leaf = y.detach().requires_grad_(True)
            replaced = _replace_tensor(output, y, leaf)
            if replaced is not None:
                self.leaves.append(leaf)
                y = leaf
        idx = len(self.current)
        self.current.append((y, y._version))
        if y.requires_grad:
            y.register_hook(lambda g, idx=idx: self._on_grad(idx, g))
        return replaced

    def _view(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` (an output or its gradient) as ``(B, c, k, ...)``, detached.

        A view when the batch leads (any memory format). With one path step per forward
        (``c = 1``) any layout works (see :func:`_path_conductance`), so other shapes are
        flattened per image slot.
        """
        bc = self.n_images * self.c
        if y.dim() > 0 and y.shape[0] % bc == 0:
            return y.detach().unflatten(0, (self.n_images, self.c, -1))
        if self.c == 1 and y.numel() % self.n_images == 0:
            return y.detach().reshape(self.n_images, 1, 1, -1)
        raise ValueError(
            f"layer {self.name!r}: output of shape {tuple(y.shape)} cannot be split into "
            f"{self.n_images} images x {self.c} path steps; exclude it with layers=..."
        )

    def after_forward(self) -> None:
        if self.calls and len(self.current) != len(self.calls):
            raise RuntimeError(
                f"layer {self.name!r} was called {len(self.current)} times in this forward "
                f"pass but {len(self.calls)} times before; MAC needs a fixed computation graph"
            )
        for idx, (y, version) in enumerate(self.current):
            if y._version != version:
                raise RuntimeError(
                    f"the output of layer {self.name!r} is modified in place after the layer "
                    "(e.g. by an inplace=True activation); MAC needs the layer's own output. "
                    "Use an out-of-place operation there or exclude the layer with layers=..."
                )
            first = self._view(y)[:, 0]  # (B, k, ...): one path step
            if idx == len(self.calls):
                # zeros_like keeps y's memory format, so the accumulation runs in its layout
                self.calls.append(_CallState(torch.zeros_like(first)))
            elif self.calls[idx].cond.shape != first.shape:
                raise RuntimeError(
                    f"layer {self.name!r}: output shape changed between forward passes "
                    f"({tuple(self.calls[idx].cond.shape)} vs {tuple(first.shape)} per image)"
                )

    def _on_grad(self, idx: int, grad: torch.Tensor) -> None:
        state = self.calls[idx]
        g = self._view(grad)
        if self.accumulate == "gradient":
            for s in range(self.c):
                state.cond.add_(g[:, s])
            return
        y = self._view(self.current[idx][0])
        for s in range(self.c):
            if self.t0 + s == 0:
                continue
            prev = state.prev if s == 0 else y[:, s - 1]
            assert prev is not None
            state.cond.addcmul_(g[:, s], y[:, s] - prev)

    def end_chunk(self) -> None:
        for idx, (y, _) in enumerate(self.current):
            yv = self._view(y)
            state = self.calls[idx]
            # One step per forward: keep the output itself (no copy); else copy the last step
            # so that the chunk's outputs can be freed.
            state.prev = yv[:, -1] if self.c == 1 else yv[:, -1].clone()
        self.current = []

    def scores(self) -> torch.Tensor:
        """``(B,)`` float64: ``mean(|cond|)`` per image over all calls' outputs."""
        if not self.calls:
            why = "never returns a tensor" if self.saw_non_tensor else "is never called"
            warnings.warn(
                f"layer {self.name!r} {why} during the forward pass; it scores 0",
                RuntimeWarning,
                stacklevel=4,
            )
            return torch.zeros(self.n_images, dtype=torch.float64)
        total = sum(s.cond.abs().flatten(1).sum(dim=1, dtype=torch.float64) for s in self.calls)
        count = sum(s.cond[0].numel() for s in self.calls)
        return (total / count).cpu()

    def remove(self) -> None:
        self.handle.remove()
        self.current = []


# ----------------------------------------------------------------------------- engine


class _ModelState:
    """Saves and restores module modes, ``requires_grad`` flags and ``.grad`` of a model."""

    def __init__(self, model: nn.Module) -> None:
        self.modes = [(m, m.training) for m in model.modules()]
        self.params = [(p, p.requires_grad, p.grad) for p in model.parameters()]

    def restore(self) -> None:
        for m, mode in self.modes:
            m.training = mode
        for p, flag, grad in self.params:
            p.requires_grad_(flag)
            p.grad = grad


def _check_inputs(model: nn.Module, lq: torch.Tensor, steps: int, chunk: int | None) -> int:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(lq, torch.Tensor) or lq.dim() != 4 or not torch.is_floating_point(lq):
        shape = tuple(lq.shape) if isinstance(lq, torch.Tensor) else type(lq).__name__
        raise ValueError(f"lq must be a float tensor (B, C, H, W), got {shape}")
    if not bool(torch.isfinite(lq).all()):
        raise ValueError("lq contains NaN or Inf values")
    p = next(model.parameters(), None)
    if p is not None and p.device != lq.device:
        raise ValueError(f"lq is on {lq.device} but the model is on {p.device}; move one of them")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(
            f"steps must be an integer >= 2 (conductance needs two points), got {steps}"
        )
    chunk = DEFAULT_CHUNK.get(lq.device.type, 8) if chunk is None else chunk
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer (path steps per forward), got {chunk}")
    return chunk


# model -> {(batch, C, H, W, dtype, device, attn_impl): layers not sample-major}. Layouts
# depend on shapes and code paths, not on weights, so one probe per shape is enough.
_LAYOUT_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, set[str]]] = (
    weakref.WeakKeyDictionary()
)


def _probe_inputs(lq: torch.Tensor, n: int) -> torch.Tensor:
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


def _not_sample_major(model: nn.Module, names: Sequence[str], probe: torch.Tensor) -> list[str]:
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
            y = _first_tensor(output)
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


def _declared_per_sample(model: nn.Module) -> bool | None:
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


def _choose_chunk(
    model: nn.Module, names: Sequence[str], lq: torch.Tensor, steps: int, chunk: int
) -> tuple[int, str | None]:
    """The chunk to use and the attention implementation to switch back to afterwards.

    Several path steps in one batch need sample-major layer outputs. A model that declares
    its layout (:func:`_declared_per_sample`) is taken at its word; for any other
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
        declared = _declared_per_sample(model)
        if declared is not None:
            return [] if declared else list(names)
        bad: set[str] = set()
        for size in sorted(sizes):
            impl = getattr(model, "attn_impl", None)
            key = (size, *lq.shape[1:], lq.dtype, lq.device, impl)
            if key not in cache:
                probe = _probe_inputs(lq, size)
                cache[key] = set(_not_sample_major(model, list_layers(model), probe))
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
    if _declared_per_sample(model) is False:
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


def _path_conductance(
    model: nn.Module,
    lq: torch.Tensor,
    make_inputs: Callable[[int, int], torch.Tensor],
    *,
    steps: int,
    chunk: int,
    target: Target | None,
    layers: Iterable[str] | None,
    progress: bool,
    desc: str,
    accumulate: Accumulate = "conductance",
) -> dict[str, float]:
    """Run the path in chunks; ``make_inputs(t0, c)`` gives ``(B*c, C, H, W)``, image-major.

    Pairing ``y(x_t)`` with ``y(x_{t-1})`` inside a chunk needs sample-major layer outputs
    (checked by :func:`_choose_chunk`); across chunks the batch shape is the same, so
    elements pair up whatever the layout. The per-image means are summed, which equals
    the sum of ``|cond|`` over all elements divided by the elements per image, so the
    result does not depend on how images are laid out either.
    """
    names = list_layers(model) if layers is None else check_layer_names(model, layers)
    if not names:
        raise ValueError("the model has no layers (modules owning parameters) to attribute")
    target = gradient_magnitude if target is None else target
    n_images = lq.shape[0]
    saved = _ModelState(model)
    recorders: list[_Recorder] = []
    restore_attention: str | None = None
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        chunk, restore_attention = _choose_chunk(model, names, lq, steps, chunk)
        leaves: list[torch.Tensor] = []
        recorders = [
            _Recorder(name, model.get_submodule(name), n_images, accumulate, leaves)
            for name in names
        ]
        with (
            torch.enable_grad(),
            tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar,
        ):
            for t0 in range(0, steps, chunk):
                c = min(chunk, steps - t0)
                x = make_inputs(t0, c).detach().requires_grad_(True)
                leaves.clear()
                for r in recorders:
                    r.begin(t0, c)
                pred = model(x)
                for r in recorders:
                    r.after_forward()
                f = check_target_output(target(pred), n_images * c).sum()
                if f.requires_grad:
                    # Gradients w.r.t. x are not needed: asking for them runs backward through
                    # every layer, whose tensor hooks consume dF/dy as it is produced.
                    torch.autograd.grad(f, [x, *leaves], allow_unused=True)
                del pred, f, x
                leaves.clear()
                for r in recorders:
                    r.end_chunk()
                bar.update(c)
        return {r.name: float(r.scores().sum()) for r in recorders}
    finally:
        for r in recorders:
            r.remove()
        if restore_attention is not None:
            model.set_attention_impl(restore_attention)  # type: ignore[operator]
        saved.restore()


# ----------------------------------------------------------------------------- public API


def mask_attribution_conductance(
    model: nn.Module,
    lq: torch.Tensor,
    *,
    steps: int = 200,
    start_ratio: float = 0.5,
    sharpness: float = 1e4,
    order: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    target: Target | None = None,
    chunk: int | None = None,
    layers: Iterable[str] | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Score every layer of ``model`` by its mask attribution conductance (docs/method.md#mac).

    The model is run in eval mode and called without a mask; it is left exactly as it was
    (modes, ``requires_grad`` flags and ``.grad`` restored, no hooks left).

    Args:
        model: a restoration network mapping ``(N, C, H, W)`` to ``(N, C', H', W')``.
        lq: ``(B, C, H, W)`` float, normalised as the model expects (on the model's device).
        steps: ``N``, path steps (200 in the paper); ``>= 2``.
        start_ratio: ``r``; the path starts with ``1 - r`` of the pixels revealed.
        sharpness: ``k`` of the soft masks.
        order: ``(B, H*W)`` long reveal orders (row-major pixel indices); drawn with
            ``generator`` (one ``randperm`` per image) when omitted.
        generator: source of the random orders (the global generator when ``None``).
        target: ``F``, ``pred (N, ...) -> (N,)``; :func:`gradient_magnitude` by default.
        chunk: path steps per forward pass (the batch is ``B * chunk``); scores do not
            depend on it, memory grows with it. Default: :data:`DEFAULT_CHUNK` for the
            device (1 on CPU, 8 on CUDA).
        layers: layer names to score (default: every layer, see ``list_layers``).
        progress: show a tqdm progress bar.

    Returns:
        Layer name -> score (``mean(|cond|)`` per image, summed over the ``B`` images),
        in layer order.
    """
    chunk = _check_inputs(model, lq, steps, chunk)
    if not 0.0 < start_ratio <= 1.0:
        raise ValueError(f"start_ratio must be in (0, 1], got {start_ratio}")
    if not sharpness > 0:
        raise ValueError(f"sharpness must be positive, got {sharpness}")
    b, ch, h, w = lq.shape
    if order is None:
        order = random_orders(b, h, w, generator=generator, device=lq.device)
    order = _check_order(order, b, h * w).to(lq.device)
    alphas = mask_path_alphas(steps, start_ratio)
    base = torch.zeros_like(lq)

    def make_inputs(t0: int, c: int) -> torch.Tensor:
        m = soft_reveal_masks(order, alphas[t0 : t0 + c], sharpness, h, w, lq.dtype)
        x = base.unsqueeze(1) + m.unsqueeze(2) * (lq - base).unsqueeze(1)
        return x.reshape(b * c, ch, h, w)

    return _path_conductance(
        model, lq, make_inputs, steps=steps, chunk=chunk, target=target, layers=layers,
        progress=progress, desc="MAC",
    )  # fmt: skip


def integrated_gradients_conductance(
    model: nn.Module,
    lq: torch.Tensor,
    *,
    steps: int = 200,
    start_ratio: float = 0.5,
    target: Target | None = None,
    chunk: int | None = None,
    layers: Iterable[str] | None = None,
    progress: bool = False,
    accumulate: Accumulate = "conductance",
) -> dict[str, float]:
    """The integrated-gradients baseline of the paper's Table 5: the straight path.

    Same as :func:`mask_attribution_conductance` with ``x_t = x' + alpha_t * (lq - x')``
    (``x' = 0``, the same ``alpha_t`` schedule) instead of the mask path. The default
    ``start_ratio=0.5`` follows the authors' IG script (which uses the MAC schedule);
    ``start_ratio=1.0`` is the full path from the black baseline.

    Args:
        accumulate: ``"conductance"`` (default, docs/method.md#baselines: the same conductance sum as
            MAC) or ``"gradient"`` (the authors' ``ig.py``: ``mean(|sum_t dF/dy_l(x_t)|)``
            over all ``N`` steps).
        Other arguments as :func:`mask_attribution_conductance`.

    Returns:
        Layer name -> score summed over the batch, in layer order.
    """
    chunk = _check_inputs(model, lq, steps, chunk)
    if not 0.0 < start_ratio <= 1.0:
        raise ValueError(f"start_ratio must be in (0, 1], got {start_ratio}")
    if accumulate not in ("conductance", "gradient"):
        raise ValueError(f"accumulate must be 'conductance' or 'gradient', got {accumulate!r}")
    b, ch, h, w = lq.shape
    alphas = mask_path_alphas(steps, start_ratio)
    base = torch.zeros_like(lq)

    def make_inputs(t0: int, c: int) -> torch.Tensor:
        x = torch.stack([base + a * (lq - base) for a in alphas[t0 : t0 + c]], dim=1)
        return x.reshape(b * c, ch, h, w)

    return _path_conductance(
        model, lq, make_inputs, steps=steps, chunk=chunk, target=target, layers=layers,
        progress=progress, desc="IG", accumulate=accumulate,
    )  # fmt: skip


def random_scores(
    model: nn.Module,
    generator: torch.Generator | None = None,
    *,
    layers: Iterable[str] | None = None,
) -> dict[str, float]:
    """The random-ranking baseline: i.i.d. uniform ``[0, 1)`` scores, one per layer.

    Returns:
        Layer name -> score in layer order (sorting it gives a uniformly random ranking).
    """
    names = list_layers(model) if layers is None else check_layer_names(model, layers)
    values = torch.rand(len(names), generator=generator, dtype=torch.float64)
    return {name: float(v) for name, v in zip(names, values, strict=True)}

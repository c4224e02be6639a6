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
gradients only; masks are built for many steps at once, from tensors put on the device
once per path; ``chunk`` path steps of every image go through the network as one batch
(``B * chunk`` inputs per forward pass; the scores come back to the host in one copy); each layer's gradient is consumed by a tensor
hook the moment backward produces it (so gradients for all layers are never alive at
once); only the accumulated conductance and the previous step's output stay between
chunks. :func:`ramir.attribution.reference.mac_reference` is the literal
one-step-at-a-time computation (parameter gradients on) that tests and the benchmark
compare against.

Layer outputs and what is recorded of them: :mod:`ramir.attribution.recorder`. Several
path steps share a batch only when the layer outputs are laid out sample by sample,
declared by the model or probed (:mod:`ramir.attribution.layout`); images need no such
care: the per-image means are summed, which is the sum over all elements divided by the
elements per image, whatever the layout. The path itself (positions, reveal orders, soft
masks): :mod:`ramir.attribution.path`.
The root module is not a layer (see :mod:`ramir.attribution.selection`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ramir.attribution.layout import choose_chunk
from ramir.attribution.path import MaskPath, check_order, mask_path_alphas, random_orders
from ramir.attribution.recorder import Accumulate, ModelState, Recorder
from ramir.attribution.selection import check_layer_names, list_layers
from ramir.attribution.targets import Target, check_target_output, gradient_magnitude

__all__ = [
    "DEFAULT_CHUNK",
    "mask_attribution_conductance",
    "integrated_gradients_conductance",
    "random_scores",
]

DEFAULT_CHUNK: dict[str, int] = {"cpu": 1, "cuda": 8}
"""Path steps per forward pass when ``chunk`` is not given, by device type (8 for others).

Memory grows linearly with the inputs of one forward pass (images x ``chunk``), and a
full-size transformer backbone needs gigabytes per 64x64 input, so on a CPU, where the
memory is shared with everything else, batching is asked for (``chunk``, and images per
call); GPUs gain most from batching. ``benchmarks/bench_mac.py --analysis`` measures
what it gains on a machine."""


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


def _takes_check_finite(model: nn.Module) -> bool:
    """Whether ``model``'s forward has a ``check_finite`` keyword (ramir's backbones)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("check_finite")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


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
    (checked by :func:`ramir.attribution.layout.choose_chunk`); across chunks the batch
    shape is the same, so elements pair up whatever the layout. The per-image means are
    summed, which equals the sum of ``|cond|`` over all elements divided by the elements
    per image, so the result does not depend on how images are laid out either.
    """
    names = list_layers(model) if layers is None else check_layer_names(model, layers)
    if not names:
        raise ValueError("the model has no layers (modules owning parameters) to attribute")
    target = gradient_magnitude if target is None else target
    n_images = lq.shape[0]
    saved = ModelState(model)
    recorders: list[Recorder] = []
    restore_attention: str | None = None
    try:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        chunk, restore_attention = choose_chunk(model, names, lq, steps, chunk)
        # lq was checked finite and every path input mixes it with zeros: a model that
        # would read its input's values again (one host sync per forward) is told not to
        call_kwargs = {"check_finite": False} if _takes_check_finite(model) else {}
        leaves: list[torch.Tensor] = []
        recorders = [
            Recorder(name, model.get_submodule(name), n_images, accumulate, leaves)
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
                pred = model(x, **call_kwargs)
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
        # one copy to the host for all layers
        totals = torch.stack([r.scores(lq.device).sum() for r in recorders]).tolist()
        return {r.name: value for r, value in zip(recorders, totals, strict=True)}
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
    order = check_order(order, b, h * w).to(lq.device)
    path = MaskPath(order, mask_path_alphas(steps, start_ratio), sharpness, h, w)
    base = torch.zeros_like(lq)

    def make_inputs(t0: int, c: int) -> torch.Tensor:
        m = path.masks(t0, c, lq.dtype)
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

"""Export a restoration model to ONNX with dynamic batch, height and width.

The exported graph is the whole of :func:`ramir.restore` for one tile: it takes
``image`` ``(B, 3, H, W)`` float32 RGB in [0, 1] and returns ``restored`` of the same
shape in [0, 1]; normalisation, reflect padding to the model's multiple, cropping back
and clamping are inside the graph (``pre_post=False`` exports the bare network in
normalised space, still padded/cropped). Inputs must be at least ``min_size`` pixels
and larger than the padding they need (the exported model cannot raise the clear error
PyTorch would).

We use PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
it records the shape arithmetic of the padding and of SwinIR's shifted-window masks as
graph operations, so one graph serves every size. SwinIR is exported with its
``"plain"`` attention (the ``"fast"`` path caches per-size index plans, which a trace
would freeze); both give the same numbers. The export is checked with ONNX Runtime
against :func:`ramir.inference.restore.restore_tensor` with the original model at two
sizes, one of them different from the traced size and not a multiple of the padding.

RAM++'s RestormerRFR restores with six DINOv2 feature maps. The DINOv2 stays outside the
graph, which takes the six maps as inputs after ``image`` (named as
:data:`ramir.models.restormer_rfr.FEATURE_NAMES`, each ``(B, dino_dim, H_pad / 8,
W_pad / 8)`` float32, ``H_pad, W_pad`` the sizes padded to 16): the DINOv2's input is
made with Pillow's bicubic resize of 8-bit values (:mod:`ramir.models.rampp_dino`), integer
arithmetic that ONNX's ``Resize`` only approximates (ramir's features equal the release's
bit for bit), and DINOv2-giant alone is over ONNX's 2 GB single-file limit.
:func:`onnx_inputs` computes all the graph's inputs for an image with the model's
attached DINOv2 (``load_model(path, dino=DIR)``). The check feeds the attached DINOv2's
features, or seeded standard-normal stand-ins when none is attached (the graph's
arithmetic is checked either way).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ramir._version import __version__
from ramir.inference.restore import (
    LUMA_WEIGHTS,
    check_dino,
    input_channels,
    restore_tensor,
    takes_dino_features,
)
from ramir.options import DEFAULT_OPSET

__all__ = [
    "ImageModel",
    "ExportResult",
    "export_onnx",
    "check_onnx",
    "feature_names",
    "onnx_inputs",
]


def feature_names(model: nn.Module) -> tuple[str, ...]:
    """The DINOv2 feature inputs ``model``'s graph takes after ``image`` (RAM++'s
    RestormerRFR: six; other models: none)."""
    if not takes_dino_features(model):
        return ()
    from ramir.models.restormer_rfr import FEATURE_NAMES

    return tuple(FEATURE_NAMES)


def _feature_shape(model: nn.Module, batch: int, height: int, width: int) -> tuple[int, ...]:
    """``(B, dino_dim, H_pad / 8, W_pad / 8)`` of a DINOv2 feature input."""
    k = int(getattr(model, "input_multiple", 1))
    hp, wp = -(-height // k) * k, -(-width // k) * k
    return (batch, int(model.dino_dim), hp // 8, wp // 8)


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in eval mode, without an attached DINOv2 (shared
    while copying, then dropped from the copy: the graph takes its features)."""
    dino = getattr(model, "dino", None) if takes_dino_features(model) else None
    net = copy.deepcopy(model, {id(dino): dino} if dino is not None else {})
    if dino is not None:
        net._dino = ()  # RestormerRFR keeps its DINOv2 outside the module tree
    return net.float().cpu().eval()


class ImageModel(nn.Module):
    """``[0, 1]`` RGB in, ``[0, 1]`` RGB out: a restoration model with its pre/post steps.

    Padding uses only shape arithmetic that exports (``(k - h % k) % k``), and the
    network is called through ``forward_padded`` so that no data-dependent checks end up
    in the graph. A model that takes DINOv2 features (:func:`feature_names`) gets them
    after ``image``, in that order.
    """

    def __init__(self, model: nn.Module, pre_post: bool = True) -> None:
        super().__init__()
        self.model = model
        self.multiple = int(getattr(model, "input_multiple", 1))
        self.pre_post = pre_post
        self.features = feature_names(model)
        norm = getattr(model, "normalization", None)
        mean = norm.mean if norm is not None else (0.0, 0.0, 0.0)
        std = norm.std if norm is not None else (1.0, 1.0, 1.0)
        if getattr(model, "pad_mode", "reflect") == "symmetric":
            raise ValueError(
                "export supports the 'reflect' and 'zeros' paddings; build the model with "
                "padding='reflect' (SwinIR's own forward) to export it"
            )
        self.gray = input_channels(model) == 1
        channels = 1 if self.gray else 3
        mean, std = mean[:channels], std[:channels]
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", LUMA_WEIGHTS.view(1, 3, 1, 1).clone(), persistent=False)

    def forward(self, image: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` (and the DINOv2 features, if the model takes them) ->
        ``(B, 3, H, W)``."""
        h, w = image.shape[-2], image.shape[-1]
        extra = (dict(zip(self.features, features, strict=True)),) if self.features else ()
        if self.gray:  # a gray model: luma in, gray out (as ramir.restore)
            image = (image * self.luma).sum(1, keepdim=True)
        x = (image - self.mean) / self.std if self.pre_post else image
        if self.multiple > 1 and hasattr(self.model, "forward_padded"):
            k = self.multiple
            mode = (
                "constant" if getattr(self.model, "pad_mode", "reflect") == "zeros" else "reflect"
            )
            x = F.pad(x, (0, (k - w % k) % k, 0, (k - h % k) % k), mode=mode)
            out = self.model.forward_padded(x, *extra)[..., :h, :w]
        elif hasattr(self.model, "forward_padded"):
            out = self.model.forward_padded(x, *extra)
        else:
            out = self.model(x, *extra)
        if self.pre_post:
            out = (out * self.std + self.mean).clamp(0.0, 1.0)
        if self.gray:
            out = out.expand(-1, 3, -1, -1)
        return out


@dataclass
class ExportResult:
    """An exported file and how closely ONNX Runtime reproduces PyTorch on it."""

    path: Path
    opset: int
    checked: list[tuple[int, int, float]] = field(default_factory=list)
    """``(height, width, max abs difference)`` per checked size."""
    inputs: list[str] = field(default_factory=lambda: ["image"])
    """The graph's input names: ``image``, then any DINOv2 features."""
    check_features: str = ""
    """What the check fed as DINOv2 features: ``"dino"`` (the attached DINOv2's),
    ``"random"`` (seeded stand-ins: no DINOv2 attached), ``""`` (none taken)."""

    @property
    def max_abs_diff(self) -> float:
        return max((d for _, _, d in self.checked), default=float("nan"))


def _min_check_size(model: nn.Module) -> int:
    k = int(getattr(model, "input_multiple", 1))
    return max(int(getattr(model, "min_size", 1)), k + 1, 16)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (64, 64),
    check_sizes: Sequence[tuple[int, int]] | None = None,
    pre_post: bool = True,
    check: bool = True,
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` with dynamic batch/height/width.

    Args:
        model: a ramir model (not modified: a copy is exported). RAM++'s RestormerRFR
            is exported with its DINOv2 features as inputs (see the module doc).
        path: the ``.onnx`` file to write.
        opset: ONNX opset version.
        example_size: ``(H, W)`` of the tracing input.
        check_sizes: sizes checked with ONNX Runtime; default: ``example_size`` and an
            odd size of about two thirds of it.
        pre_post: include normalisation, clamping and [0, 1] I/O (see the module doc).
        check: run the ONNX Runtime check (needs ``onnxruntime``).
        seed: seed of the random check inputs.

    Returns:
        An :class:`ExportResult` with the max abs difference per checked size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    if hasattr(net, "set_attention_impl"):
        net.set_attention_impl("plain")
    wrapper = ImageModel(net, pre_post=pre_post).eval()
    low = _min_check_size(model)
    if min(example_size) < low:
        raise ValueError(f"example_size must be at least {low}x{low} for this model")
    g = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, *example_size, generator=g)
    names = list(feature_names(model))
    feats = [torch.randn(_feature_shape(model, 1, *example_size), generator=g) for _ in names]
    axes = {0: "batch", 2: "height", 3: "width"}
    grid_axes = {0: "batch", 2: "grid_height", 3: "grid_width"}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        # Shape-to-int conversions are expected; the ONNX Runtime check below verifies
        # that the graph is right at sizes other than the traced one.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy.*", category=UserWarning)
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example, *feats),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["image", *names],
                output_names=["restored"],
                dynamic_axes={"image": axes, "restored": axes, **dict.fromkeys(names, grid_axes)},
            )
    _add_metadata(tmp, model, pre_post)
    os.replace(tmp, path)
    result = ExportResult(path=path, opset=opset, inputs=["image", *names])
    if check:
        if check_sizes is None:
            odd = (max(low, example_size[0] * 2 // 3 | 1), max(low, example_size[1] * 2 // 3 | 1))
            check_sizes = [tuple(example_size), odd]
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        ref = model if on_cpu or names else _cpu_copy(model)
        result.checked = check_onnx(path, ref, check_sizes, pre_post=pre_post, seed=seed + 1)
        if names:
            result.check_features = "dino" if getattr(model, "dino", None) else "random"
    return result


def _add_metadata(path: Path, model: nn.Module, pre_post: bool) -> None:
    import onnx

    proto = onnx.load(str(path))
    norm = getattr(model, "normalization", None)
    meta = {
        "ramir_version": __version__,
        "arch": getattr(model, "arch_name", type(model).__name__),
        "arch_kwargs": json.dumps(getattr(model, "arch_kwargs", {})),
        "normalization": norm.name if norm is not None else "none",
        "input_multiple": str(getattr(model, "input_multiple", 1)),
        "min_size": str(getattr(model, "min_size", 1)),
        "io": "image: (B,3,H,W) float32 RGB in [0,1] -> restored: same, in [0,1]"
        if pre_post
        else "normalised space in and out (no clamping)",
    }
    names = feature_names(model)
    if names:
        meta["dino_features"] = (
            f"{', '.join(names)}: (B,{model.dino_dim},H_pad/8,W_pad/8) float32 each, H_pad and "
            "W_pad the sizes padded to 16; DINOv2's hidden states, not in the graph: "
            "ramir.inference.export.onnx_inputs computes them"
        )
    onnx.helper.set_model_props(proto, meta)
    onnx.save(proto, str(path))


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    *,
    pre_post: bool = True,
    batch: int = 2,
    seed: int = 1,
) -> list[tuple[int, int, float]]:
    """Run the ONNX file with ONNX Runtime (CPU) and PyTorch on the same random inputs.

    A model that takes DINOv2 features (RAM++'s RestormerRFR) gets those of its attached
    DINOv2 (:func:`onnx_inputs`), or seeded standard-normal stand-ins when none is
    attached; both runtimes get the same.

    Returns ``(height, width, max abs difference)`` for each size.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    names = feature_names(model)
    if names:
        return _check_with_features(session, model, sizes, pre_post, batch, g)
    was_training = model.training
    out = []
    try:
        for h, w in sizes:
            x = torch.rand(batch, 3, h, w, generator=g)
            if pre_post:
                ref = restore_tensor(model, x, device="cpu")
            else:
                model.eval()
                with torch.no_grad():
                    ref = model(x)
            got = session.run(None, {"image": x.numpy()})[0]
            out.append((h, w, float(np.abs(got - ref.cpu().numpy()).max())))
    finally:
        model.train(was_training)
    return out


def _check_with_features(
    session: Any,
    model: nn.Module,
    sizes: Sequence[tuple[int, int]],
    pre_post: bool,
    batch: int,
    g: torch.Generator,
) -> list[tuple[int, int, float]]:
    """:func:`check_onnx` for a model with DINOv2 feature inputs: PyTorch runs a CPU copy
    on the same features as ONNX Runtime."""
    net = _cpu_copy(model)
    norm = getattr(net, "normalization", None)
    has_dino = getattr(model, "dino", None) is not None
    out = []
    for h, w in sizes:
        x = torch.rand(batch, 3, h, w, generator=g)
        if has_dino:
            feeds = onnx_inputs(model, x, pre_post=pre_post)
        else:
            feeds = {"image": x.numpy()}
            for name in feature_names(model):
                feeds[name] = torch.randn(_feature_shape(model, batch, h, w), generator=g).numpy()
        feats = {k: torch.from_numpy(v) for k, v in feeds.items() if k != "image"}
        with torch.no_grad():
            inp = norm.normalize(x) if pre_post and norm is not None else x
            ref = net(inp, feats)
            if pre_post:
                ref = (norm.denormalize(ref) if norm is not None else ref).clamp(0.0, 1.0)
        got = session.run(None, feeds)[0]
        out.append((h, w, float(np.abs(got - ref.numpy()).max())))
    return out


def onnx_inputs(
    model: nn.Module, image: torch.Tensor, *, pre_post: bool = True
) -> dict[str, np.ndarray]:
    """The inputs of ``model``'s exported graph for ``image`` ``(B, 3, H, W)``: ``image``
    float32 in [0, 1] (normalised space with ``pre_post=False``) and, for a model that takes
    DINOv2 features (RAM++'s RestormerRFR), the six maps its attached DINOv2 computes,
    each ``(B, dino_dim, H_pad / 8, W_pad / 8)`` float32, as ``model(lq)`` computes them.

    Raises:
        UsageError: the model takes DINOv2 features and has no DINOv2 attached
            (``load_model(path, dino=DIR)``).
    """
    feeds = {"image": image.detach().float().cpu().numpy()}
    if not feature_names(model):
        return feeds
    from ramir import rampp

    check_dino(model)
    norm = getattr(model, "normalization", None)
    lq = norm.normalize(image.float()) if pre_post and norm is not None else image.float()
    device = next(model.parameters()).device
    with torch.no_grad():
        feats = rampp.dino_features(model, lq.to(device))
    feeds.update({k: v.float().cpu().numpy() for k, v in feats.items()})
    return feeds

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
against :func:`ramir.inference.restore.restore_tensor` with the original model at two sizes, one of them
different from the traced size and not a multiple of the padding.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ramir._version import __version__
from ramir.inference.restore import LUMA_WEIGHTS, input_channels, restore_tensor
from ramir.options import DEFAULT_OPSET

__all__ = ["ImageModel", "ExportResult", "export_onnx", "check_onnx"]


class ImageModel(nn.Module):
    """``[0, 1]`` RGB in, ``[0, 1]`` RGB out: a restoration model with its pre/post steps.

    Padding uses only shape arithmetic that exports (``(k - h % k) % k``), and the
    network is called through ``forward_padded`` so that no data-dependent checks end up
    in the graph.
    """

    def __init__(self, model: nn.Module, pre_post: bool = True) -> None:
        super().__init__()
        self.model = model
        self.multiple = int(getattr(model, "input_multiple", 1))
        self.pre_post = pre_post
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

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, H, W)``."""
        h, w = image.shape[-2], image.shape[-1]
        if self.gray:  # a gray model: luma in, gray out (as ramir.restore)
            image = (image * self.luma).sum(1, keepdim=True)
        x = (image - self.mean) / self.std if self.pre_post else image
        if self.multiple > 1 and hasattr(self.model, "forward_padded"):
            k = self.multiple
            mode = (
                "constant" if getattr(self.model, "pad_mode", "reflect") == "zeros" else "reflect"
            )
            x = F.pad(x, (0, (k - w % k) % k, 0, (k - h % k) % k), mode=mode)
            out = self.model.forward_padded(x)[..., :h, :w]
        elif hasattr(self.model, "forward_padded"):
            out = self.model.forward_padded(x)
        else:
            out = self.model(x)
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
        model: a ramir model (not modified: a copy is exported).
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
    net = copy.deepcopy(model).float().cpu().eval()
    if hasattr(net, "set_attention_impl"):
        net.set_attention_impl("plain")
    wrapper = ImageModel(net, pre_post=pre_post).eval()
    low = _min_check_size(model)
    if min(example_size) < low:
        raise ValueError(f"example_size must be at least {low}x{low} for this model")
    g = torch.Generator().manual_seed(seed)
    example = torch.rand(1, 3, *example_size, generator=g)
    axes = {0: "batch", 2: "height", 3: "width"}
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
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["image"],
                output_names=["restored"],
                dynamic_axes={"image": axes, "restored": axes},
            )
    _add_metadata(tmp, model, pre_post)
    os.replace(tmp, path)
    result = ExportResult(path=path, opset=opset)
    if check:
        if check_sizes is None:
            odd = (max(low, example_size[0] * 2 // 3 | 1), max(low, example_size[1] * 2 // 3 | 1))
            check_sizes = [tuple(example_size), odd]
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        ref = model if on_cpu else copy.deepcopy(model).float().cpu()
        result.checked = check_onnx(path, ref, check_sizes, pre_post=pre_post, seed=seed + 1)
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

    Returns ``(height, width, max abs difference)`` for each size.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
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

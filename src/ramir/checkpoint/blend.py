"""Weight interpolation of checkpoints of one architecture: :func:`blend_models`.

Two runs continued from the same weights (here: the same recipe trained with an L1 loss
and with a PSNR loss) usually stay in one basin of the loss, so a weighted mean of their
parameters is itself a working model between the two ("model soups", Wortsman et al.
2022; WiSE-FT). It trades one run's strengths against the other's without any training:
the shipped default model is such a mix, chosen on the validation part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ramir.checkpoint.formats import read_metadata
from ramir.checkpoint.loading import load_model
from ramir.errors import CheckpointError, UsageError
from ramir.models.base import RestorationModel

__all__ = ["blend_models"]


def blend_models(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None
) -> RestorationModel:
    """The weighted mean of the parameters of several checkpoints of one model.

    Args:
        paths: two or more of our ``.safetensors`` checkpoints (or any file
            :func:`ramir.checkpoint.load_model` reads) of the same architecture and size.
        weights: one non-negative weight per file, summing to 1 (to 1e-6); equal weights
            when omitted.

    Returns:
        The first file's model (``eval()`` mode) holding, for every floating-point
        parameter and buffer, ``sum_i weights[i] * tensor_i`` (computed in float64, stored
        in the tensor's own dtype). Integer buffers must be equal in every file.

    Raises:
        UsageError: fewer than two files, or weights of the wrong count, negative, or not
            summing to 1.
        CheckpointError: files of different architectures, sizes or parameter names.
    """
    files = [Path(p) for p in paths]
    if len(files) < 2:
        raise UsageError(f"blending needs two or more checkpoints, got {len(files)}")
    if weights is None:
        weights = [1.0 / len(files)] * len(files)
    w = [float(x) for x in weights]
    if len(w) != len(files):
        raise UsageError(f"{len(w)} blend weight(s) for {len(files)} checkpoints: give one each")
    if any(not math.isfinite(x) or x < 0 for x in w) or abs(sum(w) - 1.0) > 1e-6:
        raise UsageError(f"blend weights must be >= 0 and sum to 1, got {w}")
    first = read_metadata(files[0]) if files[0].suffix == ".safetensors" else {}
    models = [load_model(files[0])]
    for f in files[1:]:
        meta = read_metadata(f) if f.suffix == ".safetensors" else {}
        for key in ("arch", "arch_kwargs"):
            if meta.get(key) != first.get(key):
                raise CheckpointError(
                    f"cannot blend {f.name} with {files[0].name}: their {key} differ "
                    f"({meta.get(key)!r} vs {first.get(key)!r})"
                )
        models.append(load_model(f))
    states = [m.state_dict() for m in models]
    names = list(states[0])
    for f, sd in zip(files[1:], states[1:], strict=True):
        if list(sd) != names or any(sd[k].shape != states[0][k].shape for k in names):
            raise CheckpointError(
                f"cannot blend {f.name} with {files[0].name}: their tensors differ in "
                "names or shapes"
            )
    blended: dict[str, torch.Tensor] = {}
    for k in names:
        t0 = states[0][k]
        if t0.is_floating_point():
            acc = sum(x * sd[k].double() for x, sd in zip(w, states, strict=True))
            blended[k] = torch.as_tensor(acc).to(t0.dtype)
        else:
            if any(not torch.equal(sd[k], t0) for sd in states[1:]):
                raise CheckpointError(
                    f"cannot blend: the integer buffer {k!r} differs between the files"
                )
            blended[k] = t0
    model = models[0]
    model.load_state_dict(blended)
    return model.eval()

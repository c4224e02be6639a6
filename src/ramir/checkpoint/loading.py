"""Rebuilding a model from a checkpoint file: :func:`load_model`.

Our files name their architecture and size in their metadata; those values are bounded
(:func:`check_arch_kwargs`) and tried on the meta device under a budget before anything
real is built. Files without metadata (releases, plain state dicts) get their
architecture from :func:`ramir.checkpoint.infer_arch` or from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir.checkpoint.detect import infer_arch
from ramir.checkpoint.formats import (
    FORMAT,
    check_shapes,
    load_state_dict,
    raw_metadata,
    read_metadata,
    read_state_dict,
)
from ramir.checkpoint.official import official_state_dict
from ramir.errors import CheckpointError
from ramir.models import build_model, resolve_model
from ramir.models.base import RestorationModel

__all__ = [
    "load_model",
    "check_arch_kwargs",
    "MAX_INT_ARGUMENT",
    "MAX_LIST_ARGUMENT",
    "MAX_ARGUMENT_DEPTH",
]


def load_model(
    path: str | Path,
    arch: str | None = None,
    *,
    map_location: str | torch.device = "cpu",
    **kwargs: Any,
) -> RestorationModel:
    """Rebuild a model from a checkpoint, in eval mode.

    Args:
        path: our ``.safetensors`` checkpoint, or an official BasicSR ``.pth``
            (``params_ema`` preferred) or plain state dict.
        arch: architecture name for official checkpoints (guessed from the parameter
            names when omitted); for ours it must match the recorded one if given.
        map_location: device for the weights.
        **kwargs: constructor arguments for official checkpoints, overriding those
            inferred from the weights (e.g. ``normalization="none"``).

    Returns:
        The model (``eval()`` mode) with the weights loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_ours(path, arch, map_location, kwargs)
    return _from_state_dict(read_state_dict(path), arch, map_location, kwargs, path)


def _from_state_dict(
    sd: dict[str, torch.Tensor],
    arch: str | None,
    map_location: Any,
    kwargs: Mapping[str, Any],
    path: Path,
) -> RestorationModel:
    """A model for a bare state dict: architecture and size guessed unless given."""
    try:
        guessed, inferred = infer_arch(sd, hint=arch or path.name)
    except CheckpointError:
        if arch is None:
            raise
        guessed, inferred = arch, {}
    if arch is None:
        arch = guessed
    elif arch != guessed:
        inferred = {}
    model = build_model(arch, **{**inferred, **kwargs})
    load_state_dict(model, sd, str(path))
    return model.to(map_location).eval()


def _load_ours(
    path: Path, arch: str | None, map_location: Any, kwargs: Mapping[str, Any]
) -> RestorationModel:
    if raw_metadata(path).get("format") != FORMAT:  # a plain state dict in safetensors
        sd = official_state_dict(read_state_dict(path), path)
        return _from_state_dict(sd, arch, map_location, kwargs, path)
    meta = read_metadata(path)
    if arch is not None and resolve_model(arch)[0] != meta["arch"]:
        raise CheckpointError(f"{path} holds a {meta['arch']!r} model, not {arch!r}")
    from safetensors import safe_open

    arch_kwargs = {**meta["arch_kwargs"], **kwargs}
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise CheckpointError(f"could not read weights from {path}: {e}") from None
    # The metadata says how big a model to build; a few hundred bytes can ask for a
    # network of billions of parameters or of a million blocks. So its values are bounded
    # first, then the model is built on the meta device (shapes only, no memory) with a
    # budget of registered tensors and modules tied to the file's own tensor count, and
    # its shapes are checked against the file's.
    check_arch_kwargs(meta["arch_kwargs"], str(path))
    probe = _bounded_probe(meta["arch"], arch_kwargs, len(header), str(path))
    check_shapes({k: tuple(v.shape) for k, v in probe.state_dict().items()}, header,
                 meta["arch"], str(path))  # fmt: skip
    del probe
    sd = read_state_dict(path)
    model = build_model(meta["arch"], **arch_kwargs)
    load_state_dict(model, sd, str(path))
    return model.to(map_location).eval()


# Bounds on the constructor arguments a checkpoint's metadata may ask for: far above any
# released or trained model, far below what would take minutes to build.
MAX_INT_ARGUMENT = 1 << 16
MAX_LIST_ARGUMENT = 64
MAX_ARGUMENT_DEPTH = 3


def check_arch_kwargs(arch_kwargs: Mapping[str, Any], source: str = "<checkpoint>") -> None:
    """Refuse constructor arguments from a file's metadata that no real model has: an
    integer over :data:`MAX_INT_ARGUMENT`, a list longer than :data:`MAX_LIST_ARGUMENT`,
    nesting deeper than :data:`MAX_ARGUMENT_DEPTH`, or a float that is not finite.

    Raises:
        CheckpointError: naming the argument and the bound.
    """

    def check(name: str, value: Any, depth: int) -> None:
        if depth > MAX_ARGUMENT_DEPTH:
            raise CheckpointError(f"{source}: model argument {name!r} is nested too deeply")
        if isinstance(value, bool) or value is None or isinstance(value, str):
            if isinstance(value, str) and len(value) > 256:
                raise CheckpointError(f"{source}: model argument {name!r} is too long")
        elif isinstance(value, int):
            if abs(value) > MAX_INT_ARGUMENT:
                raise CheckpointError(
                    f"{source}: model argument {name}={value} is over the bound of "
                    f"{MAX_INT_ARGUMENT} (the file was edited or is not a real model)"
                )
        elif isinstance(value, float):
            if value != value or abs(value) == float("inf"):
                raise CheckpointError(f"{source}: model argument {name}={value} is not finite")
        elif isinstance(value, list | tuple):
            if len(value) > MAX_LIST_ARGUMENT:
                raise CheckpointError(
                    f"{source}: model argument {name!r} has {len(value)} entries, over the "
                    f"bound of {MAX_LIST_ARGUMENT}"
                )
            for i, v in enumerate(value):
                check(f"{name}[{i}]", v, depth + 1)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                check(f"{name}.{k}", v, depth + 1)
        else:
            raise CheckpointError(
                f"{source}: model argument {name!r} has an unexpected type {type(value).__name__}"
            )

    for key, value in arch_kwargs.items():
        check(str(key), value, 0)


class _OverBudget(Exception):
    pass


def _bounded_probe(
    arch: str, arch_kwargs: Mapping[str, Any], file_tensors: int, source: str
) -> nn.Module:
    """Build ``arch`` on the meta device, stopping as soon as it registers more tensors
    than twice the file holds (plus a margin) or many more modules: a model the file
    cannot be weights for is refused before it is finished."""
    from torch.nn.modules import module as module_hooks

    budget = {"tensors": 2 * file_tensors + 64, "modules": 16 * file_tensors + 1024}

    def spend(kind: str) -> None:
        budget[kind] -= 1
        if budget[kind] < 0:
            raise _OverBudget(kind)

    handles = [
        module_hooks.register_module_parameter_registration_hook(lambda *a: spend("tensors")),
        module_hooks.register_module_buffer_registration_hook(lambda *a: spend("tensors")),
        module_hooks.register_module_module_registration_hook(lambda *a: spend("modules")),
    ]
    try:
        with torch.device("meta"):
            return build_model(arch, **arch_kwargs)
    except _OverBudget:
        raise CheckpointError(
            f"{source}: its metadata asks for a {arch!r} model far larger than the "
            f"{file_tensors} tensors the file holds (the file was edited or is not a "
            "ramir model); refused before building it"
        ) from None
    finally:
        for h in handles:
            h.remove()

"""Weight files: reading and writing them, and loading a state dict into a model.

* :func:`read_state_dict` reads the tensors of any weights file: a ``.safetensors`` file
  (ours or a plain one) or a pickled ``.pth``/``.ckpt``/``.pt``, read with
  ``torch.load(weights_only=True)`` and, where that refuses a name, with ramir's
  allow-list unpickler (:mod:`ramir.checkpoint.safe_unpickle`): no pickled code runs;
* :func:`load_weights` / :func:`load_state_dict` load them into a model strictly
  (:func:`check_shapes` names missing, unexpected and mis-shaped entries);
* :func:`save_model` writes ramir's own format: one ``.safetensors`` file whose header
  metadata records the architecture name, its constructor arguments, the input
  normalisation and the package version (:func:`read_metadata` reads it back), so
  :func:`ramir.checkpoint.load_model` rebuilds the model with no config.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir._version import __version__
from ramir.checkpoint.official import IGNORED_SUFFIXES, official_state_dict, short_list
from ramir.errors import CheckpointError
from ramir.models import MODELS, model_kwargs
from ramir.models.base import RestorationModel

__all__ = [
    "read_state_dict",
    "load_weights",
    "load_state_dict",
    "check_shapes",
    "save_model",
    "read_metadata",
    "file_sha256",
    "FORMAT",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

FORMAT = "ramir-model"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- reading


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file on the CPU: our ``.safetensors`` (or any safetensors
    file), or a ``.pth`` (BasicSR ``params_ema``/``params``, Lightning ``state_dict``, or a
    plain state dict; loaded with ``weights_only``, so no pickled code runs).

    Raises:
        CheckpointError: the file is truncated, corrupt or not a checkpoint.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(f"could not read weights from {path}: {e}") from None
    try:
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is truncated, corrupt or not a "
            f"PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from None
    return official_state_dict(obj, path)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the weights of ``path`` (see :func:`read_state_dict`) into ``model`` strictly.

    Raises:
        CheckpointError: naming missing, unexpected and mis-shaped entries.
    """
    load_state_dict(model, read_state_dict(path), str(path))


def load_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> None:
    """Load ``state_dict`` (ramir's own or a release's) into ``model`` strictly, ignoring
    the buffers models recompute (:data:`~ramir.checkpoint.official.IGNORED_SUFFIXES`).

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped entries
    (``source`` names the file in the message).
    """
    own = model.state_dict()
    sd = {k: v for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    arch = getattr(model, "arch_name", type(model).__name__)
    check_shapes(
        {k: tuple(v.shape) for k, v in own.items()},
        {k: tuple(v.shape) for k, v in sd.items()},
        arch,
        source,
    )
    model.load_state_dict(sd, strict=False)


def check_shapes(
    own: Mapping[str, tuple[int, ...]],
    given: Mapping[str, tuple[int, ...]],
    arch: str,
    source: str = "<checkpoint>",
) -> None:
    """Raise :class:`CheckpointError` unless the tensor shapes ``given`` (by name) fit a
    model whose state dict has the shapes ``own`` (recomputed buffers ignored)."""
    given = {k: v for k, v in given.items() if not k.endswith(IGNORED_SUFFIXES)}
    own_keys = {k for k in own if not k.endswith(IGNORED_SUFFIXES)}
    missing = sorted(own_keys - set(given))
    unexpected = sorted(set(given) - set(own))
    shapes = [
        f"{k}: checkpoint {v} vs model {tuple(own[k])}"
        for k, v in given.items()
        if k in own and tuple(v) != tuple(own[k])
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {short_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {short_list(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {short_list(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit model {arch!r}: "
            + "; ".join(problems)
            + " (is it a checkpoint of another architecture or size?)"
        )


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only``; a file that also pickles other Python objects
    (some training frameworks store their settings so) is read again with
    :mod:`ramir.checkpoint.safe_unpickle`, an allow-list unpickler for every pickle of
    both the zip and the legacy format: the tensors are kept, those objects become inert
    placeholders, and a file that names code (``os.system``, ``builtins.eval``...) is
    refused.

    Raises:
        CheckpointError: the file is refused; nothing of it ran.
    """
    import pickle
    import tarfile

    from ramir.checkpoint import safe_unpickle

    if tarfile.is_tarfile(path):
        raise CheckpointError(
            f"refused checkpoint {path.name}: it is in the tar format of PyTorch 0.3 and "
            "older, whose reader extracts files; load it with that PyTorch and save its "
            "state dict again (torch.save(sd, 'new.pth'))"
        )
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    module = safe_unpickle.pickle_module()
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=module)
    except safe_unpickle.RefusedPickleError as e:
        raise CheckpointError(f"refused checkpoint {path.name}: {e}") from None
    if module.skipped:
        log.info("%s: skipped Python objects that are not weights: %s", path.name,
                 ", ".join(sorted(module.skipped)))  # fmt: skip
    return obj


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (used to tie analysis results to a checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- our format


def save_model(
    model: RestorationModel, path: str | Path, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model``'s parameters and persistent buffers with its rebuild metadata.

    Args:
        model: a model built by :func:`ramir.models.build_model` (it records its arch
            name and constructor arguments).
        path: destination ``.safetensors`` file (written atomically).
        extra: JSON-serialisable extra metadata (training step, dataset, notes...).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    arch = getattr(model, "arch_name", "")
    if arch not in MODELS:
        raise CheckpointError(
            f"cannot save a model without a registered arch name (got {arch!r}); "
            "build it with ramir.models.build_model"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    stored: set[int] = set()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        if t.numel() and t.data_ptr() in stored:  # one tensor under two names (RestormerRFR's
            t = t.clone()  # shared temperature): safetensors stores each name's own copy
        stored.add(t.data_ptr())
        tensors[k] = t
    arch_kwargs = dict(getattr(model, "arch_kwargs", {}))
    # RestormerRFR's DINOv2 folder is not part of the model: it is given again at load time
    # (load_model(path, dino=DIR)), so a machine's path never travels with a checkpoint.
    arch_kwargs.pop("dino", None)
    if "normalization" in model_kwargs(arch):
        # Recorded explicitly so a later change of a default cannot alter old checkpoints.
        arch_kwargs.setdefault("normalization", model.normalization.name)
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "ramir_version": __version__,
        "arch": arch,
        "arch_kwargs": json.dumps(arch_kwargs),
        "model_info": json.dumps(model.extra_metadata()),
        "extra": json.dumps(dict(extra or {})),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def raw_metadata(path: Path) -> dict[str, str]:
    """The undecoded header metadata of a safetensors file (``{}`` when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is truncated, corrupt or not a "
            f"safetensors file ({e})"
        ) from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of one of our ``.safetensors`` checkpoints."""
    path = Path(path)
    raw = raw_metadata(path)
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file without ramir metadata (a plain state dict); "
            "load_model reads it like an official checkpoint, guessing the architecture "
            "from its weights or taking arch=NAME (--arch NAME)"
        )
    meta: dict[str, Any] = dict(raw)
    for key in ("arch_kwargs", "model_info", "extra"):
        try:
            meta[key] = json.loads(raw.get(key, "{}"))
        except json.JSONDecodeError as e:
            raise CheckpointError(
                f"{path}: its metadata field {key!r} is not valid JSON ({e}); the file was "
                "edited or not written by ramir"
            ) from None
        except RecursionError:
            raise CheckpointError(
                f"{path}: its metadata field {key!r} is nested too deeply to be ramir's"
            ) from None
        if not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: its metadata field {key!r} must be a JSON object")
    return meta

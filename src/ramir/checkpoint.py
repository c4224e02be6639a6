"""Model checkpoints: our self-describing safetensors format and official BasicSR ``.pth``.

Our format is one ``.safetensors`` file whose header metadata records the architecture
name, its constructor arguments, the input normalisation and the package version, so
``load_model(path)`` rebuilds the model with no config. Official RAM releases are BasicSR
``.pth`` dicts (``{"params": ..., "params_ema": ...}``); ``load_model`` reads them too,
preferring ``params_ema``, stripping a ``module.`` prefix and ignoring the buffers
``attn_mask`` and ``relative_position_index`` that our models rebuild themselves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir import __version__
from ramir.errors import RamirError
from ramir.models import MODELS, build_model, model_kwargs
from ramir.models.base import RestorationModel

__all__ = [
    "CheckpointError",
    "save_model",
    "load_model",
    "read_metadata",
    "load_official_state_dict",
    "check_shapes",
    "official_state_dict",
    "infer_arch",
    "file_sha256",
    "read_state_dict",
    "load_weights",
    "resolve_weights_path",
    "list_checkpoints",
    "latest_checkpoint",
    "CHECKPOINT_DIR",
    "STATE_FILE",
    "MODEL_FILE",
    "EMA_FILE",
]

FORMAT = "ramir-model"
FORMAT_VERSION = 1
# Buffers that official checkpoints carry but our models recompute.
IGNORED_SUFFIXES = ("attn_mask", "relative_position_index")


class CheckpointError(RamirError, ValueError):
    """A checkpoint cannot be read or does not fit the model; the message says why."""


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
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    arch_kwargs = dict(getattr(model, "arch_kwargs", {}))
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


def _raw_metadata(path: Path) -> dict[str, str]:
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
    raw = _raw_metadata(path)
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
        if not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: its metadata field {key!r} must be a JSON object")
    return meta


# ----------------------------------------------------------------------------- official


def official_state_dict(obj: Any, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Extract a plain state dict from a BasicSR checkpoint object.

    Prefers ``params_ema`` over ``params``; accepts a bare state dict; strips ``module.``.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        sd[k[len("module.") :] if k.startswith("module.") else k] = v
    if not sd:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint")
    return sd


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, dict[str, Any]]:
    """Guess the architecture and its constructor arguments from parameter names/shapes."""
    keys = set(state_dict)
    if "conv_first.weight" in keys and any(".residual_group.blocks." in k for k in keys):
        embed = state_dict["conv_first.weight"].shape[0]
        depths: list[int] = []
        heads: list[int] = []
        layer_ids = sorted(
            {int(m.group(1)) for k in keys if (m := re.match(r"layers\.(\d+)\.", k))}
        )
        window = None
        for i in layer_ids:
            blocks = {
                int(m.group(1))
                for k in keys
                if (m := re.match(rf"layers\.{i}\.residual_group\.blocks\.(\d+)\.", k))
            }
            depths.append(len(blocks))
            table = state_dict[
                f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"
            ]
            heads.append(table.shape[1])
            window = (round(table.shape[0] ** 0.5) + 1) // 2
        fc1 = state_dict["layers.0.residual_group.blocks.0.mlp.fc1.weight"]
        kwargs: dict[str, Any] = {
            "embed_dim": embed,
            "depths": depths,
            "num_heads": heads,
            "window_size": window,
            "mlp_ratio": fc1.shape[0] / embed,
        }
        if "mask_token" in state_dict:
            kwargs["img_size"] = state_dict["mask_token"].shape[-1]
        if kwargs["mlp_ratio"] == int(kwargs["mlp_ratio"]):
            kwargs["mlp_ratio"] = int(kwargs["mlp_ratio"])
        return "ram_swinir", kwargs
    if "patch_embed.proj.weight" in keys and "prompt1.prompt_param" in keys:
        dim = state_dict["patch_embed.proj.weight"].shape[0]

        def count(prefix: str) -> int:
            return len({int(m.group(1)) for k in keys if (m := re.match(rf"{prefix}\.(\d+)\.", k))})

        num_blocks = [count(f"encoder_level{i}") for i in (1, 2, 3)] + [count("latent")]
        heads = [
            state_dict[f"{p}.0.attn.temperature"].shape[0]
            for p in ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
        ]
        return "ram_promptir", {
            "dim": dim,
            "num_blocks": num_blocks,
            "num_refinement_blocks": count("refinement"),
            "heads": heads,
        }
    if "intro.weight" in keys and "ending.weight" in keys:
        return "nafnet", {}
    raise CheckpointError(
        "cannot recognise the architecture from the checkpoint's parameter names "
        f"(first keys: {', '.join(list(state_dict)[:5])}); pass arch=NAME "
        f"(one of: {', '.join(MODELS.names())})"
    )


def load_official_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> None:
    """Load ``state_dict`` into ``model`` strictly (ignoring recomputed buffers).

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped entries.
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
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with another shape: {_names(shapes)}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit model {arch!r}: "
            + "; ".join(problems)
            + " (is it a checkpoint of another architecture or size?)"
        )


def _names(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ----------------------------------------------------------------------------- loading


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
        guessed, inferred = infer_arch(sd)
    except CheckpointError:
        if arch is None:
            raise
        guessed, inferred = arch, {}
    if arch is None:
        arch = guessed
    elif arch != guessed:
        inferred = {}
    model = build_model(arch, **{**inferred, **kwargs})
    load_official_state_dict(model, sd, str(path))
    return model.to(map_location).eval()


def _load_ours(
    path: Path, arch: str | None, map_location: Any, kwargs: Mapping[str, Any]
) -> RestorationModel:

    if _raw_metadata(path).get("format") != FORMAT:  # a plain state dict in safetensors
        sd = official_state_dict(read_state_dict(path), path)
        return _from_state_dict(sd, arch, map_location, kwargs, path)
    meta = read_metadata(path)
    if arch is not None and arch != meta["arch"]:
        raise CheckpointError(f"{path} holds a {meta['arch']!r} model, not {arch!r}")
    from safetensors import safe_open

    arch_kwargs = {**meta["arch_kwargs"], **kwargs}
    # The metadata says how big a model to build; a few hundred bytes can ask for a
    # network of billions of parameters. So first build it on the meta device (shapes
    # only, no memory) and check the file's tensor shapes against it.
    with torch.device("meta"):
        probe = build_model(meta["arch"], **arch_kwargs)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:
        raise CheckpointError(f"could not read weights from {path}: {e}") from None
    check_shapes({k: tuple(v.shape) for k, v in probe.state_dict().items()}, header,
                 meta["arch"], str(path))  # fmt: skip
    del probe
    sd = read_state_dict(path)
    model = build_model(meta["arch"], **arch_kwargs)
    load_official_state_dict(model, sd, str(path))
    return model.to(map_location).eval()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (used to tie analysis results to a checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- run folders
# A training run folder (``ramir pretrain/train/finetune --out OUT``) holds the final
# ``model.safetensors`` / ``model_ema.safetensors`` and checkpoint folders
# ``OUT/checkpoints/iter_XXXXXXXX/`` (see :mod:`ramir.training.checkpoint`). Finding
# weights in such folders lives here, below both training and attribution.

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^iter_(\d+)$")
STATE_FILE = "state.pt"
# The same two names in a run folder (final weights) and in its checkpoint folders.
MODEL_FILE = "model.safetensors"
EMA_FILE = "model_ema.safetensors"
# What checkpoint folders called the EMA weights before they took EMA_FILE; still read.
LEGACY_EMA_FILE = "ema.safetensors"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or ``None``."""
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1] if ckpts else None


def resolve_weights_path(path: str | Path, which: str = "ema") -> Path:
    """Find a weights file from a file, a checkpoint folder or a run folder.

    A run folder gives its final ``model_ema.safetensors`` / ``model.safetensors`` or
    else its latest checkpoint; a checkpoint folder gives the same two names (or, written
    before they matched, ``ema.safetensors``). ``which="ema"`` falls back to the raw
    weights when a run had no EMA.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"weights not found: {path}")
    candidates: list[Path] = []
    if (path / STATE_FILE).is_file():  # a checkpoint folder
        candidates = [path / EMA_FILE, path / LEGACY_EMA_FILE, path / MODEL_FILE]
    else:  # a run folder
        candidates = [path / EMA_FILE, path / MODEL_FILE]
        latest = latest_checkpoint(path)
        if latest is not None:
            candidates += [latest / EMA_FILE, latest / LEGACY_EMA_FILE, latest / MODEL_FILE]
    if which == "model":
        candidates = [c for c in candidates if c.name == MODEL_FILE]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no weights ({', '.join(c.name for c in candidates)}) in {path}")


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
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
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
    load_official_state_dict(model, read_state_dict(path), str(path))

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
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir._version import __version__
from ramir.errors import RamirError
from ramir.models import MODELS, build_model, model_kwargs, resolve_model
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
    "check_arch_kwargs",
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

log = logging.getLogger(__name__)

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
        except RecursionError:
            raise CheckpointError(
                f"{path}: its metadata field {key!r} is nested too deeply to be ramir's"
            ) from None
        if not isinstance(meta[key], dict):
            raise CheckpointError(f"{path}: its metadata field {key!r} must be a JSON object")
    return meta


# ----------------------------------------------------------------------------- official


def official_state_dict(obj: Any, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """Extract a plain state dict from a released checkpoint object.

    Reads BasicSR files (``params_ema`` preferred over ``params``), PyTorch Lightning
    checkpoints (``state_dict``; a ``net.`` prefix, the PromptIR release's, is stripped),
    ``{'model': ...}`` dicts and bare state dicts; strips ``module.``. Entries that are
    not weights (optimizer states, epochs, other sub-modules of a Lightning module) are
    ignored with a note in the log.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for key in ("params_ema", "params", "state_dict", "model"):
        if key in obj and isinstance(obj[key], Mapping):
            others = sorted(str(k) for k in obj if k != key)
            if others:
                log.info("%s: reading %r; ignoring %s", Path(path).name, key, ", ".join(others))
            obj = obj[key]
            break
    sd: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        sd[k[len("module.") :] if k.startswith("module.") else k] = v
    if not sd:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint")
    # A Lightning module holding the network as ``self.net`` (PromptIR's release).
    if sum(k.startswith("net.") for k in sd) * 2 >= len(sd):
        rest = sorted(k for k in sd if not k.startswith("net."))
        if rest:
            log.info("%s: ignoring %d entries outside 'net.': %s", Path(path).name,
                     len(rest), _names(rest))  # fmt: skip
        sd = {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}
    return sd


def _count(keys: set[str], prefix: str) -> int:
    """Number of numbered children ``prefix.<i>.`` among ``keys``."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _ffn_factor(state_dict: Mapping[str, torch.Tensor], widths: Mapping[str, int]) -> float:
    """The GDFN expansion factor ``f`` with ``int(width * f)`` equal to every level's
    hidden width (``project_out`` input channels); 2.66, the released value, first."""
    hidden = {
        width: state_dict[f"{prefix}.0.ffn.project_out.weight"].shape[1]
        for prefix, width in widths.items()
        if f"{prefix}.0.ffn.project_out.weight" in state_dict
    }
    if not hidden:
        return 2.66
    # int(w * f) == h  <=>  h / w <= f < (h + 1) / w, for every level
    low = max(h / w for w, h in hidden.items())
    high = min((h + 1) / w for w, h in hidden.items())
    for f in (2.66, low, (low + high) / 2):
        if all(int(w * f) == hw for w, hw in hidden.items()):
            return f
    raise CheckpointError(
        f"no single feed-forward expansion factor fits the hidden widths {hidden}"
    )


def _restormer_kwargs(sd: Mapping[str, torch.Tensor], keys: set[str]) -> dict[str, Any]:
    """Constructor arguments shared by Restormer and PromptIR, read from the weights."""
    dim = sd["patch_embed.proj.weight"].shape[0]
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    heads = [
        sd[f"{p}.0.attn.temperature"].shape[0] if f"{p}.0.attn.temperature" in sd else 1
        for p in levels
    ]
    return {
        "dim": dim,
        "num_blocks": [_count(keys, p) for p in levels],
        "num_refinement_blocks": _count(keys, "refinement"),
        "heads": heads,
        "ffn_expansion_factor": _ffn_factor(sd, {p: dim * 2**i for i, p in enumerate(levels)}),
        "bias": "encoder_level1.0.attn.qkv.bias" in keys,
        "LayerNorm_type": "WithBias" if "encoder_level1.0.norm1.body.bias" in keys else "BiasFree",
    }


def _swin_kwargs(sd: Mapping[str, torch.Tensor], keys: set[str]) -> dict[str, Any]:
    """Constructor arguments of a SwinIR-family state dict (RAM-SwinIR or classic)."""
    embed = sd["conv_first.weight"].shape[0]
    depths: list[int] = []
    heads: list[int] = []
    window = 8
    for i in range(_count(keys, "layers")):
        depths.append(_count(keys, f"layers.{i}.residual_group.blocks"))
        table = sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
        heads.append(table.shape[1])
        window = (round(table.shape[0] ** 0.5) + 1) // 2
    fc1 = sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"]
    ratio = fc1.shape[0] / embed
    return {
        "in_chans": sd["conv_first.weight"].shape[1],
        "embed_dim": embed,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": int(ratio) if ratio == int(ratio) else ratio,
        "resi_connection": "3conv" if "conv_after_body.0.weight" in keys else "1conv",
    }


def infer_arch(
    state_dict: Mapping[str, torch.Tensor], hint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Guess the architecture and its constructor arguments from parameter names/shapes.

    Files without ramir metadata are releases: RAM's (``ram_swinir``, ``ram_promptir``,
    ImageNet-normalised input) or the field's (``nafnet``, ``swinir``, ``restormer``,
    ``promptir``), which get their own input convention (RGB in [0, 1]; NAFNet's zero
    padding). Classic SwinIR's ``img_range`` is not stored: window 7 means the JPEG
    models (255), otherwise the denoising models (1).

    RAM++'s networks are asked first: the AdaSAM mask generator is told by its keys; its
    pretraining Restormer has a plain Restormer's keys, so it is recognised only when
    ``hint`` (the file name or the architecture asked for) contains ``woskip``, as the
    release's ``RestormerWoSkip.pth`` does. RAM++'s fine-tuned RestormerRFR is told by its
    DINO fusion gates (its DINOv2 is not in the file: ``load_model(path, dino=DIR)``).

    Raises:
        CheckpointError: no architecture fits, or the names fit one but entries its
            size is read from are missing or mis-shaped (a partial state dict).
    """
    try:
        return _infer_arch(state_dict, hint)
    except CheckpointError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        what = f"entry {e}" if isinstance(e, KeyError) else f"an entry ({type(e).__name__}: {e})"
        raise CheckpointError(
            "the checkpoint's parameter names look like a known architecture, but "
            f"{what} that its size is read from is missing or mis-shaped: is it a partial "
            "or edited state dict? A complete file loads; ramir cannot guess the rest"
        ) from None


def _infer_arch(
    state_dict: Mapping[str, torch.Tensor], hint: str | None
) -> tuple[str, dict[str, Any]]:
    from ramir.models import adasam, adasam_restormer, restormer_rfr

    for detect in (adasam.detect, restormer_rfr.detect, adasam_restormer.detect):
        if (found := detect(state_dict, hint)) is not None:
            return found
    keys = set(state_dict)
    if "conv_first.weight" in keys and any(".residual_group.blocks." in k for k in keys):
        if any(k.startswith(("conv_before_upsample.", "upsample.", "conv_up1.")) for k in keys):
            raise CheckpointError(
                "this is a SwinIR super-resolution checkpoint (it has an upsampler); ramir "
                "restores at the input resolution: use SwinIR's denoising or JPEG models"
            )
        kwargs = _swin_kwargs(state_dict, keys)
        if "mask_token" in state_dict or state_dict["conv_first.weight"].shape[-1] == 1:
            if "mask_token" in state_dict:
                kwargs["img_size"] = state_dict["mask_token"].shape[-1]
            return "ram_swinir", kwargs
        window = kwargs["window_size"]
        masks = [k for k in keys if k.endswith(".attn_mask")]
        n_windows = state_dict[masks[0]].shape[0] if masks else 64
        kwargs["img_size"] = window * max(round(n_windows**0.5), 2)
        kwargs["img_range"] = 255.0 if window == 7 else 1.0
        kwargs["normalization"] = "none"
        return "swinir", kwargs
    if "patch_embed.proj.weight" in keys and "encoder_level1.0.attn.temperature" in keys:
        kwargs = _restormer_kwargs(state_dict, keys)
        if "prompt1.prompt_param" in keys:
            if "chnl_reduce1.weight" in keys:  # the original release's unused layers
                return "promptir", {**kwargs, "normalization": "none"}
            return "ram_promptir", kwargs
        kwargs.update(
            inp_channels=state_dict["patch_embed.proj.weight"].shape[1],
            out_channels=state_dict["output.weight"].shape[0],
            dual_pixel_task="skip_conv.weight" in keys,
            normalization="none",
        )
        return "restormer", kwargs
    if "intro.weight" in keys and "ending.weight" in keys:
        return "nafnet", {
            "img_channel": state_dict["intro.weight"].shape[1],
            "width": state_dict["intro.weight"].shape[0],
            "enc_blk_nums": [_count(keys, f"encoders.{i}") for i in range(_count(keys, "downs"))],
            "middle_blk_num": _count(keys, "middle_blks"),
            "dec_blk_nums": [_count(keys, f"decoders.{i}") for i in range(_count(keys, "ups"))],
            "normalization": "none",
            "padding": "zeros",
        }
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
    load_official_state_dict(model, sd, str(path))
    return model.to(map_location).eval()


def _load_ours(
    path: Path, arch: str | None, map_location: Any, kwargs: Mapping[str, Any]
) -> RestorationModel:

    if _raw_metadata(path).get("format") != FORMAT:  # a plain state dict in safetensors
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
    load_official_state_dict(model, sd, str(path))
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
        obj = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"could not read checkpoint {path}: the file is truncated, corrupt or not a "
            f"PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from None
    return official_state_dict(obj, path)


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only``; a file that also pickles other Python objects
    (some training frameworks store their settings so) is read again with
    :mod:`ramir.safe_unpickle`, an allow-list unpickler for every pickle of both the zip
    and the legacy format: the tensors are kept, those objects become inert placeholders,
    and a file that names code (``os.system``, ``builtins.eval``...) is refused.

    Raises:
        CheckpointError: the file is refused; nothing of it ran.
    """
    import pickle
    import tarfile

    from ramir import safe_unpickle

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


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the weights of ``path`` (see :func:`read_state_dict`) into ``model`` strictly.

    Raises:
        CheckpointError: naming missing, unexpected and mis-shaped entries.
    """
    load_official_state_dict(model, read_state_dict(path), str(path))

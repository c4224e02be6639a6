"""Model checkpoints: our self-describing safetensors format and the field's releases.

Our format is one ``.safetensors`` file whose header metadata records the architecture
name, its constructor arguments, the input normalisation and the package version, so
``load_model(path)`` rebuilds the model with no config. Official RAM releases are BasicSR
``.pth`` dicts (``{"params": ..., "params_ema": ...}``); ``load_model`` reads them too,
preferring ``params_ema``, stripping a ``module.`` prefix and ignoring the buffers
``attn_mask`` and ``relative_position_index`` that our models rebuild themselves.

One module per job, every public name importable from ``ramir.checkpoint``:

* :mod:`~ramir.checkpoint.formats`: reading and writing weight files
  (:func:`read_state_dict`, :func:`load_weights`, :func:`load_state_dict`,
  :func:`save_model`, :func:`read_metadata`);
* :mod:`~ramir.checkpoint.safe_unpickle`: the allow-list unpickler that pickled files
  go through (no file's code runs; docs/checkpoints.md);
* :mod:`~ramir.checkpoint.official`: unwrapping released files
  (:func:`official_state_dict`);
* :mod:`~ramir.checkpoint.detect`: which backbone a bare state dict is
  (:func:`infer_arch`);
* :mod:`~ramir.checkpoint.loading`: rebuilding a model from any of these files
  (:func:`load_model`, with the bounds on what a file's metadata may ask for);
* :mod:`~ramir.checkpoint.blend`: weight interpolation of checkpoints of one model
  (:func:`blend_models`);
* :mod:`~ramir.checkpoint.runs`: training run folders (:func:`latest_checkpoint`,
  :func:`resolve_weights_path`).
"""

from __future__ import annotations

from ramir.checkpoint.blend import blend_models
from ramir.checkpoint.detect import infer_arch
from ramir.checkpoint.formats import (
    FORMAT,
    FORMAT_VERSION,
    check_shapes,
    file_sha256,
    load_state_dict,
    load_weights,
    read_metadata,
    read_state_dict,
    save_model,
)
from ramir.checkpoint.loading import (
    MAX_ARGUMENT_DEPTH,
    MAX_INT_ARGUMENT,
    MAX_LIST_ARGUMENT,
    check_arch_kwargs,
    load_model,
)
from ramir.checkpoint.official import IGNORED_SUFFIXES, official_state_dict
from ramir.checkpoint.runs import (
    CHECKPOINT_DIR,
    EMA_FILE,
    LEGACY_EMA_FILE,
    MODEL_FILE,
    STATE_FILE,
    latest_checkpoint,
    list_checkpoints,
    resolve_weights_path,
)
from ramir.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "save_model",
    "load_model",
    "blend_models",
    "read_metadata",
    "load_state_dict",
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
    "LEGACY_EMA_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "IGNORED_SUFFIXES",
    "MAX_INT_ARGUMENT",
    "MAX_LIST_ARGUMENT",
    "MAX_ARGUMENT_DEPTH",
]

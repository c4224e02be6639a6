"""Training run folders: where a run keeps its weights, and finding them.

A training run folder (``ramir pretrain/train/finetune --out OUT``) holds the final
``model.safetensors`` / ``model_ema.safetensors`` and checkpoint folders
``OUT/checkpoints/iter_XXXXXXXX/`` (written by :mod:`ramir.training.checkpoint`).
Finding weights in such folders lives here, below both training and attribution.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "list_checkpoints",
    "latest_checkpoint",
    "resolve_weights_path",
    "CHECKPOINT_DIR",
    "STATE_FILE",
    "MODEL_FILE",
    "EMA_FILE",
    "LEGACY_EMA_FILE",
]

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

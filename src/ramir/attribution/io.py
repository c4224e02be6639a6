"""``mac.json``: the result of a layer analysis, readable by people and by ``ramir finetune``.

Layout::

    {
      "format": "ramir-mac", "format_version": 1,
      "method": "mac" | "ig" | "random",
      "parameters": {"steps": 200, "start_ratio": 0.5, "sharpness": 10000.0, ...},
      "model": {"arch": "ram_swinir", "arch_kwargs": {...}, "n_layers": 263, ...},
      "checkpoint": {"path": "...", "sha256": "..."},
      "config": {... the resolved analysis config ...},
      "layers": [{"layer": "conv_last", "score": 1.2e-3, "n_params": 4863, "index": 262}, ...]
    }

``layers`` is sorted by descending score; ``index`` is the layer's position along the
network depth (the order of :func:`ramir.attribution.list_layers`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAC_FORMAT", "MacResult", "save_mac", "load_mac", "ranked", "staged_outputs"]

MAC_FORMAT = "ramir-mac"
MAC_FORMAT_VERSION = 1


@dataclass
class MacResult:
    """A loaded ``mac.json``.

    ``scores`` maps layer name -> score in network-depth order (as the analysis returned
    them); ``ranking()`` gives names by descending score.
    """

    method: str
    scores: dict[str, float]
    n_params: dict[str, int | None] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def ranking(self) -> list[str]:
        """Layer names by descending score."""
        return ranked(self.scores)


def ranked(scores: Mapping[str, float]) -> list[str]:
    """Layer names by descending score (ties keep the given order)."""
    return [n for n, _ in sorted(scores.items(), key=lambda kv: -float(kv[1]))]


def save_mac(
    path: str | Path,
    scores: Mapping[str, float],
    *,
    method: str,
    params: Mapping[str, Any],
    model_info: Mapping[str, Any],
    checkpoint_hash: str | None,
    config: Mapping[str, Any] | None = None,
    checkpoint_path: str | None = None,
    n_params: Mapping[str, int] | None = None,
) -> Path:
    """Write a ``mac.json`` (atomically); return its path.

    Args:
        path: destination file.
        scores: layer name -> score, in network-depth order.
        method: ``"mac"``, ``"ig"`` or ``"random"`` (free text is accepted).
        params: the attribution parameters (steps, start_ratio, sharpness, seed, images...).
        model_info: architecture name, constructor arguments, parameter count...
        checkpoint_hash: SHA-256 of the analysed checkpoint (``None`` if there is none).
        config: the resolved config of the run.
        checkpoint_path: where the checkpoint was read from.
        n_params: layer name -> parameters it owns (see ``layer_param_counts``).
    """
    for name, s in scores.items():
        if not math.isfinite(float(s)):
            raise ValueError(f"score of layer {name!r} is not finite ({s}); refusing to save it")
    index = {name: i for i, name in enumerate(scores)}
    layers = [
        {
            "layer": name,
            "score": float(scores[name]),
            "n_params": None if n_params is None else int(n_params[name]),
            "index": index[name],
        }
        for name in ranked(scores)
    ]
    doc = {
        "format": MAC_FORMAT,
        "format_version": MAC_FORMAT_VERSION,
        "method": method,
        "parameters": dict(params),
        "model": {**dict(model_info), "n_layers": len(layers)},
        "checkpoint": {"path": checkpoint_path, "sha256": checkpoint_hash},
        "config": dict(config or {}),
        "layers": layers,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def staged_outputs(folder: str | Path, *names: str) -> Iterator[list[Path]]:
    """Write several output files all together or not at all.

    Yields a temporary path in ``folder`` for each file name (same suffix, so writers
    that go by it still work). When the block ends without an error, each replaces
    ``folder/NAME`` (``os.replace``, in the order given: put the file that marks a
    finished run, e.g. ``mac.json``, last); when it raises, the temporary files are
    removed and whatever ``folder`` held before is left untouched (a folder created
    here and left empty is removed).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"partial-{os.getpid()}"
    staged = [folder / f".{Path(n).stem}.{tag}{Path(n).suffix}" for n in names]
    try:
        yield staged
        for tmp, name in zip(staged, names, strict=True):
            os.replace(tmp, folder / name)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if nothing was written


def load_mac(path: str | Path) -> MacResult:
    """Read a ``mac.json`` written by :func:`save_mac`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"layer analysis file not found: {path} (run `ramir analyze`)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != MAC_FORMAT:
        raise ValueError(f'{path}: not a ramir mac.json (missing "format": "{MAC_FORMAT}")')
    entries = doc.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'{path}: "layers" must be a non-empty list')
    try:
        by_depth = sorted(
            entries, key=lambda e: e["index"] if e.get("index") is not None else math.inf
        )
        scores = {str(e["layer"]): float(e["score"]) for e in by_depth}
        n_params = {
            str(e["layer"]): (None if e.get("n_params") is None else int(e["n_params"]))
            for e in by_depth
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: malformed layer entry ({e})") from None
    if len(scores) != len(entries):
        raise ValueError(f"{path}: duplicate layer names")
    model = dict(doc.get("model", {}))
    model.pop("n_layers", None)
    return MacResult(
        method=str(doc.get("method", "")),
        scores=scores,
        n_params=n_params,
        parameters=dict(doc.get("parameters", {})),
        model=model,
        checkpoint=dict(doc.get("checkpoint", {})),
        config=dict(doc.get("config", {})),
    )

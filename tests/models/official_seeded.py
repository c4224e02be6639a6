"""Seeded weights for the official-release equality tests (shared by the tests and by
``make_official_vectors.py``, which recorded the vectors with the upstream code).

A vector file ``tests/data/official/<case>.npz`` holds the official model's state-dict
layout (names, shapes, parameter or buffer), the seed, an input image and the output of
the upstream forward on it. Both sides fill the parameters from the layout and the seed
with :func:`seeded_parameters`, so no weights are stored. The values come from NumPy's
PCG64 ``random()`` stream (stable across NumPy versions) and are scaled per kind of
tensor so that every layer changes the output noticeably.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

VECTOR_DIR = Path(__file__).resolve().parents[1] / "data" / "official"


def _uniform(rng: np.random.Generator, shape: Sequence[int], low: float, high: float):
    return low + (high - low) * rng.random(tuple(shape), dtype=np.float64)


def seeded_parameters(layout: list[dict], seed: int) -> dict[str, torch.Tensor]:
    """Float32 values for every ``kind == "parameter"`` entry of ``layout``, in order.

    Matrices and kernels: uniform with variance ``1 / fan_in``; 1-D norm weights and
    attention temperatures: around 1; biases: small; NAFNet's ``beta``/``gamma`` and
    relative-position tables: +-0.5; PromptIR's prompt tensors: [0, 1) like their
    official initialisation.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    for entry in layout:
        if entry["kind"] != "parameter":
            continue
        name, shape = entry["name"], entry["shape"]
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "prompt_param":
            value = _uniform(rng, shape, 0.0, 1.0)
        elif leaf in ("beta", "gamma"):
            value = _uniform(rng, shape, -0.5, 0.5)
        elif leaf == "temperature":
            value = _uniform(rng, shape, 0.5, 1.5)
        elif leaf == "relative_position_bias_table":
            value = _uniform(rng, shape, -0.5, 0.5)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            bound = math.sqrt(3.0 / fan_in)
            value = _uniform(rng, shape, -bound, bound)
        elif leaf == "weight":  # 1-D: a norm's scale
            value = _uniform(rng, shape, 0.8, 1.2)
        else:
            value = _uniform(rng, shape, -0.1, 0.1)
        out[name] = torch.from_numpy(value.astype(np.float32))
    return out


def layout_of(model: torch.nn.Module) -> list[dict]:
    """The state-dict layout of ``model``: name, shape and kind of every entry, in order."""
    params = {n for n, _ in model.named_parameters()}
    return [
        {"name": k, "shape": list(v.shape), "kind": "parameter" if k in params else "buffer"}
        for k, v in model.state_dict().items()
    ]


def save_case(path: Path, meta: dict, layout: list[dict], **arrays: np.ndarray) -> None:
    """Write one vector file (``meta`` and ``layout`` as JSON strings, arrays as float32)."""
    np.savez_compressed(
        path,
        meta=np.array(json.dumps(meta)),
        layout=np.array(json.dumps(layout)),
        **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()},
    )


def load_case(name: str) -> tuple[dict, list[dict], dict[str, np.ndarray]]:
    """``(meta, layout, arrays)`` of vector file ``name``."""
    with np.load(VECTOR_DIR / f"{name}.npz") as data:
        meta = json.loads(str(data["meta"]))
        layout = json.loads(str(data["layout"]))
        arrays = {k: data[k] for k in data.files if k not in ("meta", "layout")}
    return meta, layout, arrays


def case_names() -> list[str]:
    """Every recorded case, sorted."""
    return sorted(p.stem for p in VECTOR_DIR.glob("*.npz"))

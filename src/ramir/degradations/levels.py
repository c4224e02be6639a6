"""One-number levels of a few degradations (the web app's sliders, ``ramir serve``).

:data:`LEVELS` names a degradation and the range of its "level"; :func:`degrade_at_level`
maps a level to the fixed parameters of a registered degradation
(:mod:`ramir.degradations`) and applies it with a seeded generator. Haze, rain and low
light have several parameters: one level moves them together from mild to strong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ramir.degradations import get

__all__ = ["LEVELS", "check_level", "degrade_at_level", "level_params"]

LEVELS: dict[str, dict[str, Any]] = {
    "noise": {
        "label": "Gaussian noise",
        "level": "sigma (0-255)",
        "default": 25,
        "min": 1,
        "max": 75,
    },
    "jpeg": {"label": "JPEG", "level": "quality", "default": 20, "min": 5, "max": 95},
    "blur": {
        "label": "Gaussian blur",
        "level": "sigma (pixels)",
        "default": 2.0,
        "min": 0.2,
        "max": 4.0,
    },
    "haze": {"label": "Haze", "level": "density", "default": 0.6, "min": 0.1, "max": 1.0},
    "rain": {"label": "Rain", "level": "amount", "default": 0.5, "min": 0.1, "max": 1.0},
    "lowlight": {"label": "Low light", "level": "darkness", "default": 0.5, "min": 0.1, "max": 1.0},
}
"""Name -> ``label``, the level's meaning (``level``), its ``default``, ``min`` and ``max``."""


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(LEVELS)}")


def level_params(name: str, level: float) -> tuple[str, dict[str, Any]]:
    """The registered degradation and its fixed parameters for ``name`` at ``level``.

    Raises:
        ValueError: ``name`` is not in :data:`LEVELS`.
    """
    if name == "noise":
        return "gaussian_noise", {"sigma": level}
    if name == "jpeg":
        return "jpeg", {"quality": int(round(level))}
    if name == "blur":
        return "gaussian_blur", {"sigma": level}
    if name == "haze":
        return "haze", {"beta": 0.4 + 1.8 * level, "airlight": 0.9}
    if name == "rain":
        return "rain", {
            "density": 0.002 + 0.012 * level,
            "length": 20.0,
            "angle": 10.0,
            "intensity": 0.8,
        }
    if name == "lowlight":
        return "low_light", {"gamma": 1.5 + 2.0 * level, "a": 0.95, "b": 1.0 - 0.5 * level}
    raise _unknown(name)


def check_level(name: str, level: float) -> None:
    """Raise ``ValueError`` (a message for the page) unless ``name`` is ``""``/``"none"``
    or a degradation of :data:`LEVELS` and ``level`` is in its range."""
    if not name or name == "none":
        return
    spec = LEVELS.get(name)
    if spec is None:
        raise _unknown(name)
    if not spec["min"] <= level <= spec["max"]:
        raise ValueError(
            f"{spec['label']} {spec['level']} must be in [{spec['min']}, {spec['max']}], got {level}"
        )


def degrade_at_level(img: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
    """Degrade ``img`` (float32 ``(H, W, 3)`` in [0, 1]) by ``name`` at ``level``; returns
    float32 ``(H, W, 3)`` in [0, 1], the same for the same ``seed``."""
    if name not in LEVELS:
        raise _unknown(name)
    check_level(name, level)
    fn_name, params = level_params(name, level)
    return get(fn_name)(img, np.random.default_rng(seed), **params)

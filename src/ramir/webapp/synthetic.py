"""The page's synthetic degradations: one "level" slider each, mapped to the parameters
of a registered degradation (``ramir.degradations``)."""

from __future__ import annotations

from typing import Any

import numpy as np

# Synthetic degradations offered by the page: one "level" slider each, mapped to the
# parameters of the registered degradation (``ramir.degradations``).
SYNTHETIC: dict[str, dict[str, Any]] = {
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


def _synthetic_params(name: str, level: float) -> tuple[str, dict[str, Any]]:
    """The registered degradation and its fixed parameters for a page slider ``level``."""
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
    raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")


def check_synthetic(name: str, level: float) -> None:
    """Raise ``ValueError`` (a message for the page) unless ``name`` is ``"none"`` or a
    page degradation and ``level`` is in its slider's range."""
    if not name or name == "none":
        return
    spec = SYNTHETIC.get(name)
    if spec is None:
        raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")
    if not spec["min"] <= level <= spec["max"]:
        raise ValueError(
            f"{spec['label']} {spec['level']} must be in [{spec['min']}, {spec['max']}], got {level}"
        )


def apply_synthetic(img: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
    """Degrade ``img`` (float32 ``(H, W, 3)`` in [0, 1]) by the page's degradation ``name``
    at slider ``level``; deterministic for a given ``seed``."""
    from ramir import degradations

    if name not in SYNTHETIC:
        raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")
    check_synthetic(name, level)
    fn_name, params = _synthetic_params(name, level)
    return degradations.get(fn_name)(img, np.random.default_rng(seed), **params)

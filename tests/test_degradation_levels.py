"""The one-number degradation levels of the web app's sliders (ramir.degradations.levels)."""

from __future__ import annotations

import numpy as np
import pytest

from ramir import degradations
from ramir.degradations.levels import LEVELS, check_level, degrade_at_level, level_params


def test_every_level_maps_to_a_registered_degradation_and_is_seeded():
    rng = np.random.default_rng(0)
    img = rng.random((24, 32, 3), dtype=np.float32)
    for name, spec in LEVELS.items():
        assert spec["min"] <= spec["default"] <= spec["max"], name
        fn_name, _ = level_params(name, spec["default"])
        assert fn_name in degradations.names(), name
        a = degrade_at_level(img, name, spec["default"], seed=3)
        assert a.dtype == np.float32 and a.shape == img.shape, name
        assert 0.0 <= a.min() and a.max() <= 1.0, name
        assert np.abs(a - img).mean() > 1e-3, name  # it degrades
        np.testing.assert_array_equal(a, degrade_at_level(img, name, spec["default"], seed=3))


def test_stronger_levels_degrade_more():
    img = np.full((32, 32, 3), 0.5, np.float32)
    img[:, 16:] = 0.8
    for name in ("noise", "blur", "haze", "lowlight"):
        lo, hi = LEVELS[name]["min"], LEVELS[name]["max"]
        mild = np.abs(degrade_at_level(img, name, lo, seed=0) - img).mean()
        strong = np.abs(degrade_at_level(img, name, hi, seed=0) - img).mean()
        assert strong > mild, name


def test_levels_out_of_range_and_unknown_names_are_refused():
    check_level("none", 0.0)
    check_level("", 0.0)
    with pytest.raises(ValueError, match=r"Gaussian noise sigma \(0-255\) must be in \[1, 75\]"):
        check_level("noise", 100)
    with pytest.raises(ValueError, match="unknown degradation 'nope'; choose one of: noise"):
        degrade_at_level(np.zeros((8, 8, 3), np.float32), "nope", 1.0, seed=0)

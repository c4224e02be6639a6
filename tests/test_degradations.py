"""Degradations: range, shape, dtype, determinism, and that each does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ramir.degradations as D


def _photo(h: int = 64, w: int = 64) -> np.ndarray:
    """A textured test image: smooth gradients + fine checker + noise, in [0.1, 0.9]."""
    rng = np.random.default_rng(123)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack(
        [0.5 + 0.3 * np.sin(6 * x), 0.5 + 0.3 * np.cos(5 * y), 0.5 + 0.2 * x - 0.2 * y], 2
    )
    checker = ((np.indices((h, w)).sum(0) // 2) % 2)[:, :, None] * 0.1 - 0.05
    img = base + checker + rng.normal(0, 0.02, (h, w, 3))
    return np.clip(img, 0.1, 0.9).astype(np.float32)


def _hf_energy(img: np.ndarray) -> float:
    """Mean squared finite difference: the high-frequency energy of an image."""
    return float((np.diff(img, axis=0) ** 2).mean() + (np.diff(img, axis=1) ** 2).mean())


def _blockiness(img: np.ndarray) -> float:
    """Mean |jump| across 8x8 block borders / mean |jump| elsewhere (JPEG block artefacts)."""
    g = np.abs(np.diff(img.mean(2), axis=1))
    cols = np.arange(g.shape[1])
    border = (cols % 8) == 7
    return float(g[:, border].mean() / (g[:, ~border].mean() + 1e-8))


def test_registry_lists_all():
    expected = {
        "identity",
        "gaussian_noise",
        "gaussian_blur",
        "jpeg",
        "haze",
        "rain",
        "low_light",
        "motion_blur",
        "poisson_noise",
        "salt_pepper_noise",
        "speckle_noise",
        "chain",
    }
    assert set(D.names()) == expected
    with pytest.raises(KeyError, match="choose one of"):
        D.get("fog")
    for name in D.names():
        assert D.describe(name).startswith(name)
        assert D.get(name).__doc__


@pytest.mark.parametrize("name", D.names())
def test_contract(name):
    img = _photo(40, 56)
    before = img.copy()
    out1 = D.get(name)(img, np.random.default_rng(7))
    out2 = D.get(name)(img, np.random.default_rng(7))
    out3 = D.get(name)(img, np.random.default_rng(8))
    assert np.array_equal(img, before), "input was modified"
    assert out1.shape == img.shape and out1.dtype == np.float32
    assert out1.min() >= 0.0 and out1.max() <= 1.0 and np.isfinite(out1).all()
    assert np.array_equal(out1, out2), "not deterministic under a seed"
    if name != "identity":
        assert not np.array_equal(out1, out3), "seed has no effect"
        assert not np.array_equal(out1, img), "did nothing"
    else:
        assert np.array_equal(out1, img)


def test_validate_params_and_apply_torch():
    with pytest.raises(ValueError, match="got unknown parameter\\(s\\) qualty; valid parameters"):
        D.validate_params("jpeg", {"qualty": 10})
    with pytest.raises(TypeError, match="valid parameters: quality, quality_range"):
        D.apply("jpeg", _photo(8, 8), np.random.default_rng(0), qualty=10)
    t = torch.from_numpy(_photo(16, 24).transpose(2, 0, 1).copy())
    out = D.apply("gaussian_blur", t, np.random.default_rng(0), sigma=1.0)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 16, 24)
    d = D.Degradation("jpeg", {"quality": 50})
    assert d(_photo(16, 16), np.random.default_rng(0)).shape == (16, 16, 3)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) sigma"):
        D.Degradation("jpeg", {"sigma": 3})
    with pytest.raises(TypeError, match="float"):
        D.get("haze")(np.zeros((4, 4, 3), np.uint8), np.random.default_rng(0))


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_gaussian_noise_std_matches_sigma(sigma):
    img = np.full((128, 128, 3), 0.5, np.float32)
    out = D.gaussian_noise(img, np.random.default_rng(0), sigma=sigma)
    resid = (out - img) * 255
    # rounding to integers adds variance 1/12
    assert abs(resid.std() - np.sqrt(sigma**2 + 1 / 12)) < 0.03 * sigma
    assert abs(resid.mean()) < 3 * sigma / np.sqrt(resid.size) + 0.05
    # 8-bit output like the reference
    assert np.allclose(out * 255, np.round(out * 255), atol=1e-3)
    # the reference's truncation darkens by about half a level
    trunc = D.gaussian_noise(img, np.random.default_rng(0), sigma=sigma, quantize="trunc")
    assert -0.6 < ((trunc - out) * 255).mean() < -0.4


def test_gaussian_noise_range_draw():
    img = np.full((64, 64, 3), 0.5, np.float32)
    stds = [
        ((D.gaussian_noise(img, np.random.default_rng(s)) - img) * 255).std() for s in range(20)
    ]
    assert 0 <= min(stds) and max(stds) <= 51 and np.ptp(stds) > 10


def test_gaussian_blur_lowers_high_frequencies_and_matches_kernel():
    img = _photo()
    out = D.gaussian_blur(img, np.random.default_rng(0), sigma=2.0)
    assert _hf_energy(out) < 0.2 * _hf_energy(img)
    assert abs(out.mean() - img.mean()) < 0.01
    k = D.gaussian_kernel(15, 2.0)
    assert k.shape == (15, 15) and abs(k.sum() - 1) < 1e-9
    # interior pixel equals the explicit 15x15 correlation
    y, x = 30, 33
    ref = (img[y - 7 : y + 8, x - 7 : x + 8, 0] * k).sum()
    assert abs(out[y, x, 0] - ref) < 1e-5
    # wider sigma blurs more
    wider = D.gaussian_blur(img, np.random.default_rng(0), sigma=3.0)
    assert _hf_energy(wider) < _hf_energy(out)


def test_jpeg_low_quality_is_blockier():
    img = _photo(64, 64)
    q10 = D.jpeg(img, np.random.default_rng(0), quality=10)
    q90 = D.jpeg(img, np.random.default_rng(0), quality=90)
    assert _blockiness(q10) > _blockiness(q90)
    assert np.abs(q10 - img).mean() > np.abs(q90 - img).mean()
    draws = {
        int(round(np.abs(D.jpeg(img, np.random.default_rng(s)) - img).mean() * 1e4))
        for s in range(6)
    }
    assert len(draws) > 1


def test_haze_lowers_contrast_and_brightens_towards_airlight():
    img = _photo()
    out = D.haze(img, np.random.default_rng(0), beta=1.5, airlight=0.9)
    assert out.std() < 0.8 * img.std()
    assert out.mean() > img.mean()
    # transmission is smooth: the haze layer has far less high-frequency energy than the image
    layer = out - img
    assert _hf_energy(layer) < _hf_energy(img)
    depth = D.weather.haze_depth((32, 48), np.random.default_rng(0))
    assert depth.shape == (32, 48) and depth.min() == 0 and depth.max() == 1


def test_haze_scene_scale_makes_crops_look_like_parts_of_a_hazy_photo():
    flat = np.full((64, 64, 3), 0.3, np.float32)
    # the default is scene scale 1, drawn from the same stream as before the option existed
    a = D.haze(flat, np.random.default_rng(5), beta=1.2, airlight=0.9)
    b = D.haze(flat, np.random.default_rng(5), beta=1.2, airlight=0.9, scene_scale=1.0)
    assert np.array_equal(a, b)
    # a crop of a larger scene holds a narrower part of the depth range: a more even veil
    spread = {
        s: np.mean(
            [
                D.haze(flat, np.random.default_rng(i), beta=1.2, airlight=0.9, scene_scale=s).std()
                for i in range(30)
            ]
        )
        for s in (1.0, 8.0)
    }
    assert spread[8.0] < 0.4 * spread[1.0]
    depth = D.weather.haze_depth((16, 24), np.random.default_rng(0), scene_scale=4.0)
    assert depth.shape == (16, 24) and 0.0 <= depth.min() and depth.max() <= 1.0
    with pytest.raises(ValueError, match="scene_scale must be in"):
        D.haze(flat, np.random.default_rng(0), scene_scale=0.5)


def test_rain_adds_oriented_bright_streaks():
    img = _photo(96, 96) * 0.5
    out = D.rain(img, np.random.default_rng(0), angle=0.0, density=0.01, length=20.0)
    assert (out >= img - 1e-6).all(), "screen blending only brightens"
    layer = (out - img).mean(2)
    assert layer.max() > 0.2
    # vertical streaks: the layer varies far less along y than along x
    dy = np.abs(np.diff(layer, axis=0)).mean()
    dx = np.abs(np.diff(layer, axis=1)).mean()
    assert dy < 0.5 * dx
    # tilted streaks swap that less clearly but still differ from vertical
    tilted = D.rain(img, np.random.default_rng(0), angle=80.0, density=0.01, length=20.0)
    lt = (tilted - img).mean(2)
    assert np.abs(np.diff(lt, axis=1)).mean() < np.abs(np.diff(lt, axis=0)).mean()


def test_low_light_lowers_brightness_and_matches_reference_curve():
    img = _photo()
    out = D.low_light(img, np.random.default_rng(0))
    assert out.mean() < 0.6 * img.mean()
    # noise-free: exactly the reference lookup table round(255 * b * a * (k/255)^gamma)
    k = np.arange(256, dtype=np.float32)
    ramp = np.broadcast_to((k / 255)[None, :, None], (2, 256, 3)).astype(np.float32)
    clean = D.low_light(
        ramp, np.random.default_rng(0), gamma=2.5, a=0.95, b=0.6, shot_noise=0.0, read_noise=0.0
    )
    lut = np.round(0.6 * (0.95 * np.power(k / 255.0, 2.5)) * 255.0)
    assert np.array_equal(np.round(clean[0, :, 0] * 255), lut)
    # the sensor noise is there when asked for
    noisy = D.low_light(img, np.random.default_rng(0), gamma=2.0, a=1, b=1, read_noise=0.02)
    quiet = D.low_light(img, np.random.default_rng(0), gamma=2.0, a=1, b=1, read_noise=0.0)
    assert np.abs(noisy - quiet).mean() > 0.005


def test_low_light_max_mean_makes_a_bright_flat_crop_dark_and_leaves_dark_ones_exact():
    # a pale, flat crop (a foggy sky at 0.85): the reference curve keeps it bright, so the
    # "low-light" sample looks like a clean pale photo; max_mean scales it down to that level
    rng = np.random.default_rng(0)
    pale = np.clip(0.85 + 0.03 * rng.standard_normal((64, 64, 3)), 0, 1).astype(np.float32)
    kw = dict(gamma=2.0, a=0.9, b=0.8, shot_noise=0.0, read_noise=0.0)
    ref = D.low_light(pale, np.random.default_rng(0), **kw)
    capped = D.low_light(pale, np.random.default_rng(0), max_mean=0.3, **kw)
    assert ref.mean() > 0.5
    assert abs(capped.mean() - 0.3) < 1 / 255
    # the curve's shape is kept: the capped crop is the reference one scaled, up to 8 bits
    np.testing.assert_allclose(capped, ref * (capped.mean() / ref.mean()), atol=1.5 / 255)
    # a crop already darker than max_mean is the reference's exactly, noise included
    img = _photo()
    kw = dict(gamma=3.0, a=0.95, b=0.6, read_noise=0.01)
    dark = D.low_light(img, np.random.default_rng(1), **kw)
    assert dark.mean() < 0.3
    assert np.array_equal(D.low_light(img, np.random.default_rng(1), max_mean=0.3, **kw), dark)
    with pytest.raises(ValueError, match="max_mean"):
        D.low_light(img, np.random.default_rng(0), max_mean=0.0)


def test_motion_blur_kernel_and_effect():
    rng = np.random.default_rng(0)
    for size in (7, 15, 21):
        k = D.motion_kernel(rng, size, anxiety=0.3)
        assert k.shape == (size, size) and k.min() >= 0 and abs(k.sum() - 1) < 1e-5
        # a trajectory, not a blob: few pixels carry the mass
        assert (k > 1e-3).sum() < 0.6 * size * size
    img = _photo()
    out = D.motion_blur(img, np.random.default_rng(0), kernel_size=15)
    assert _hf_energy(out) < 0.5 * _hf_energy(img)
    assert abs(out.mean() - img.mean()) < 0.01
    # kernels differ between draws (random trajectories)
    k1 = D.motion_kernel(np.random.default_rng(1), 15)
    k2 = D.motion_kernel(np.random.default_rng(2), 15)
    assert not np.allclose(k1, k2)


def test_poisson_noise_is_signal_dependent():
    img = np.concatenate([np.full((64, 32, 3), 0.05), np.full((64, 32, 3), 0.4)], 1)
    img = img.astype(np.float32)
    out = D.poisson_noise(img, np.random.default_rng(0), peak=20.0)
    dark, bright = (out - img)[:, :32], (out - img)[:, 32:]
    assert bright.std() > 2 * dark.std()
    assert abs(bright.std() - np.sqrt(0.4 / 20)) < 0.01
    assert abs(out.mean() - img.mean()) < 0.02


def test_salt_pepper_amount():
    img = np.full((100, 100, 3), 0.5, np.float32)
    out = D.salt_pepper_noise(img, np.random.default_rng(0), amount=0.1)
    hit = (out != 0.5).all(2)
    assert abs(hit.mean() - 0.1) < 0.02
    assert set(np.unique(out)) == {0.0, 0.5, 1.0}
    assert abs((out[hit] == 1).mean() - 0.5) < 0.1


def test_speckle_is_multiplicative():
    img = np.concatenate([np.full((64, 32, 3), 0.1), np.full((64, 32, 3), 0.5)], 1)
    img = img.astype(np.float32)
    out = D.speckle_noise(img, np.random.default_rng(0), sigma=0.2)
    r = out - img
    assert abs(r[:, :32].std() - 0.02) < 0.004 and abs(r[:, 32:].std() - 0.1) < 0.015
    zero = D.speckle_noise(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0), sigma=0.5)
    assert (zero == 0).all()


def test_chain_applies_its_steps_in_order_with_probabilities():
    img = _photo(32, 40)
    steps = [{"name": "gaussian_noise", "sigma": 10}, {"name": "jpeg", "quality": 40}]
    out = D.get("chain")(img, np.random.default_rng(3), steps=steps)
    # the same as the two degradations by hand, from the same stream (one draw per step
    # decides whether it applies)
    rng = np.random.default_rng(3)
    rng.random()
    by_hand = D.get("gaussian_noise")(img, rng, sigma=10)
    rng.random()
    by_hand = D.get("jpeg")(by_hand, rng, quality=40)
    assert np.array_equal(out, by_hand)
    skipped = D.get("chain")(img, np.random.default_rng(3), steps=[{"name": "jpeg", "p": 0.0}])
    assert np.array_equal(skipped, img)
    # the default: the camera chain, different for different seeds
    a, b = (D.get("chain")(img, np.random.default_rng(s)) for s in (0, 1))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([], "non-empty list"),
        ([{"sigma": 3}], "must be a mapping with a 'name'"),
        ([{"name": "chain"}], "is itself a chain"),
        ([{"name": "jpeg", "p": 1.5}], "p must be in"),
        (
            [{"name": "jpeg", "qualty": 3}],
            "step 0 \\(jpeg\\): degradation 'jpeg' got unknown parameter",
        ),
        ([{"name": "fog"}], "unknown degradation 'fog'"),
    ],
)
def test_chain_steps_are_checked(steps, message):
    with pytest.raises((ValueError, KeyError), match=message):
        D.Degradation("chain", {"steps": steps})

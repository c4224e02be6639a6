"""Batched (device) degradations against the NumPy reference.

* exact: every batched render, fed the draws the NumPy function made (recorded from its
  ``numpy.random.Generator``), gives the NumPy output on real photos, a batch of samples
  with different parameters at once;
* distributions: the batched draws follow the NumPy version's distributions, and the
  degraded-minus-clean statistics of a seeded batch match NumPy's;
* JPEG: the tensor codec is bit-identical to Pillow (PSNR = inf) on real photos;
* reproducibility, dispatch from the configs' specs, identity.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from skimage import data as skdata

import ramir.degradations as D
import ramir.degradations.device as DD
from ramir.degradations.device import blur as dblur
from ramir.degradations.device import compression as djpeg
from ramir.degradations.device import light as dlight
from ramir.degradations.device import noise as dnoise
from ramir.degradations.device import weather as dweather

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _photos(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    """``n`` crops of scikit-image's photos, float32 ``(n, h, w, 3)`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = getattr(skdata, PHOTOS[i % len(PHOTOS)])()[:, :, :3]
        y = int(rng.integers(0, img.shape[0] - h + 1))
        x = int(rng.integers(0, img.shape[1] - w + 1))
        out.append(img[y : y + h, x : x + w].astype(np.float32) / 255.0)
    return np.stack(out)


def _t(batch: np.ndarray) -> torch.Tensor:
    """``(B, H, W, C)`` NumPy -> ``(B, C, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


def _n(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


class Recorder:
    """A ``numpy.random.Generator`` that logs ``(method, result)`` of every draw."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.log: list[tuple[str, object]] = []

    def __getattr__(self, name: str):
        fn = getattr(self.rng, name)

        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.log.append((name, out))
            return out

        return call

    def take(self, method: str):
        name, out = self.log.pop(0)
        assert name == method, f"expected a {method} draw, NumPy made a {name} draw"
        return out


def _f64(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values, dtype=np.float64))


# ---------------------------------------------------------------- exact, same draws


def test_gaussian_noise_exact_for_numpys_noise():
    imgs = _photos(4)
    sig = [0.0, 15.0, 25.0, 50.0]
    for quantize in ("round", "trunc", "none"):
        refs, zs = [], []
        for i, s in enumerate(sig):
            rec = Recorder(i)
            refs.append(D.gaussian_noise(imgs[i], rec, sigma=s, quantize=quantize))
            zs.append(rec.take("standard_normal").transpose(2, 0, 1))
        d = dnoise.GaussianNoiseDraws(_f64(sig), torch.from_numpy(np.stack(zs)), quantize)
        out = dnoise.render_gaussian_noise(_t(imgs), d)
        assert np.array_equal(_n(out), np.stack(refs)), quantize


def test_speckle_and_salt_pepper_exact_for_numpys_draws():
    imgs = _photos(3)
    refs, zs = [], []
    for i, s in enumerate([0.1, 0.25, 0.4]):
        rec = Recorder(i)
        refs.append(D.speckle_noise(imgs[i], rec, sigma=s))
        zs.append(rec.take("standard_normal").transpose(2, 0, 1))
    d = dnoise.SpeckleDraws(_f64([0.1, 0.25, 0.4]), torch.from_numpy(np.stack(zs)))
    assert np.array_equal(_n(dnoise.render_speckle_noise(_t(imgs), d)), np.stack(refs))
    refs, us = [], []
    for i, a in enumerate([0.01, 0.05, 0.3]):
        rec = Recorder(i)
        refs.append(D.salt_pepper_noise(imgs[i], rec, amount=a, salt_ratio=0.3))
        us.append(rec.take("random")[None])
    d = dnoise.SaltPepperDraws(_f64([0.01, 0.05, 0.3]), torch.from_numpy(np.stack(us)), 0.3)
    assert np.array_equal(_n(dnoise.render_salt_pepper_noise(_t(imgs), d)), np.stack(refs))


def test_gaussian_blur_exact_per_sample_sigma_any_size():
    for h, w in ((64, 64), (5, 6)):  # 5 x 6: the 7-pixel mirror border wraps twice
        imgs = _photos(3, h, w)
        sig = [0.1, 1.5, 3.0]
        ref = np.stack([D.gaussian_blur(imgs[i], None, sigma=s) for i, s in enumerate(sig)])
        out = DD.gaussian_blur(_t(imgs), torch.Generator(), sigma=sig)
        np.testing.assert_allclose(_n(out), ref, atol=1e-6)
    out = DD.gaussian_blur(_t(imgs), torch.Generator(), sigma=2.0, kernel_size=7)
    np.testing.assert_allclose(
        _n(out)[1], D.gaussian_blur(imgs[1], None, sigma=2.0, kernel_size=7), atol=2e-6
    )


def _motion_draws(sizes, anx, seeds):
    """NumPy motion_blur outputs and the draws it made, as MotionBlurDraws."""
    fields = {k: [] for k in ("angle", "shake_u", "shake_angle", "accel", "length_u")}
    refs = []
    imgs = _photos(len(sizes))
    for i, (size, a, seed) in enumerate(zip(sizes, anx, seeds, strict=True)):
        rec = Recorder(seed)
        refs.append(D.motion_blur(imgs[i], rec, kernel_size=size, anxiety=a))
        fields["angle"].append(rec.take("uniform"))
        su, sa, acc = [], [], []
        for _ in range(63):
            u = rec.take("random")
            su.append(u)
            sa.append(rec.take("uniform") if u < 0.05 else 0.0)
            acc.append([rec.take("standard_normal"), rec.take("standard_normal")])
        fields["shake_u"].append(su)
        fields["shake_angle"].append(sa)
        fields["accel"].append(acc)
        fields["length_u"].append(rec.take("uniform"))
        assert not rec.log
    d = dblur.MotionBlurDraws(
        size=torch.tensor(sizes), anxiety=_f64(anx), **{k: _f64(v) for k, v in fields.items()}
    )
    return imgs, np.stack(refs), d


def test_motion_blur_exact_kernels_and_output_per_sample_size():
    sizes, anx = [7, 15, 21, 11], [0.05, 0.2, 0.5, 0.0]
    # seed 3 shakes (a draw below 0.05) in its 63 steps: the jerk path is covered
    imgs, refs, d = _motion_draws(sizes, anx, [0, 1, 2, 3])
    assert (d.shake_u < 0.05).any()
    k = dblur.motion_kernels(d)
    assert k.shape == (4, 21, 21)
    for i, size in enumerate(sizes):
        ref_k = D.motion_kernel(np.random.default_rng(i), size, anxiety=anx[i])
        p = (21 - size) // 2
        np.testing.assert_allclose(k[i, p : p + size, p : p + size].numpy(), ref_k, atol=1e-6)
        assert float(k[i].sum() - k[i, p : p + size, p : p + size].sum()) == 0.0
    out = dblur.render_motion_blur(_t(imgs), d)
    np.testing.assert_allclose(_n(out), refs, atol=1e-6)


def test_low_light_exact_curve_and_noise():
    imgs = _photos(3)
    params = [
        dict(gamma=2.0, a=0.9, b=0.5, shot_noise=0.0, read_noise=0.0),
        dict(gamma=2.75, a=0.95, b=0.75, shot_noise=0.001, read_noise=0.005),
        dict(gamma=3.5, a=1.0, b=1.0, shot_noise=0.002, read_noise=0.01),
    ]
    refs, zs = [], []
    for i, p in enumerate(params):
        rec = Recorder(i)
        refs.append(D.low_light(imgs[i], rec, **p))
        zs.append(
            rec.take("standard_normal").transpose(2, 0, 1) if rec.log else np.zeros((3, 64, 64))
        )
    d = dlight.LowLightDraws(
        **{k: _f64([p[k] for p in params]) for k in params[0]}, z=torch.from_numpy(np.stack(zs))
    )
    out = _n(dlight.render_low_light(_t(imgs), d))
    ref = np.stack(refs)
    # 8-bit levels, identical here (0 of 49152 differ); another libm's pow could move a
    # value across a rounding edge
    assert np.abs(out - ref).max() <= 1 / 255 + 1e-6
    assert (out != ref).mean() < 1e-4


def test_low_light_max_mean_equals_numpy_per_sample():
    # one bright flat crop (scaled down to max_mean) and two photos (left as they are)
    imgs = _photos(3)
    imgs[0] = np.clip(0.85 + 0.02 * imgs[0], 0, 1)
    params = dict(gamma=2.0, a=0.9, b=0.8, shot_noise=0.0, read_noise=0.004)
    refs, zs = [], []
    for i in range(3):
        rec = Recorder(i)
        refs.append(D.low_light(imgs[i], rec, max_mean=0.35, **params))
        zs.append(rec.take("standard_normal").transpose(2, 0, 1))
    d = dlight.LowLightDraws(
        **{k: _f64([v] * 3) for k, v in params.items()},
        z=torch.from_numpy(np.stack(zs)),
        max_mean=0.35,
    )
    out = _n(dlight.render_low_light(_t(imgs), d))
    ref = np.stack(refs)
    assert abs(ref[0].mean() - 0.35) < 0.01
    assert np.abs(out - ref).max() <= 1 / 255 + 1e-6
    assert (out != ref).mean() < 1e-3
    with pytest.raises(ValueError, match="max_mean"):
        dlight.low_light(_t(imgs), torch.Generator().manual_seed(0), max_mean=1.5)


def _haze_draws(imgs, scales, seeds, beta, air, tint=0.03):
    fields = {k: [] for k in ("coarse", "ramp", "offset", "tint_u")}
    refs = []
    for i, (s, seed) in enumerate(zip(scales, seeds, strict=True)):
        rec = Recorder(seed)
        refs.append(D.haze(imgs[i], rec, beta=beta[i], airlight=air[i], scene_scale=s, tint=tint))
        fields["coarse"].append(rec.take("random"))
        fields["ramp"].append(rec.take("uniform"))
        fields["offset"].append([rec.take("integers"), rec.take("integers")] if s > 1 else [0, 0])
        fields["tint_u"].append(rec.take("uniform"))
        assert not rec.log
    d = dweather.HazeDraws(
        beta=_f64(beta),
        airlight=_f64(air),
        scene_scale=_f64(scales),
        ramp=_f64(fields["ramp"]),
        coarse=_f64(fields["coarse"]),
        offset=torch.tensor(fields["offset"]),
        tint_u=_f64(fields["tint_u"]),
    )
    return np.stack(refs), d


def test_haze_exact_depth_and_scene_scale_per_sample():
    imgs = _photos(4, 48, 64)
    scales, beta, air = [1.0, 2.5, 8.0, 1.0], [0.6, 1.2, 2.0, 1.0], [0.7, 0.9, 1.0, 0.8]
    refs, d = _haze_draws(imgs, scales, [0, 1, 2, 3], beta, air)
    depth = dweather.haze_depths(d, 48, 64)
    for i, s in enumerate([1.0, 2.5, 8.0, 1.0]):
        ref = D.weather.haze_depth((48, 64), Recorder(i), scene_scale=s)
        np.testing.assert_allclose(depth[i].numpy(), ref, atol=1e-6)
    out = dweather.render_haze(_t(imgs), d)
    np.testing.assert_allclose(_n(out), refs, atol=1e-6)


def _rain_draws(imgs, params, seeds):
    refs, u, bright, jit = [], [], [], []
    for i, (p, seed) in enumerate(zip(params, seeds, strict=True)):
        rec = Recorder(seed)
        refs.append(D.rain(imgs[i], rec, **p))
        u.append(rec.take("random")[None])
        bright.append(rec.take("uniform").astype(np.float32)[None])
        jit.append(rec.take("uniform"))
        assert not rec.log
    d = dweather.RainDraws(
        **{k: _f64([p[k] for p in params]) for k in params[0]},
        jitter=_f64(jit),
        u=torch.from_numpy(np.stack(u)),
        bright=torch.from_numpy(np.stack(bright)),
    )
    return np.stack(refs), d


def test_rain_exact_streak_kernels_and_output_per_sample():
    params = [
        dict(density=0.004, length=24.0, angle=0.0, intensity=0.9, width=1.0),
        dict(density=0.012, length=8.0, angle=-30.0, intensity=0.5, width=2.0),
        dict(density=0.008, length=13.3, angle=21.0, intensity=0.7, width=1.4),
    ]
    imgs = _photos(3)
    refs, d = _rain_draws(imgs, params, [0, 1, 2])
    k = dweather.streak_kernels(d.length, d.angle + d.jitter, d.width)
    for i in range(3):
        ref_k = D.weather.streak_kernel(
            params[i]["length"], params[i]["angle"] + float(d.jitter[i]), params[i]["width"]
        )
        p = (k.shape[-1] - ref_k.shape[0]) // 2
        np.testing.assert_allclose(k[i, p : k.shape[-1] - p, p : k.shape[-1] - p], ref_k, atol=1e-6)
    out = dweather.render_rain(_t(imgs), d)
    np.testing.assert_allclose(_n(out), refs, atol=1e-6)


def test_chain_of_deterministic_steps_matches_numpy():
    imgs = _photos(3)
    steps = [{"name": "gaussian_blur", "sigma": 1.5}, {"name": "jpeg", "quality": 40}]
    ref = np.stack([D.chain(im, np.random.default_rng(0), steps=steps) for im in imgs])
    out = DD.chain(_t(imgs), torch.Generator().manual_seed(0), steps=steps)
    # blur to float rounding; JPEG rounds to 8 bits, so a level may flip at an edge
    assert np.abs(_n(out) - ref).max() <= 1 / 255 + 1e-6
    assert (np.abs(_n(out) - ref) > 1e-6).mean() < 1e-3


# ---------------------------------------------------------------- JPEG


def _pil_jpeg(u8: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im)


@pytest.mark.parametrize("q", [10, 20, 40, 60, 90])
def test_jpeg_tensor_is_bit_identical_to_pillow_on_photos(q):
    for h, w in ((128, 128), (77, 101)):
        imgs = _photos(3, h, w, seed=q)
        out = djpeg.jpeg_tensor(_t(imgs), q)
        u8 = np.rint(imgs * 255).astype(np.uint8)
        ref = np.stack([_pil_jpeg(im, q) for im in u8]).astype(np.float32) / 255
        assert np.array_equal(_n(out), ref), f"q={q} {h}x{w}"  # PSNR = inf
        np.testing.assert_array_equal(
            _n(out), np.stack([D.jpeg(im, None, quality=q) for im in imgs])
        )


def test_jpeg_tensor_per_sample_quality_grayscale_and_extremes():
    rng = np.random.default_rng(0)
    noise = rng.random((5, 33, 47, 3)).astype(np.float32)
    qs = [1, 7, 50, 99, 100]
    out = djpeg.jpeg_tensor(_t(noise), torch.tensor(qs))
    ref = np.stack([D.jpeg(noise[i], None, quality=q) for i, q in enumerate(qs)])
    assert np.array_equal(_n(out), ref)
    gray = _photos(2, 40, 24)[:, :, :, :1]
    out = djpeg.jpeg_tensor(_t(gray), [10, 75])
    ref = np.stack([D.jpeg(gray[0], None, quality=10), D.jpeg(gray[1], None, quality=75)])
    assert np.array_equal(_n(out), ref)
    assert torch.equal(djpeg.jpeg_pil(_t(noise), qs), djpeg.jpeg_tensor(_t(noise), qs))


def test_jpeg_backend_choice_and_quant_tables():
    assert djpeg.jpeg_backend("cpu") == "pil" and djpeg.jpeg_backend("cuda:0") == "tensor"
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG", quality=10)
    with Image.open(buf) as im:
        assert list(im.quantization[0]) == djpeg.quant_table(10, djpeg.STD_LUMINANCE)
        assert list(im.quantization[1]) == djpeg.quant_table(10, djpeg.STD_CHROMINANCE)
    x = _t(_photos(2, 32, 32))
    g = torch.Generator().manual_seed(3)
    d = djpeg.draw_jpeg(g, x.shape, x.device)
    assert torch.equal(djpeg.render_jpeg(x, d, "pil"), djpeg.render_jpeg(x, d, "tensor"))
    with pytest.raises(ValueError, match="backend"):
        djpeg.render_jpeg(x, d, "opencv")


# ---------------------------------------------------------------- distributions


def _ks_uniform(v: torch.Tensor, lo: float, hi: float) -> float:
    return stats.kstest(v.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue


def test_draws_follow_the_numpy_distributions():
    n = 4000
    g = torch.Generator().manual_seed(0)
    shape = (n, 3, 1, 1)
    cpu = torch.device("cpu")
    checks = [
        (dnoise.draw_gaussian_noise(g, shape, cpu).sigma, 0.0, 50.0),
        (dblur.draw_gaussian_blur(g, shape, cpu, sigma_range=[0.1, 3.1]).sigma, 0.1, 3.1),
        (dblur.draw_motion_blur(g, shape, cpu).anxiety, 0.05, 0.5),
    ]
    ll = dlight.draw_low_light(g, shape, cpu)
    checks += [(ll.gamma, 2.0, 3.5), (ll.a, 0.9, 1.0), (ll.b, 0.5, 1.0)]
    checks += [(ll.shot_noise, 0.0, 0.002), (ll.read_noise, 0.0, 0.01)]
    hz = dweather.draw_haze(g, shape, cpu, scene_scale_range=[1, 8])
    checks += [(hz.beta, 0.6, 2.0), (hz.airlight, 0.7, 1.0), (hz.scene_scale, 1.0, 8.0)]
    checks += [(hz.ramp, 0.3, 0.8), (hz.coarse.flatten()[:n], 0.0, 1.0)]
    checks += [(hz.tint_u.flatten(), -0.03, 0.03)]
    rn = dweather.draw_rain(g, shape, cpu)
    checks += [(rn.density, 0.002, 0.012), (rn.length, 8.0, 24.0), (rn.angle, -30.0, 30.0)]
    checks += [(rn.intensity, 0.5, 0.9), (rn.width, 1.0, 2.0), (rn.jitter, -3.0, 3.0)]
    mb = dblur.draw_motion_blur(g, shape, cpu)
    checks += [(mb.angle, 0.0, 2 * np.pi), (mb.shake_u.flatten()[:n], 0.0, 1.0)]
    checks += [(mb.shake_angle.flatten()[:n], 0.0, 2 * np.pi), (mb.length_u, 0.5, 1.0)]
    px = dweather.draw_rain(g, (1, 3, 64, 64), cpu)
    checks += [(px.u.flatten().double(), 0.0, 1.0), (px.bright.flatten().double(), 0.6, 1.0)]
    for i, (v, lo, hi) in enumerate(checks):
        assert v.shape[0] >= n and lo <= v.min() and v.max() <= hi, i
        assert _ks_uniform(v, lo, hi) > 1e-3, i
    normals = [
        mb.accel.flatten()[:n],
        dnoise.draw_gaussian_noise(g, (1, 3, 40, 40), cpu).z.flatten().double(),
        dlight.draw_low_light(g, (1, 3, 40, 40), cpu).z.flatten(),
    ]
    for v in normals:
        assert stats.kstest(v.numpy(), stats.norm.cdf).pvalue > 1e-3
    # the haze window is uniform over the scene's windows, as rng.integers(0, room)
    hz = dweather.draw_haze(g, (n, 3, 16, 16), cpu, scene_scale=2.0)
    room = 32 - 16 + 1
    counts = np.bincount(hz.offset[:, 0].numpy(), minlength=room)
    assert len(counts) == room and stats.chisquare(counts).pvalue > 1e-3


def test_integer_draws_match_numpys_histograms():
    n = 6000
    g = torch.Generator().manual_seed(1)
    # motion kernel sizes: NumPy draws 7..21 and bumps even sizes to the next odd one
    sizes = dblur.draw_motion_blur(g, (n, 3, 1, 1), torch.device("cpu")).size.numpy()
    rng = np.random.default_rng(1)
    ref = rng.integers(7, 22, n)
    ref = ref + (ref % 2 == 0)
    assert set(np.unique(sizes)) == set(range(7, 22, 2))
    table = np.stack([np.bincount(sizes, minlength=22), np.bincount(ref, minlength=22)])
    table = table[:, table.sum(0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3
    assert abs((sizes == 7).mean() - 1 / 15) < 0.015 and abs((sizes == 21).mean() - 2 / 15) < 0.02
    q = djpeg.draw_jpeg(g, (n, 3, 1, 1), torch.device("cpu")).quality.numpy()
    assert q.min() == 10 and q.max() == 90
    assert stats.chisquare(np.bincount(q)[10:]).pvalue > 1e-3


def test_haze_depth_statistics_match_numpy():
    """The depth maps of the batched draws look like NumPy's: mean, spread and the
    top-bottom ramp of 400 maps agree (within 4.5 standard errors), with and without a
    scene scale."""
    n, h = 400, 24

    def summary(d: np.ndarray) -> np.ndarray:
        ramp = d[:, :4].mean((1, 2)) - d[:, -4:].mean((1, 2))
        return np.stack([d.mean((1, 2)), d.std((1, 2)), ramp], 1)

    for scale in (1.0, 4.0):
        ref = np.stack(
            [
                D.weather.haze_depth((h, h), np.random.default_rng(i), scene_scale=scale)
                for i in range(n)
            ]
        )
        g = torch.Generator().manual_seed(0)
        d = dweather.draw_haze(g, (n, 3, h, h), torch.device("cpu"), scene_scale=scale)
        a, b = summary(dweather.haze_depths(d, h, h).numpy()), summary(ref)
        se = np.sqrt(a.var(0, ddof=1) / n + b.var(0, ddof=1) / n)
        assert (np.abs(a.mean(0) - b.mean(0)) < 4.5 * se).all(), scale


def _residual_stats(out: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per sample: mean, std and mean |.| of degraded - clean, and the ratio of the
    degraded to the clean image's high-frequency energy."""
    r = (out - clean).reshape(len(out), -1)

    def hf(a: np.ndarray) -> np.ndarray:
        return (np.diff(a, axis=1) ** 2).mean((1, 2, 3)) + (np.diff(a, axis=2) ** 2).mean((1, 2, 3))

    return np.stack([r.mean(1), r.std(1), np.abs(r).mean(1), hf(out) / hf(clean)], 1)


def _numpy_params(name: str, n: int, rng: np.random.Generator) -> list[dict]:
    """Per sample, every parameter the NumPy version would draw, drawn as it draws them."""
    spec = D.parameters(name)
    out: list[dict] = [{} for _ in range(n)]
    for key, rng_range in spec.items():
        p = key.removesuffix("_range")
        if p == key or p not in spec or spec[p] is not None:
            continue
        for o in out:
            if p in ("kernel_size", "quality"):
                v = int(rng.integers(rng_range[0], rng_range[1] + 1))
                o[p] = v + int(p == "kernel_size" and v % 2 == 0)
            else:
                o[p] = float(rng.uniform(*rng_range))
    return out


PAIRED = [
    ("gaussian_noise", {}),
    ("motion_blur", {}),
    ("haze", {"scene_scale_range": [1, 8]}),
    ("rain", {}),
    ("low_light", {}),
    ("poisson_noise", {}),
    ("salt_pepper_noise", {}),
    ("speckle_noise", {}),
]


@pytest.mark.parametrize(("name", "extra"), PAIRED, ids=[t[0] for t in PAIRED])
def test_random_fields_match_numpy_paired(name, extra):
    """Same per-sample parameters on both sides (drawn as NumPy draws them), so only the
    random fields differ (noise, drops, trajectories, depth lattice): the per-sample
    statistics of degraded - clean agree (paired, within 4.5 standard errors). This
    detects, e.g., noise 3% too weak (z = 11)."""
    n = 64
    clean = _photos(n, 48, 48, seed=7)
    ps = _numpy_params(name, n, np.random.default_rng(0))
    ref = np.stack(
        [D.get(name)(clean[i], np.random.default_rng(100 + i), **extra, **ps[i]) for i in range(n)]
    )
    per_sample = {k: [p[k] for p in ps] for k in ps[0]}
    g = torch.Generator().manual_seed(5)
    out = DD.apply_batch(name, _t(clean), g, {**extra, **per_sample}, path="batched")
    diff = _residual_stats(_n(out), clean) - _residual_stats(ref, clean)
    z = np.abs(diff.mean(0)) / (diff.std(0, ddof=1) / np.sqrt(n) + 1e-9)
    assert (z < 4.5).all(), z


TRAINING = [
    ("gaussian_noise", {"sigma_range": [0, 50]}),
    ("gaussian_blur", {"sigma_range": [0.1, 3.0]}),
    ("motion_blur", {}),
    ("jpeg", {"quality_range": [10, 95]}),
    ("haze", {"scene_scale_range": [1, 8]}),
    ("rain", {}),
    ("low_light", {}),
    ("chain", {}),
]


@pytest.mark.parametrize(("name", "params"), TRAINING, ids=[t[0] for t in TRAINING])
def test_output_statistics_match_numpy_over_a_seeded_batch(name, params):
    """Everything random, as in training: the batch's degraded-minus-clean statistics
    agree with NumPy's (means of per-sample statistics within 4.5 standard errors). A
    check for gross errors: the spread of parameters and photos hides subtle ones, which
    the draw and exact tests above catch."""
    n = 48
    clean = _photos(n, 48, 48, seed=7)
    ref = np.stack(
        [D.get(name)(clean[i], np.random.default_rng(100 + i), **params) for i in range(n)]
    )
    g = torch.Generator().manual_seed(5)
    out = _n(DD.apply_batch(name, _t(clean), g, params, path="batched"))
    a, b = _residual_stats(out, clean), _residual_stats(ref, clean)
    se = np.sqrt(a.var(0, ddof=1) / n + b.var(0, ddof=1) / n) + 1e-4
    z = np.abs(a.mean(0) - b.mean(0)) / se
    assert (z < 4.5).all(), (z, a.mean(0), b.mean(0))


# ---------------------------------------------------------------- contract


@pytest.mark.parametrize("path", ["batched", "numpy"])
@pytest.mark.parametrize("name", DD.device_names())
def test_contract_shape_range_reproducibility(name, path):
    x = _t(_photos(3, 24, 40))
    before = x.clone()
    out1 = DD.apply_batch(name, x, torch.Generator().manual_seed(7), path=path)
    out2 = DD.apply_batch(name, x, torch.Generator().manual_seed(7), path=path)
    out3 = DD.apply_batch(name, x, 8, path=path)  # an int seed: a generator on x's device
    assert torch.equal(x, before), "input was modified"
    assert out1.shape == x.shape and out1.dtype == torch.float32
    assert 0.0 <= float(out1.min()) and float(out1.max()) <= 1.0 and out1.isfinite().all()
    assert torch.equal(out1, out2), "not reproducible under a seed"
    if name == "identity":
        assert torch.equal(out1, x) and out1.data_ptr() != x.data_ptr()
    else:
        assert not torch.equal(out1, out3), "seed has no effect"
        assert not torch.equal(out1, x), "did nothing"


def test_per_sample_params_and_errors():
    x = torch.full((3, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(0)
    out = DD.gaussian_noise(x, g, sigma=[0.0, 10.0, 40.0], quantize="none")
    std = ((out - x) * 255).flatten(1).std(1)
    assert std[0] == 0 and abs(std[1] - 10) < 1 and abs(std[2] - 40) < 4
    with pytest.raises(ValueError, match="one per sample"):
        DD.gaussian_noise(x, g, sigma=[1.0, 2.0])
    with pytest.raises(ValueError, match="sigma must be in"):
        DD.gaussian_noise(x, g, sigma=300.0)
    with pytest.raises(ValueError, match="sigma_range must be in"):
        DD.gaussian_noise(x, g, sigma_range=[0, 300])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) qualty; valid parameters"):
        DD.apply_batch("jpeg", x, g, {"qualty": 10})
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        DD.motion_blur(x, g, kernel_size=8)
    with pytest.raises(TypeError, match=r"\(B, C, H, W\)"):
        DD.haze(np.zeros((2, 3, 8, 8), np.float32), g)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DD.haze(torch.zeros(3, 8, 8), g)
    with pytest.raises(KeyError, match="choose one of"):
        DD.get_batch("fog")


def test_dispatch_from_the_configs_specs():
    from ramir.data.config import DatasetSpec
    from ramir.demo.config import EXTRA_TASKS, TASKS

    assert set(DD.device_names()) == set(D.names())
    assert all(DD.has_device_version(n) for n in D.names()) and not DD.has_device_version("fog")
    x = _t(_photos(2, 32, 32))
    specs = [D.Degradation(deg, train) for _, deg, train, _ in TASKS]
    specs += [D.Degradation(deg, test) for _, deg, _, test in TASKS]
    specs += [D.Degradation(*EXTRA_TASKS["mixed"]), D.Degradation("identity")]
    for spec in specs:
        assert DD.batch_version(spec).name == spec.name
        assert DD.apply_batch(spec, x, 0).shape == x.shape
    # the forms a spec takes in configs all give the same batched degradation
    ref = DD.apply_batch("haze", x, 1, {"beta": 1.2, "airlight": 0.9})
    forms = [
        D.Degradation("haze", {"beta": 1.2, "airlight": 0.9}),
        ("haze", {"beta": 1.2, "airlight": 0.9}),
        {"name": "haze", "beta": 1.2, "airlight": 0.9},
        {"degradation": "haze", "params": {"beta": 1.2, "airlight": 0.9}},
        DatasetSpec(
            name="h",
            layout="clean_folder",
            degradation="haze",
            params={"beta": 1.2, "airlight": 0.9},
        ),
    ]
    for form in forms:
        assert torch.equal(DD.apply_batch(form, x, 1), ref), form
    merged = DD.apply_batch(forms[0], x, 1, {"beta": 2.0})
    assert torch.equal(merged, DD.apply_batch("haze", x, 1, {"beta": 2.0, "airlight": 0.9}))


def test_apply_per_sample_mixed_tasks():
    x = _t(_photos(5, 32, 32))
    specs = ["identity", ("gaussian_noise", {"sigma": 25.0}), "identity", "jpeg", "haze"]
    out = DD.apply_per_sample(x, specs, torch.Generator().manual_seed(0))
    again = DD.apply_per_sample(x, specs, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and out.shape == x.shape
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[1], x[1]) and not torch.equal(out[3], x[3])
    assert abs(float(((out[1] - x[1]) * 255).std()) - 25) < 3
    with pytest.raises(ValueError, match="one per sample"):
        DD.apply_per_sample(x, specs[:2], 0)


def test_cpu_path_choice_and_the_numpy_path():
    assert all(DD.preferred_path(n, "cuda") == "batched" for n in DD.device_names())
    assert all(
        DD.preferred_path(n, "cpu") == ("numpy" if n in DD.CPU_NUMPY_FASTER else "batched")
        for n in DD.device_names()
    )
    x = _t(_photos(3, 32, 32))
    # the NumPy path is the NumPy function per sample, seeded from the torch generator
    g = torch.Generator().manual_seed(2)
    out = DD.apply_batch("low_light", x, g, {"gamma": [2, 3, 3.5]}, path="numpy")
    seeds = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(2)).tolist()
    for i, (gm, seed) in enumerate(zip([2, 3, 3.5], seeds, strict=True)):
        ref = D.low_light(_n(x)[i], np.random.default_rng(seed), gamma=gm)
        assert np.array_equal(_n(out)[i], ref)
    with pytest.raises(ValueError, match="path must be"):
        DD.apply_batch("haze", x, 0, path="gpu")
    with pytest.raises(ValueError, match="one per sample"):
        DD.apply_batch("low_light", x, 0, {"gamma": [2.0, 3.0]}, path="numpy")


def test_chain_applies_each_step_with_its_probability():
    x = torch.full((400, 3, 8, 8), 0.5)
    steps = [{"name": "gaussian_noise", "p": 0.3, "sigma": 20.0}]
    out = DD.chain(x, torch.Generator().manual_seed(0), steps=steps)
    hit = (out != x).flatten(1).any(1).float().mean()
    assert abs(float(hit) - 0.3) < 0.07
    with pytest.raises(ValueError, match="nested|itself a chain"):
        DD.chain(x, torch.Generator(), steps=[{"name": "chain"}])


# ---------------------------------------------------------------- CUDA (pytest -m gpu)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _moved(d, device: torch.device | str):
    """A copy of the draws dataclass ``d`` with its tensors on ``device``."""
    tensors = {
        f.name: getattr(d, f.name).to(device)
        for f in dataclasses.fields(d)
        if isinstance(getattr(d, f.name), torch.Tensor)
    }
    return dataclasses.replace(d, **tensors)


DRAWN = [
    ("gaussian_noise", dnoise.draw_gaussian_noise, dnoise.render_gaussian_noise, 0.0),
    ("speckle_noise", dnoise.draw_speckle_noise, dnoise.render_speckle_noise, 1e-6),
    ("salt_pepper_noise", dnoise.draw_salt_pepper_noise, dnoise.render_salt_pepper_noise, 0.0),
    ("gaussian_blur", dblur.draw_gaussian_blur, dblur.render_gaussian_blur, 1e-5),
    ("motion_blur", dblur.draw_motion_blur, dblur.render_motion_blur, 1e-5),
    ("haze", dweather.draw_haze, dweather.render_haze, 1e-5),
    ("rain", dweather.draw_rain, dweather.render_rain, 1e-5),
    ("low_light", dlight.draw_low_light, dlight.render_low_light, 1 / 255 + 1e-6),
    ("jpeg", djpeg.draw_jpeg, lambda x, d: djpeg.render_jpeg(x, d, "tensor"), 0.0),
]


def _same_draws_on(device: str) -> None:
    """Every render on ``device`` equals the CPU render of the same draws (JPEG and the
    8-bit noises exactly, the rest to float32 rounding of convolutions and FFTs)."""
    x = _t(_photos(4, 48, 64))
    g = torch.Generator().manual_seed(0)
    for name, draw, render, tol in DRAWN:
        kw = {"scene_scale_range": [1, 8]} if name == "haze" else {}
        d = draw(g, x.shape, torch.device("cpu"), **kw)
        ref = render(x, d)
        out = render(x.to(device), _moved(d, device))
        assert out.device.type == torch.device(device).type, name
        err = (out.cpu() - ref).abs()
        assert float(err.max()) <= tol, (name, float(err.max()))
        assert float((err > 1e-5).float().mean()) < 1e-3, name


def test_cpu_chunked_renders_equal_one_batch():
    """On the CPU renders run CPU_CHUNK samples at a time: the output is the same as
    rendering the whole batch at once (the draws are made for the whole batch)."""
    from ramir.degradations.device import _common

    x = _t(_photos(_common.CPU_CHUNK + 3, 32, 32))
    for name in ("gaussian_noise", "gaussian_blur", "motion_blur", "haze", "rain", "low_light"):
        a = DD.apply_batch(name, x, torch.Generator().manual_seed(4), path="batched")
        old, _common.CPU_CHUNK = _common.CPU_CHUNK, 10**6
        try:
            b = DD.apply_batch(name, x, torch.Generator().manual_seed(4), path="batched")
        finally:
            _common.CPU_CHUNK = old
        assert float((a - b).abs().max()) < 1e-5, name  # FFT sizes may differ by chunk


def test_same_draws_same_output_logic_on_cpu():
    """The CUDA comparison's own logic, run CPU against CPU (CI has no GPU)."""
    _same_draws_on("cpu")


@pytest.mark.gpu
@needs_cuda
def test_cuda_renders_equal_cpu_for_the_same_draws():
    torch.backends.cuda.matmul.allow_tf32 = False
    _same_draws_on("cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_generators_batched_path_and_jpeg_equal_pillow():
    x = _t(_photos(6, 64, 64)).cuda()
    for name in DD.device_names():
        a = DD.apply_batch(name, x, torch.Generator("cuda").manual_seed(1))
        b = DD.apply_batch(name, x, torch.Generator("cuda").manual_seed(1))
        assert a.is_cuda and torch.equal(a, b), name
        # a CPU generator: the draws of the CPU, whatever the device
        c = DD.apply_batch(name, x, torch.Generator().manual_seed(1), path="batched")
        r = DD.apply_batch(name, x.cpu(), torch.Generator().manual_seed(1), path="batched")
        assert float((c.cpu() - r).abs().max()) <= 1 / 255 + 1e-5, name
    q = [10, 20, 40, 60, 90, 50]
    assert djpeg.jpeg_backend(x.device) == "tensor"
    assert torch.equal(djpeg.jpeg_tensor(x, q).cpu(), djpeg.jpeg_pil(x.cpu(), q))

"""Metric parity with scikit-image on real photos, under both conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ramir.evaluation import metrics as M


def _noisy(img: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def photos() -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i, (name, sigma) in enumerate([("astronaut", 15), ("coffee", 25), ("chelsea", 50)]):
        gt = getattr(data, name)()[:200, :240]  # keep the test fast
        pairs.append((_noisy(gt, sigma, seed=i), gt))
    return pairs


def _sk_ssim_ram(pred: np.ndarray, gt: np.ndarray) -> float:
    return structural_similarity(
        gt.astype(np.float64),
        pred.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )


def test_ram_convention_matches_skimage_on_uint8(photos):
    for pred, gt in photos:
        c = 4
        pc, gc = pred[c:-c, c:-c], gt[c:-c, c:-c]
        assert M.psnr(pred, gt, crop_border=4) == pytest.approx(
            peak_signal_noise_ratio(gc, pc, data_range=255), abs=1e-4
        )
        assert M.ssim(pred, gt, crop_border=4) == pytest.approx(_sk_ssim_ram(pc, gc), abs=1e-4)
        # no crop
        assert M.ssim(pred, gt, crop_border=0) == pytest.approx(_sk_ssim_ram(pred, gt), abs=1e-4)


def test_float_tensor_batch_is_quantised_like_basicsr(photos):
    """Float tensors are rounded to uint8 first; a batch gives per-image values."""
    rng = np.random.default_rng(0)
    pred_u8, gt_u8 = photos[0]
    # sub-level float perturbations that vanish after rounding
    pred_f = (pred_u8.astype(np.float64) + rng.uniform(-0.4, 0.4, pred_u8.shape)) / 255.0
    t_pred = torch.from_numpy(pred_f).permute(2, 0, 1).float()
    t_gt = torch.from_numpy(gt_u8).permute(2, 0, 1).float() / 255.0
    batch_pred = torch.stack([t_pred, t_gt])
    batch_gt = torch.stack([t_gt, t_gt])
    p = M.psnr(batch_pred, batch_gt)
    s = M.ssim(batch_pred, batch_gt)
    assert p.shape == (2,) and s.shape == (2,)
    assert float(p[0]) == pytest.approx(M.psnr(pred_u8, gt_u8), abs=1e-4)
    assert float(s[0]) == pytest.approx(M.ssim(pred_u8, gt_u8), abs=1e-4)
    assert math.isinf(float(p[1])) and float(s[1]) == pytest.approx(1.0)


def test_promptir_convention_matches_skimage_defaults_on_floats(photos):
    rng = np.random.default_rng(1)
    for pred_u8, gt_u8 in photos:
        gt = gt_u8.astype(np.float64) / 255
        pred = np.clip(pred_u8 / 255 + rng.normal(0, 0.002, pred_u8.shape), 0, 1)
        t_pred = torch.from_numpy(pred).permute(2, 0, 1)
        t_gt = torch.from_numpy(gt).permute(2, 0, 1)
        out = M.compute_metrics(t_pred, t_gt, "promptir")
        assert out["psnr"] == pytest.approx(
            peak_signal_noise_ratio(gt, pred, data_range=1), abs=1e-4
        )
        assert out["ssim"] == pytest.approx(
            structural_similarity(gt, pred, data_range=1, channel_axis=-1), abs=1e-4
        )


def test_uint8_nocrop_convention_matches_skimage(photos):
    for pred, gt in photos:
        out = M.compute_metrics(pred, gt, "uint8_nocrop")
        assert out["psnr"] == pytest.approx(
            peak_signal_noise_ratio(gt, pred, data_range=255), abs=1e-4
        )
        ref = structural_similarity(
            gt, pred, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
            data_range=255, channel_axis=-1,
        )  # fmt: skip
        assert out["ssim"] == pytest.approx(ref, abs=1e-4)


def test_y_channel_matches_skimage_rgb2ycbcr(photos):
    pred, gt = photos[1]
    yp = rgb2ycbcr(pred)[..., 0]
    yg = rgb2ycbcr(gt)[..., 0]
    c = 4
    ref_psnr = peak_signal_noise_ratio(yg[c:-c, c:-c], yp[c:-c, c:-c], data_range=255)
    ref_ssim = structural_similarity(
        yg[c:-c, c:-c],
        yp[c:-c, c:-c],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert M.psnr(pred, gt, 4, y_channel=True) == pytest.approx(ref_psnr, abs=1e-4)
    assert M.ssim(pred, gt, 4, y_channel=True) == pytest.approx(ref_ssim, abs=1e-4)


def test_conventions_are_named_and_errors_are_clear():
    assert set(M.CONVENTIONS) == {"ram", "promptir", "uint8_nocrop"}
    assert M.get_convention("ram").crop_border == 4
    with pytest.raises(ValueError, match="choose one of"):
        M.get_convention("nope")
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        M.ssim(a, a, crop_border=0)
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr(a, np.zeros((8, 9, 3), np.uint8), crop_border=0)

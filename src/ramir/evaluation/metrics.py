"""PSNR and SSIM under the field's two conventions, in torch (CPU or GPU).

Two conventions are in use for all-in-one restoration and give different numbers, so
every report names the one it used (:data:`CONVENTIONS`):

``"ram"`` -- RAM / BasicSR (``basicsr.metrics.calculate_psnr`` / ``calculate_ssim``):
    the prediction is quantised to uint8 first (``round(clamp(x, 0, 1) * 255)``, as
    BasicSR's ``tensor2img``), ``crop_border=4`` pixels are dropped on every side, RGB
    (or optionally the BT.601 Y channel, ``16 + 65.481 R + 128.553 G + 24.966 B`` with
    ``R, G, B`` in [0, 1]), ``data_range=255``. SSIM uses the 11x11 Gaussian window with
    sigma 1.5 and population (co)variances, is evaluated where the window lies fully inside
    the image ("valid" convolution) and is the mean over channels of the per-channel mean
    SSIM. This equals scikit-image's
    ``structural_similarity(gt, pred, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)`` exactly, because
    scikit-image filters with reflect padding and then crops ``(win_size - 1) // 2 = 5``
    pixels before averaging, which keeps exactly the valid region.

``"promptir"`` -- PromptIR / AirNet (``utils/val_utils.py: compute_psnr_ssim``): the
    prediction is clipped to [0, 1] but *not* quantised, no border crop, RGB,
    ``data_range=1``, and SSIM is scikit-image's default: a 7x7 uniform window with
    sample (co)variances (``N / (N - 1)`` correction), valid region, mean over channels.
    This equals ``peak_signal_noise_ratio(gt, pred, data_range=1)`` and
    ``structural_similarity(gt, pred, data_range=1, channel_axis=-1)``.

Both compute in float64 (float32 on devices without float64, e.g. Apple MPS).

Inputs are either numpy arrays ``(H, W, C)`` / ``(H, W)`` (uint8 in [0, 255] or float in
[0, 1]) or torch tensors ``(C, H, W)`` / ``(B, C, H, W)`` (float in [0, 1], or uint8).
A single image gives a ``float``; a ``(B, C, H, W)`` batch gives a ``(B,)`` float64
tensor of per-image values (average them yourself: the field averages per image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Convention",
    "CONVENTIONS",
    "get_convention",
    "psnr",
    "ssim",
    "compute_metrics",
    "to_uint8",
    "rgb_to_y",
]

ImageLike = np.ndarray | torch.Tensor
Window = Literal["gaussian", "uniform"]


@dataclass(frozen=True)
class Convention:
    """One way of computing PSNR/SSIM; see the module docstring."""

    name: str
    crop_border: int
    y_channel: bool
    quantize: bool
    ssim_window: Window
    ssim_win_size: int
    ssim_sigma: float
    ssim_sample_covariance: bool
    description: str

    def to_dict(self) -> dict:
        return asdict(self)


CONVENTIONS: dict[str, Convention] = {
    "ram": Convention(
        name="ram",
        crop_border=4,
        y_channel=False,
        quantize=True,
        ssim_window="gaussian",
        ssim_win_size=11,
        ssim_sigma=1.5,
        ssim_sample_covariance=False,
        description=(
            "RAM/BasicSR: uint8-quantised, RGB, crop 4 px, SSIM 11x11 Gaussian "
            "(sigma 1.5), mean over channels"
        ),
    ),
    "promptir": Convention(
        name="promptir",
        crop_border=0,
        y_channel=False,
        quantize=False,
        ssim_window="uniform",
        ssim_win_size=7,
        ssim_sigma=0.0,
        ssim_sample_covariance=True,
        description=(
            "PromptIR/AirNet: float clipped to [0,1], RGB, no crop, SSIM scikit-image "
            "default (7x7 uniform, sample covariance), mean over channels"
        ),
    ),
    # Another reading of the PromptIR/AirNet protocol (docs/method.md#evaluation): the RAM
    # measurement on uint8 images without the border crop. PromptIR's own code measures as
    # "promptir" above.
    "uint8_nocrop": Convention(
        name="uint8_nocrop",
        crop_border=0,
        y_channel=False,
        quantize=True,
        ssim_window="gaussian",
        ssim_win_size=11,
        ssim_sigma=1.5,
        ssim_sample_covariance=False,
        description=(
            "uint8-quantised, RGB, no crop, SSIM 11x11 Gaussian (sigma 1.5), mean over "
            "channels (another reading of the PromptIR/AirNet protocol)"
        ),
    ),
}


def get_convention(name: str | Convention) -> Convention:
    """Look up a convention by name (``"ram"`` or ``"promptir"``)."""
    if isinstance(name, Convention):
        return name
    try:
        return CONVENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown metric convention {name!r}; choose one of: {', '.join(CONVENTIONS)}"
        ) from None


# ----------------------------------------------------------------------------- helpers


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float image(s) in [0, 1] -> uint8 the way BasicSR's ``tensor2img`` does it.

    Clamps to [0, 1], multiplies by 255 and rounds half to even (``numpy.round``).
    Any shape; the result has the same shape and device.
    """
    if x.dtype == torch.uint8:
        return x
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a float tensor in [0, 1] or uint8, got {x.dtype}")
    return (x.float().clamp(0, 1) * 255.0).round().to(torch.uint8)


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _as_batch(img: ImageLike, quantize: bool, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``(B, C, H, W)`` float64 on the 0..255 scale and whether it was a batch."""
    if isinstance(img, np.ndarray):
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3:
            raise ValueError(f"{name}: expected an (H, W, C) or (H, W) array, got {img.shape}")
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
        batched = False
    elif isinstance(img, torch.Tensor):
        if img.dim() == 3:
            t, batched = img[None], False
        elif img.dim() == 4:
            t, batched = img, True
        else:
            raise ValueError(
                f"{name}: expected a (C, H, W) or (B, C, H, W) tensor, got shape {tuple(img.shape)}"
            )
    else:
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(img).__name__}")
    dtype = _work_dtype(t.device)
    if t.dtype == torch.uint8:
        return t.to(dtype), batched
    if not torch.is_floating_point(t):
        raise TypeError(f"{name}: expected uint8 or float in [0, 1], got {t.dtype}")
    if quantize:
        return to_uint8(t).to(dtype), batched
    return t.to(dtype).clamp(0, 1) * 255.0, batched


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of ``(B, 3, H, W)`` RGB on the 0..255 scale -> ``(B, 1, H, W)`` in [16, 235].

    The same formula as BasicSR's ``to_y_channel`` (and scikit-image's ``rgb2ycbcr``):
    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for ``R, G, B`` in 0..255. Not
    rounded.
    """
    if x.shape[1] != 3:
        raise ValueError(f"the Y channel needs 3-channel RGB images, got {x.shape[1]} channels")
    w = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True) / 255.0 + 16.0


def _prepare(
    pred: ImageLike,
    gt: ImageLike,
    crop_border: int,
    y_channel: bool,
    quantize: bool,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    p, batched = _as_batch(pred, quantize, "pred")
    g, _ = _as_batch(gt, quantize, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    g = g.to(p.device)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        h, w = p.shape[-2:]
        if h <= 2 * crop_border or w <= 2 * crop_border:
            raise ValueError(f"image of size {h}x{w} is too small for crop_border={crop_border}")
        p = p[..., crop_border:-crop_border, crop_border:-crop_border]
        g = g[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        p, g = rgb_to_y(p), rgb_to_y(g)
    return p, g, batched


def _finish(values: torch.Tensor, batched: bool) -> float | torch.Tensor:
    return values if batched else float(values[0])


# ----------------------------------------------------------------------------- metrics


def psnr(
    pred: ImageLike,
    gt: ImageLike,
    crop_border: int = 4,
    y_channel: bool = False,
    *,
    quantize: bool = True,
) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB with ``data_range=255`` (inf when identical).

    Args:
        pred, gt: ``(H, W, C)``/``(H, W)`` numpy arrays (uint8, or float in [0, 1]) or
            ``(C, H, W)``/``(B, C, H, W)`` tensors (float in [0, 1], or uint8).
        crop_border: pixels dropped on each side before measuring (RAM: 4, PromptIR: 0).
        y_channel: measure the BT.601 Y channel instead of RGB.
        quantize: round float inputs to uint8 levels first (RAM); ``False`` keeps them
            as floats clipped to [0, 1] (PromptIR). uint8 inputs are used as they are.

    Returns:
        A float for a single image, or a ``(B,)`` float64 tensor for a batch.
    """
    p, g, batched = _prepare(pred, gt, crop_border, y_channel, quantize)
    mse = ((p - g) ** 2).flatten(1).mean(dim=1)
    out = 10.0 * torch.log10((255.0**2) / mse)  # mse == 0 -> inf
    return _finish(out, batched)


def _window(kind: Window, win_size: int, sigma: float, dtype, device) -> torch.Tensor:
    """1-D window of length ``win_size`` summing to one."""
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be odd and positive, got {win_size}")
    if kind == "gaussian":
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0 for a Gaussian window, got {sigma}")
        r = torch.arange(win_size, dtype=dtype, device=device) - (win_size - 1) / 2
        g = torch.exp(-(r**2) / (2.0 * sigma**2))
        return g / g.sum()
    if kind == "uniform":
        return torch.full((win_size,), 1.0 / win_size, dtype=dtype, device=device)
    raise ValueError(f"unknown SSIM window {kind!r}; choose 'gaussian' or 'uniform'")


def _filter_valid(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(B, C, H, W)`` by the 1-D window, per channel."""
    c = x.shape[1]
    k = win.numel()
    x = F.conv2d(x, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    pred: ImageLike,
    gt: ImageLike,
    crop_border: int = 4,
    y_channel: bool = False,
    *,
    quantize: bool = True,
    window: Window = "gaussian",
    win_size: int = 11,
    sigma: float = 1.5,
    sample_covariance: bool = False,
) -> float | torch.Tensor:
    """Structural similarity (Wang et al. 2004) with ``data_range=255``, K1=0.01, K2=0.03.

    The SSIM map is computed where the window lies fully inside the (cropped) image, per
    channel; the result is the mean over that region and over channels. The defaults are
    the RAM/BasicSR convention (11x11 Gaussian, sigma 1.5, population covariance); the
    PromptIR/AirNet convention is ``window="uniform", win_size=7,
    sample_covariance=True, quantize=False, crop_border=0``.

    Args:
        pred, gt: as for :func:`psnr`.
        crop_border, y_channel, quantize: as for :func:`psnr`.
        window: ``"gaussian"`` or ``"uniform"``.
        win_size: odd window side; the image must be at least this large after cropping.
        sigma: Gaussian standard deviation in pixels.
        sample_covariance: divide (co)variances by ``N - 1`` instead of ``N`` (``N`` =
            ``win_size**2``), as scikit-image does by default.

    Returns:
        A float for a single image, or a ``(B,)`` float64 tensor for a batch.
    """
    p, g, batched = _prepare(pred, gt, crop_border, y_channel, quantize)
    h, w = p.shape[-2:]
    if h < win_size or w < win_size:
        raise ValueError(
            f"image of size {h}x{w} (after cropping {crop_border} px) is smaller than the "
            f"{win_size}x{win_size} SSIM window"
        )
    win = _window(window, win_size, sigma, p.dtype, p.device)
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    mu_p = _filter_valid(p, win)
    mu_g = _filter_valid(g, win)
    cov_norm = (win_size**2) / (win_size**2 - 1.0) if sample_covariance else 1.0
    var_p = cov_norm * (_filter_valid(p * p, win) - mu_p * mu_p)
    var_g = cov_norm * (_filter_valid(g * g, win) - mu_g * mu_g)
    cov = cov_norm * (_filter_valid(p * g, win) - mu_p * mu_g)
    num = (2 * mu_p * mu_g + c1) * (2 * cov + c2)
    den = (mu_p * mu_p + mu_g * mu_g + c1) * (var_p + var_g + c2)
    ssim_map = num / den
    # Per-channel means, then the mean over channels (identical sizes: one flat mean).
    out = ssim_map.flatten(2).mean(dim=2).mean(dim=1)
    return _finish(out, batched)


def compute_metrics(
    pred: ImageLike,
    gt: ImageLike,
    convention: str | Convention = "ram",
    *,
    y_channel: bool | None = None,
) -> dict[str, float | torch.Tensor]:
    """PSNR and SSIM under a named convention: ``{"psnr": ..., "ssim": ...}``.

    ``y_channel`` overrides the convention's setting when given.
    """
    conv = get_convention(convention)
    y = conv.y_channel if y_channel is None else y_channel
    common = dict(crop_border=conv.crop_border, y_channel=y, quantize=conv.quantize)
    return {
        "psnr": psnr(pred, gt, **common),
        "ssim": ssim(
            pred,
            gt,
            **common,
            window=conv.ssim_window,
            win_size=conv.ssim_win_size,
            sigma=conv.ssim_sigma if conv.ssim_window == "gaussian" else 1.5,
            sample_covariance=conv.ssim_sample_covariance,
        ),
    }

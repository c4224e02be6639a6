"""Classical restorers a user already has, as baselines beside the model.

Each method is the real implementation of its library, called with one setting:

=============  ==========================================================  ============
name           what                                                        needs
=============  ==========================================================  ============
``bm3d``       BM3D (``bm3d.bm3d_rgb``) told the noise level ``sigma``     ``bm3d``
``bm3d_est``   BM3D with ``sigma`` estimated from the image                ``bm3d``
               (``skimage.restoration.estimate_sigma``) times ``scale``
``nlm``        OpenCV non-local means (``cv2.fastNlMeansDenoisingColored``)  ``cv2``
``wavelet``    scikit-image wavelet denoising, BayesShrink                 ``pywt``
               (``denoise_wavelet``; ``sigma`` null: estimated)
``tv``         scikit-image total-variation denoising                      --
               (``denoise_tv_chambolle``)
``unsharp``    unsharp masking (``skimage.filters.unsharp_mask``)          --
``wiener``     Wiener deconvolution told a Gaussian blur                   --
               (``skimage.restoration.wiener``, reflect-padded)
=============  ==========================================================  ============

The optional libraries come with ``pip install 'ramir[classical]'``
(``bm3d``, ``opencv-python-headless``, ``PyWavelets``); without one, its methods raise
:class:`ramir.errors.ResourceError` saying so (:func:`unavailable` tells beforehand),
and ``ramir evaluate`` skips their rows with a note.

Image convention: :func:`restore_classical` takes and returns numpy RGB images
``(H, W, 3)`` float32 in ``[0, 1]`` (the output clipped to it); :func:`restore_tensor`
wraps it for the evaluation's tensors ``(3, H, W)`` or ``(B, 3, H, W)`` float in
``[0, 1]``. Noise levels (``sigma``, NLM's ``h``) are in 8-bit levels (0-255), as the
degradations' parameters (``gaussian_noise sigma: 25``).

Settings are chosen per task on the validation photos by
:func:`ramir.evaluation.classical_tuning.tune` (a grid search of the mean PSNR gain over
the degraded input); ``benchmarks/tune_classical.py`` writes them to the file shipped in
the package (``ramir/assets/classical_settings.yaml``, ``settings: tuned`` in an
evaluation config), which :mod:`ramir.evaluation.classical_settings` reads and resolves
per test set. Each method also has the one setting that is best over all its tasks
together (``all_tasks``): what it does to a photo without being told the task, used on
clean-input columns.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ramir.errors import ResourceError, UnknownNameError, UsageError

__all__ = [
    "EXTRA",
    "Method",
    "METHODS",
    "names",
    "get_method",
    "unavailable",
    "library_versions",
    "restore_classical",
    "restore_tensor",
    "applies_to",
    "estimate_noise",
]

EXTRA = "pip install 'ramir[classical]'"
"""The install command of the optional libraries."""

# import name -> the PyPI package that provides it
_PACKAGES = {"bm3d": "bm3d", "cv2": "opencv-python-headless", "pywt": "PyWavelets"}

Settings = dict[str, Any]
Image = np.ndarray


@dataclass(frozen=True)
class Method:
    """One classical restorer.

    Attributes:
        name: registry name.
        description: one line for tables and docs.
        run: ``(image (H, W, 3) float32 in [0, 1], settings) -> image`` (same shape).
        defaults: every setting and its default value.
        grid: the tuning grid (each setting's candidate values; the product is searched).
        modules: optional modules it imports (``bm3d``, ``cv2``, ``pywt``).
        degradations: the degradations it is a tool for (a test set whose degradation,
            or a step of whose chain, is one of them); tuned and run on those.
    """

    name: str
    description: str
    run: Callable[[Image, Settings], Image]
    defaults: Settings
    grid: dict[str, tuple[Any, ...]]
    modules: tuple[str, ...] = ()
    degradations: tuple[str, ...] = ()

    def settings(self, given: Mapping[str, Any] | None = None) -> Settings:
        """The defaults overridden by ``given`` (unknown names raise UsageError)."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise UsageError(
                f"classical method {self.name!r} has no setting(s) {', '.join(unknown)}; "
                f"its settings: {', '.join(self.defaults)}"
            )
        return {**self.defaults, **given}


def _require(module: str, method: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ResourceError(
            f"classical method {method!r} needs the optional package "
            f"{_PACKAGES.get(module, module)}, which is not installed: {EXTRA}"
        ) from None


def _levels(x: float) -> float:
    """8-bit levels -> [0, 1] units."""
    return float(x) / 255.0


def _bm3d_profile(bm3d: Any, name: str) -> Any:
    if name == "lc":
        from bm3d.profiles import BM3DProfileLC

        return BM3DProfileLC()
    if name not in ("np", "refilter", "vn", "high"):
        raise UsageError(f"bm3d profile must be lc, np, refilter, vn or high, got {name!r}")
    return name


def _bm3d_call(bm3d: Any, img: Image, sigma: float, profile: str) -> Image:
    """``bm3d_rgb``, or on a grey image (three equal channels: its colour transform has
    constant chroma, which BM3D cannot normalise) ``bm3d`` on the one channel."""
    prof = _bm3d_profile(bm3d, profile)
    if np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]):
        grey = np.asarray(bm3d.bm3d(img[..., 0], sigma, profile=prof), dtype=np.float32)
        return np.repeat(grey.reshape(img.shape[:2])[..., None], 3, axis=2)
    return bm3d.bm3d_rgb(img, sigma, profile=prof)


def _run_bm3d(img: Image, s: Settings) -> Image:
    bm3d = _require("bm3d", "bm3d")
    sigma = _levels(s["sigma"])
    if sigma <= 0:
        raise UsageError(f"bm3d: sigma must be > 0, got {s['sigma']}")
    return _bm3d_call(bm3d, img, sigma, s["profile"])


def estimate_noise(img: Image) -> float:
    """Noise std of ``img`` ``(H, W, 3)`` in [0, 1] units, the mean over channels of
    scikit-image's wavelet estimate (``estimate_sigma``)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(img, channel_axis=-1, average_sigmas=True))


def _run_bm3d_est(img: Image, s: Settings) -> Image:
    bm3d = _require("bm3d", "bm3d_est")
    sigma = max(float(s["scale"]) * estimate_noise(img), 1e-4)
    return _bm3d_call(bm3d, img, sigma, s["profile"])


def _run_nlm(img: Image, s: Settings) -> Image:
    cv2 = _require("cv2", "nlm")
    cv2.setNumThreads(torch.get_num_threads())
    u8 = np.ascontiguousarray((np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)[..., ::-1])
    h = float(s["h"])
    h_color = h if s["h_color"] is None else float(s["h_color"])
    out = cv2.fastNlMeansDenoisingColored(
        u8, None, h, h_color, int(s["template_window"]), int(s["search_window"])
    )
    return out[..., ::-1].astype(np.float32) / 255.0


def _run_wavelet(img: Image, s: Settings) -> Image:
    _require("pywt", "wavelet")
    from skimage.restoration import denoise_wavelet

    sigma = None if s["sigma"] is None else _levels(s["sigma"])
    return denoise_wavelet(
        img,
        sigma=sigma,
        wavelet=s["wavelet"],
        mode=s["mode"],
        method="BayesShrink",
        convert2ycbcr=True,
        channel_axis=-1,
        rescale_sigma=True,
    )


def _run_tv(img: Image, s: Settings) -> Image:
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(img, weight=float(s["weight"]), channel_axis=-1)


def _run_unsharp(img: Image, s: Settings) -> Image:
    from skimage.filters import unsharp_mask

    # channel_axis=2, not -1: scikit-image 0.26 leaves the output uninitialised with -1
    return unsharp_mask(img, radius=float(s["radius"]), amount=float(s["amount"]), channel_axis=2)


def _run_wiener(img: Image, s: Settings) -> Image:
    from skimage.restoration import wiener

    from ramir.degradations.blur import gaussian_kernel

    sigma = float(s["psf_sigma"])
    size = int(s["psf_size"])
    psf = gaussian_kernel(size, sigma)
    pad = size
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    out = np.stack(
        [wiener(padded[..., c], psf, float(s["balance"]), clip=False) for c in range(3)],
        axis=-1,
    )
    return out[pad:-pad, pad:-pad]


_DENOISE = ("gaussian_noise", "jpeg")
_SHARPEN = ("gaussian_blur", "motion_blur")

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "bm3d",
            "BM3D told the noise level (bm3d package, low-complexity profile)",
            _run_bm3d,
            {"sigma": 25.0, "profile": "lc"},
            {"sigma": (7.0, 10.0, 14.0, 20.0, 25.0, 30.0)},
            ("bm3d",),
            _DENOISE,
        ),
        Method(
            "bm3d_est",
            "BM3D with the noise level estimated from the image (x scale)",
            _run_bm3d_est,
            {"scale": 1.0, "profile": "lc"},
            {"scale": (1.0, 1.5, 2.0, 3.0)},
            ("bm3d",),
            _DENOISE,
        ),
        Method(
            "nlm",
            "OpenCV non-local means (fastNlMeansDenoisingColored)",
            _run_nlm,
            {"h": 10.0, "h_color": None, "template_window": 7, "search_window": 21},
            {"h": (3.0, 5.0, 7.0, 10.0, 13.0, 16.0, 20.0)},
            ("cv2",),
            _DENOISE,
        ),
        Method(
            "wavelet",
            "scikit-image wavelet denoising, BayesShrink (sigma null: estimated)",
            _run_wavelet,
            {"sigma": None, "wavelet": "db1", "mode": "soft"},
            {
                "sigma": (None, 3.0, 6.0, 10.0, 15.0, 20.0, 25.0, 30.0),
                "wavelet": ("db1", "sym4"),
            },
            ("pywt",),
            _DENOISE,
        ),
        Method(
            "tv",
            "scikit-image total-variation denoising (Chambolle)",
            _run_tv,
            {"weight": 0.08},
            {"weight": (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12)},
            (),
            _DENOISE,
        ),
        Method(
            "unsharp",
            "unsharp masking (scikit-image unsharp_mask)",
            _run_unsharp,
            {"radius": 2.0, "amount": 1.0},
            {"radius": (1.0, 2.0, 3.0), "amount": (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)},
            (),
            _SHARPEN,
        ),
        Method(
            "wiener",
            "Wiener deconvolution told a Gaussian blur (scikit-image wiener)",
            _run_wiener,
            {"psf_sigma": 2.0, "psf_size": 15, "balance": 0.01},
            {
                "psf_sigma": (1.0, 1.5, 2.0),
                "balance": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1),
            },
            (),
            ("gaussian_blur",),
        ),
    )
}
"""The registry, by name."""


def names() -> list[str]:
    """The classical methods' names."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method called ``name`` (UnknownNameError lists the choices)."""
    try:
        return METHODS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown classical method {name!r}; choose from: {', '.join(METHODS)}"
        ) from None


def unavailable(name: str) -> str | None:
    """Why method ``name`` cannot run here (a missing optional package), else ``None``."""
    for module in get_method(name).modules:
        try:
            _require(module, name)
        except ResourceError as e:
            return str(e)
    return None


def library_versions(name: str) -> dict[str, str]:
    """Versions of the libraries method ``name`` calls (recorded with its results)."""
    from importlib import metadata

    dists = ["scikit-image", *(_PACKAGES[m] for m in get_method(name).modules)]
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "missing"
    return out


def restore_classical(
    image: np.ndarray, method: str, settings: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Restore ``image`` with classical ``method`` at ``settings`` (over its defaults).

    Args:
        image: RGB ``(H, W, 3)``, float in ``[0, 1]`` (or uint8).
        method: a name of :data:`METHODS`.
        settings: the method's settings (8-bit levels for noise levels).

    Returns:
        ``(H, W, 3)`` float32 in ``[0, 1]``.

    Raises:
        ResourceError: an optional library is missing (the message says what to install).
        UsageError: a bad image or an unknown setting.
    """
    m = get_method(method)
    s = m.settings(settings)
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UsageError(f"{method}: expected an RGB image (H, W, 3), got shape {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    img = np.clip(img.astype(np.float32, copy=False), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(m.run(img, s), dtype=np.float32)
    # where a library gives no value (BM3D normalises each colour channel by its range:
    # a constant channel of a colour image becomes NaN), the input is kept
    out = np.where(np.isfinite(out), out, img)
    return np.clip(out, 0.0, 1.0)


def restore_tensor(
    x: torch.Tensor, method: str, settings: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """:func:`restore_classical` on tensors ``(3, H, W)`` or ``(B, 3, H, W)`` float in
    ``[0, 1]``, image by image; the result is float32 on ``x``'s device, same shape."""
    batch = x[None] if x.dim() == 3 else x
    outs = []
    for img in batch:
        hwc = img.detach().float().cpu().permute(1, 2, 0).numpy()
        outs.append(torch.from_numpy(restore_classical(hwc, method, settings)).permute(2, 0, 1))
    out = torch.stack(outs).to(x.device)
    return out[0] if x.dim() == 3 else out


def applies_to(method: str, degradation: str | None, params: Mapping[str, Any] | None) -> bool:
    """Whether ``method`` is a tool for a test set degraded by ``degradation`` (a chain
    counts when one of its steps is)."""
    wanted = get_method(method).degradations
    if degradation == "chain":
        steps = (params or {}).get("steps", [])
        return any(isinstance(st, Mapping) and st.get("name") in wanted for st in steps)
    return degradation in wanted

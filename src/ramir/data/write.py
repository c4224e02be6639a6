"""Image writing: a restored ``(3, H, W)`` tensor back to a file like its input.

:func:`write_image` writes PNG, JPEG, BMP, TIFF and WebP in the mode, bit depth, alpha
and colour profile of the image the result came from (``like=``, a
:class:`~ramir.data.read.LoadedImage`), atomically (temporary file, then rename):
values converted to sRGB on reading are converted back to the input's ICC profile and
saved with it (see :mod:`ramir.data.read` for what reading does with profiles).
:func:`remove_stale_temp_files` deletes what an interrupted write left.

Encoders: Pillow for everything except TIFF (``tifffile``) and 16-bit PNG (``pypng``).
"""

from __future__ import annotations

import glob
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ramir.data.colour import from_srgb, parse_profile
from ramir.data.read import _TIFF_ICC_TAG, LoadedImage

__all__ = ["write_image", "remove_stale_temp_files"]

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")  # formats that can embed an ICC profile


def write_image(
    path: str | os.PathLike[str],
    rgb: torch.Tensor | np.ndarray,
    *,
    like: LoadedImage | None = None,
    mode: str | None = None,
    bit_depth: int | None = None,
    alpha: torch.Tensor | np.ndarray | None = None,
    keep_alpha: bool = True,
    quality: int | None = None,
) -> Path:
    """Write ``rgb`` to ``path``; the format follows the suffix (those of
    :data:`ramir.data.listing.IMAGE_EXTENSIONS`).

    Args:
        path: output file; parent folders are created. The write is atomic: the image is
            written to a temporary file in the same folder, then renamed over ``path``.
        rgb: ``(3, H, W)`` (or ``(1, H, W)``/``(H, W)``) float in ``[0, 1]``; values
            outside are clipped, NaNs are an error. A NumPy ``(H, W, 3)`` array also works.
        like: the :class:`LoadedImage` this result comes from; its mode, bit depth and
            alpha are used unless overridden, and its colour profile is kept: ``rgb``
            (sRGB) is converted back to ``like.icc_profile`` when it was converted on
            reading, and that profile is embedded (PNG, JPEG, WebP, TIFF; not BMP, and
            not when ``mode`` makes a gray image of an RGB one or the other way round,
            where sRGB values are written without a profile).
        mode: ``"gray"`` or ``"rgb"``. Gray is written as the **mean of the three
            channels** (the exact inverse of how gray images are expanded on reading).
        bit_depth: 8 or 16 (16 only for PNG and TIFF). Values are ``round(x * (2^b - 1))``.
        alpha: ``(1, H, W)`` or ``(H, W)`` float in ``[0, 1]``; default ``like.alpha``.
        keep_alpha: ``False`` drops ``like``'s alpha (e.g. to write a JPEG).
        quality: JPEG/WebP quality 1..100. Default: JPEG 95, WebP lossless.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot write {path}: unknown image suffix {path.suffix!r}; "
            f"use one of {', '.join(_WRITE_FORMATS)}"
        )
    mode = mode or (like.mode if like is not None else "rgb")
    if mode not in ("gray", "rgb"):
        raise ValueError(f"mode must be 'gray' or 'rgb', got {mode!r}")
    bit_depth = bit_depth or (like.bit_depth if like is not None else 8)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and fmt not in _SIXTEEN_BIT_FORMATS:
        raise ValueError(
            f"cannot write {path}: {fmt} cannot store 16-bit samples; "
            "write a .png or .tif file, or pass bit_depth=8"
        )

    color = _as_hwc(rgb, f"{path}: rgb")
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if color.shape[2] != 3:
        raise ValueError(f"{path}: rgb must have 1 or 3 channels, got shape {tuple(color.shape)}")
    if mode == "gray":
        color = color.mean(axis=2, keepdims=True)
    icc = None
    if like is not None and like.icc_profile:
        icc, color = _to_file_colour(like, color, mode, fmt, bit_depth)

    if alpha is None and keep_alpha and like is not None and like.alpha is not None:
        alpha = like.alpha
        if tuple(alpha.shape[-2:]) != color.shape[:2]:
            raise ValueError(
                f"cannot write {path}: the image is {color.shape[0]}x{color.shape[1]} but the "
                f"alpha of the input it is 'like' is {alpha.shape[-2]}x{alpha.shape[-1]}; "
                "pass alpha= explicitly or keep_alpha=False"
            )
    if alpha is not None:
        a = _as_hwc(alpha, f"{path}: alpha")
        if a.shape[2] != 1 or a.shape[:2] != color.shape[:2]:
            raise ValueError(
                f"{path}: alpha must be (1, H, W) matching the image {color.shape[:2]}, "
                f"got {tuple(alpha.shape)}"
            )
        if fmt == "JPEG":
            raise ValueError(
                f"cannot write {path}: JPEG cannot store an alpha channel; "
                "write .png/.webp/.tif, or pass keep_alpha=False"
            )
        color = np.concatenate([color, a], axis=2)

    maxval = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    data = np.round(np.clip(color, 0.0, 1.0) * maxval).astype(dtype)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(path)
    try:
        _encode(tmp, data, fmt, bit_depth, quality, icc)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _temp_path(path: Path) -> Path:
    """Where :func:`write_image` encodes ``path`` before renaming it: a hidden file in
    the same folder, named after the file and this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete what an interrupted :func:`write_image` of ``path`` left (its hidden
    temporary files, from any process); returns them. Call it only where no other
    process is writing ``path`` now."""
    path = Path(path)
    removed = []
    pattern = f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"
    for tmp in path.parent.glob(pattern):
        try:
            tmp.unlink()
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed


def _to_file_colour(
    like: LoadedImage, color: np.ndarray, mode: str, fmt: str, bit_depth: int
) -> tuple[bytes | None, np.ndarray]:
    """The profile to embed and the values to write for a result ``like`` an image with
    a profile (see :func:`write_image`)."""
    try:
        profile = parse_profile(like.icc_profile)  # type: ignore[arg-type]
    except ValueError:
        return None, color
    fits = profile.space == ("GRAY" if mode == "gray" else "RGB")
    if fmt not in _ICC_FORMATS or not fits:
        return None, color  # sRGB values (when converted on reading), no profile
    if like.icc_converted:
        if profile.curves is None and bit_depth != 8:
            return None, color  # a LUT profile goes back through littlecms at 8 bits only
        try:
            color = from_srgb(color, profile)
        except Exception:  # ImageCms.PyCMSError: an input-only profile (no sRGB -> it)
            return None, color
    return profile.data, color


def _png_with_icc(png: bytes, icc: bytes) -> bytes:
    """A PNG file with an ``iCCP`` chunk (right after ``IHDR``) holding ``icc``."""
    body = b"ICC profile\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + body) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]


def _as_hwc(x: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """Tensor ``(C, H, W)``/``(H, W)`` or array ``(H, W, C)``/``(H, W)`` -> float32 ``(H, W, C)``."""
    if isinstance(x, torch.Tensor):
        a = x.detach().to("cpu", torch.float32).numpy()
        if a.ndim == 3:
            a = a.transpose(1, 2, 0)
    else:
        a = np.asarray(x, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"{what}: expected an image of shape (C, H, W), got {tuple(x.shape)}")
    if np.isnan(a).any():
        raise ValueError(f"{what}: contains NaN values")
    return a


def _encode(
    tmp: Path,
    data: np.ndarray,
    fmt: str,
    bit_depth: int,
    quality: int | None,
    icc: bytes | None = None,
) -> None:
    h, w, c = data.shape
    if fmt == "TIFF":
        import tifffile

        tifffile.imwrite(
            tmp,
            data[:, :, 0] if c == 1 else data,
            photometric="minisblack" if c <= 2 else "rgb",
            extrasamples=["unassalpha"] if c in (2, 4) else None,
            extratags=[(_TIFF_ICC_TAG, 7, len(icc), icc, True)] if icc else None,
        )
        return
    if fmt == "PNG" and bit_depth == 16:
        import png  # pypng

        writer = png.Writer(
            width=w, height=h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16, compression=6
        )
        buffer = io.BytesIO()
        writer.write(buffer, data.reshape(h, w * c))
        encoded = buffer.getvalue()
        with open(tmp, "wb") as f:
            f.write(_png_with_icc(encoded, icc) if icc else encoded)
        return
    pil_mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    if fmt == "BMP" and pil_mode == "LA":
        raise ValueError(f"cannot write {tmp.name}: BMP cannot store gray + alpha; write a .png")
    im = Image.fromarray(data[:, :, 0] if c == 1 else data, mode=pil_mode)
    kwargs: dict[str, object] = {}
    if icc and fmt in _ICC_FORMATS:
        kwargs["icc_profile"] = icc
    if fmt == "JPEG":
        kwargs["quality"] = 95 if quality is None else int(quality)
    elif fmt == "WEBP":
        if quality is None:
            kwargs["lossless"] = True
        else:
            kwargs["quality"] = int(quality)
    im.save(tmp, format=fmt, **kwargs)

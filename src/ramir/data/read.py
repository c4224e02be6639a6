"""Image reading that keeps what a restoration tool must give back.

* :func:`read_image` reads PNG, JPEG, BMP, TIFF and WebP into a float ``(3, H, W)`` RGB
  tensor in ``[0, 1]``. Grayscale is expanded to three equal channels and remembered
  (``mode="gray"``); an alpha channel is split off and kept (``alpha``); 16-bit PNG and
  TIFF files keep their 16-bit precision (``bit_depth=16``, values ``k / 65535``); the
  EXIF orientation tag is applied, so the pixels are the way a viewer shows them.
  :func:`ramir.data.write.write_image` writes a result back in the mode, bit depth,
  alpha and colour profile of the :class:`LoadedImage` it came from.
* The size a file declares is checked against ``max_pixels`` before anything is decoded
  (:class:`ImageTooLargeError`); :func:`image_size` reads it alone.
* A missing file raises :class:`FileNotFoundError`; a corrupt, truncated or unsupported
  file raises :class:`ImageReadError`, whose message names the file.
* What reading had to change or drop is said in ``notes`` (``ramir restore`` prints
  them): a CMYK image converted to RGB, the frames after the first of an animated WebP,
  GIF or PNG (or the pages after the first of a TIFF), a colour profile that cannot be
  read or applied.

Colour profiles (ICC). The models are trained on sRGB images, so an image with an
embedded ICC profile other than sRGB (Adobe RGB, Display P3, ProPhoto, a gray profile)
is **converted to sRGB on reading**, relative colorimetric (in-gamut colours exact;
colours outside sRGB are clipped to its edge, as a colour-managed sRGB display shows
them), and the result is **converted back to the input's profile on writing and saved
with that same profile** (``LoadedImage.icc_profile``; PNG, JPEG, WebP and TIFF; a BMP
gets sRGB values and no profile). So a colour-managed viewer shows the result in the
input's colours, and the file stays in the colour space it was delivered in (an Adobe
RGB photo stays an Adobe RGB file; its untouched pixels come back to the same values).
An sRGB profile is not applied (the pixels are sRGB already) and its bytes are written
back unchanged.

* Matrix/TRC profiles (nearly all RGB and gray camera/editing profiles) are applied in
  float with the profile's own matrix and tone curves, so 16-bit images keep their 16-bit
  precision and an identity round trip gives the same pixels back (no 8-bit step).
* LUT-based RGB profiles go through Pillow's :mod:`PIL.ImageCms` (littlecms, relative
  colorimetric) on 8-bit images; a 16-bit image with such a profile (which littlecms
  cannot convert through Pillow without 8-bit rounding), or a gray LUT profile, is not
  converted: it is restored in its own colour space, the profile is written back, and a
  note says so.
* CMYK (JPEG, TIFF) is converted to sRGB through its embedded profile with ImageCms
  (relative colorimetric with black-point compensation, Photoshop's default), or with
  Pillow's naive formula ``(1 - C)(1 - K)`` without one; the result is an RGB file and a
  note says so.
* A profile that cannot be parsed, or does not fit the image (an RGB profile on a gray
  image), is ignored with a note: the pixels are read as they are (taken as sRGB) and
  the output has no profile. Reading never fails because of a profile.

:func:`read_array` is the fast path used by the data loaders: the same decoding and
colour conversion, but it returns the integer pixels as a NumPy array and does not build
a tensor.

Decoders: Pillow for everything except TIFF (``tifffile``) and 16-bit colour PNG
(``pypng``: Pillow reduces 16-bit RGB PNGs to 8 bits).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ramir.data.colour import Profile, cmyk_to_srgb, colour_plan, to_srgb
from ramir.data.pixels import array_to_tensor, to_float01
from ramir.errors import RamirError
from ramir.options import DEFAULT_MAX_PIXELS as _DEFAULT_MAX_PIXELS

__all__ = [
    "ImageReadError",
    "ImageTooLargeError",
    "DEFAULT_MAX_PIXELS",
    "LoadedImage",
    "RawImage",
    "read_image",
    "read_array",
    "image_size",
]

_EXIF_ORIENTATION = 0x0112
_TIFF_ICC_TAG = 34675  # InterColorProfile


class ImageReadError(RamirError, ValueError):
    """An image file exists but cannot be decoded; the message names the file."""


class ImageTooLargeError(ImageReadError):
    """An image declares more pixels than allowed (found from its header, before decoding)."""


DEFAULT_MAX_PIXELS = _DEFAULT_MAX_PIXELS
"""Largest image (width x height) :func:`read_image` decodes unless told otherwise: 100
megapixels (1.2 GB as float RGB), above the largest camera sensors; ``ramir restore
--max-pixels`` changes it."""


@dataclass
class LoadedImage:
    """A decoded image and what is needed to write a result back the same way.

    Attributes:
        rgb: ``(3, H, W)`` float32 in ``[0, 1]``; gray images have three equal channels.
        alpha: ``(1, H, W)`` float32 in ``[0, 1]``, or ``None`` without an alpha channel.
        mode: the file's colour mode, ``"gray"`` or ``"rgb"``.
        bit_depth: bits per sample in the file, 8 or 16.
        path: the file read, or ``None``.
        icc_profile: the ICC profile :func:`write_image` embeds in a result written
            ``like`` this image: the input's own (sRGB included), or ``None`` when it had
            none, had one that cannot be used, or was CMYK (the result is sRGB).
        icc_converted: ``rgb`` was converted from ``icc_profile``'s colour space to sRGB
            on reading; :func:`write_image` converts a result back.
        notes: what reading changed or dropped, in words for the user (no paths), e.g.
            ``"CMYK image converted to RGB ..."``; empty for most images.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    mode: str
    bit_depth: int
    path: Path | None = None
    icc_profile: bytes | None = None
    icc_converted: bool = False
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.rgb.shape[-2]), int(self.rgb.shape[-1])


@dataclass
class RawImage:
    """Integer pixels as stored (after EXIF orientation), for the fast loader path.

    Attributes:
        pixels: ``(H, W, 3)`` uint8 (8-bit) or uint16 (16-bit) RGB; gray is expanded.
        alpha: ``(H, W)`` of the same dtype, or ``None``.
        mode: ``"gray"`` or ``"rgb"``.
        bit_depth: 8 or 16.
        path: the file read.
        icc_profile, icc_converted, notes: as in :class:`LoadedImage` (``pixels`` are
            sRGB when ``icc_converted``).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    mode: str
    bit_depth: int
    path: Path | None = None
    icc_profile: bytes | None = None
    icc_converted: bool = False
    notes: tuple[str, ...] = ()

    def to_float(self) -> np.ndarray:
        """``(H, W, 3)`` float32 in ``[0, 1]`` (:func:`to_float01` of ``pixels``)."""
        return to_float01(self.pixels)


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Read an image file as a float RGB tensor in ``[0, 1]`` (see the module docstring).

    ``max_pixels`` bounds width x height, checked on the size the file declares before
    anything is decoded (``None``: no limit).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageTooLargeError: the image declares more than ``max_pixels`` pixels.
        ImageReadError: the file is corrupt, truncated or in an unsupported format.
    """
    raw, profile = _read(path, max_pixels)
    if profile is not None:  # float all the way: no rounding to the file's bit depth
        rgb = array_to_tensor(to_srgb(raw.pixels, raw.bit_depth, profile))
    else:
        rgb = array_to_tensor(raw.pixels)  # uint8 / 255, uint16 / 65535
    alpha = None
    if raw.alpha is not None:
        alpha = torch.from_numpy(to_float01(raw.alpha))[None]
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        mode=raw.mode,
        bit_depth=raw.bit_depth,
        path=raw.path,
        icc_profile=raw.icc_profile,
        icc_converted=raw.icc_converted,
        notes=raw.notes,
    )


def read_array(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> RawImage:
    """Decode an image file into integer RGB pixels (see :class:`RawImage`).

    ``max_pixels``: see :func:`read_image`. Pixels with a colour profile other than sRGB
    are converted to sRGB (rounded to the file's bit depth; ``icc_converted``), as
    :func:`read_image` does.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file is corrupt, truncated or in an unsupported format.
    """
    raw, profile = _read(path, max_pixels)
    if profile is not None:
        maxval = 255.0 if raw.bit_depth == 8 else 65535.0
        srgb = to_srgb(raw.pixels, raw.bit_depth, profile)
        dtype = np.uint8 if raw.bit_depth == 8 else np.uint16
        raw.pixels = np.round(srgb * np.float32(maxval)).astype(dtype)
    return raw


def _read(path: str | os.PathLike[str], max_pixels: int | None) -> tuple[RawImage, Profile | None]:
    """Decode a file: its pixels as stored (CMYK already made RGB) and, when they are to
    be converted to sRGB, the profile to convert them through."""
    path = Path(path)
    if not path.is_file():
        if path.exists():
            raise ImageReadError(f"{path} is not a file")
        if path.is_symlink():
            raise ImageReadError(
                f"{path} is a symbolic link that leads to no file (broken, or a link loop)"
            )
        raise FileNotFoundError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty (0 bytes)")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            decoded = _decode_tiff(path, max_pixels)
        else:
            decoded = _decode_with_pillow(path, max_pixels)
    except ImageReadError:
        raise
    except Exception as e:  # decoders raise many types (OSError, SyntaxError, zlib.error, ...)
        raise ImageReadError(
            f"cannot read image {path}: {type(e).__name__}: {e} "
            "(is the file corrupt, truncated or not an image?)"
        ) from e
    raw = _assemble(decoded.data, decoded.orientation, path)
    notes = list(decoded.notes)
    keep, profile = colour_plan(decoded.icc, raw.mode, raw.bit_depth, notes)
    raw.icc_profile, raw.icc_converted, raw.notes = keep, profile is not None, tuple(notes)
    return raw, profile


@dataclass
class _Decoded:
    """What a decoder gives: ``(H, W[, C])`` integer data, the EXIF orientation, the
    embedded ICC profile (bytes as stored, or ``None``) and notes."""

    data: np.ndarray
    orientation: int
    icc: bytes | None = None
    notes: list[str] = field(default_factory=list)


def _assemble(data: np.ndarray, orientation: int, path: Path) -> RawImage:
    """Split ``(H, W, C)`` integer data (C = 1..4) into RGB + alpha and orient it."""
    if data.ndim == 2:
        data = data[:, :, None]
    if data.dtype == np.bool_:
        data = data.astype(np.uint8) * 255
    if data.dtype == np.uint8:
        bit_depth = 8
    elif data.dtype == np.uint16:
        bit_depth = 16
    else:
        raise ImageReadError(
            f"cannot read image {path}: unsupported sample type {data.dtype} "
            "(only 8-bit and 16-bit integer images are supported)"
        )
    channels = data.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageReadError(f"cannot read image {path}: unsupported channel count {channels}")
    data = _apply_orientation(data, orientation)
    alpha = data[:, :, -1].copy() if channels in (2, 4) else None
    color = data[:, :, :1] if channels <= 2 else data[:, :, :3]
    mode = "gray" if channels <= 2 else "rgb"
    pixels = np.ascontiguousarray(np.repeat(color, 3, axis=2) if mode == "gray" else color)
    return RawImage(pixels=pixels, alpha=alpha, mode=mode, bit_depth=bit_depth, path=path)


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation ``1..8`` to ``(H, W, C)`` so the result is upright."""
    if orientation == 2:
        a = a[:, ::-1]
    elif orientation == 3:
        a = a[::-1, ::-1]
    elif orientation == 4:
        a = a[::-1]
    elif orientation == 5:
        a = a.transpose(1, 0, 2)
    elif orientation == 6:
        a = np.rot90(a, k=-1)
    elif orientation == 7:
        a = a[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        a = np.rot90(a, k=1)
    return np.ascontiguousarray(a)


def _png_header(path: Path) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` from a PNG's IHDR chunk, or ``None`` if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image file as its header declares it (nothing decoded;
    EXIF orientation is not applied).

    Raises:
        ImageReadError: the file is not a readable image.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        with _open_pillow(path) as im:
            return im.size[1], im.size[0]
    except Exception as e:
        raise ImageReadError(f"cannot read the size of {path}: {type(e).__name__}: {e}") from None


def _open_pillow(path: Path) -> Image.Image:
    """``Image.open`` (header only) with Pillow's decompression-bomb warning silenced and
    its error turned into :class:`ImageTooLargeError`: our ``max_pixels`` is the limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(
            f"image {path.name} is over Pillow's decompression-bomb limit ({e}); downscale it"
        ) from None


def _check_size(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image whose declared size is over ``max_pixels`` (before decoding)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"image {path.name} declares {width}x{height} pixels "
            f"({width * height / 1e6:.1f} megapixels), over the limit of "
            f"{max_pixels / 1e6:.1f} megapixels; downscale it or raise the limit "
            "(--max-pixels)"
        )


def _decode_with_pillow(path: Path, max_pixels: int | None) -> _Decoded:
    # Image.open reads the header only: the declared size is known before any decoding.
    # Pillow's own decompression-bomb guard warns above Image.MAX_IMAGE_PIXELS and refuses
    # above twice that; our limit is the one that speaks (its warning is silenced).
    with _open_pillow(path) as im:
        _check_size(path, *im.size, max_pixels)
        orientation = int(im.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        icc = im.info.get("icc_profile") or None  # PNG iCCP is read with the header
        notes = []
        frames = _frame_count(im)
        if frames > 1:
            notes.append(
                f"animated {im.format} with {frames} frames: only the first frame is "
                "restored (the output is a still image)"
            )
        if im.format == "PNG":
            header = _png_header(path)
            if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
                return _Decoded(_decode_png16(path), orientation, icc, notes)
        im.load()
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
        elif mode == "La":
            im = im.convert("LA")
        elif mode == "RGBa":
            im = im.convert("RGBA")
        elif mode == "CMYK":
            rgb = cmyk_to_srgb(np.asarray(im), 8, icc, notes)
            return _Decoded(rgb, orientation, None, notes)
        elif mode in ("RGBX", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "F":
            raise ImageReadError(
                f"cannot read image {path}: 32-bit float images are not supported; "
                "convert it to 8- or 16-bit"
            )
        data = np.asarray(im)
    if data.dtype.kind in "iu" and data.dtype not in (np.uint8, np.uint16):
        # Pillow's "I" (32-bit int) holds 16-bit gray images in some Pillow versions.
        if data.size and (data.min() < 0 or data.max() > 65535):
            raise ImageReadError(f"cannot read image {path}: 32-bit integer samples out of range")
        data = data.astype(np.uint16)
    elif data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("="))
    return _Decoded(data, orientation, icc, notes)


def _frame_count(im: Image.Image) -> int:
    """Frames of an animated GIF, WebP or PNG (1 for a still image). A camera JPEG read as
    MPO counts as one: its second image is a preview, not a frame."""
    if im.format == "MPO":
        return 1
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # counting walks the file; a damaged later frame is not our concern
        return 1


def _decode_png16(path: Path) -> np.ndarray:
    import png  # pypng

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = int(info["planes"])
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    if data.shape != (height, width * planes):
        raise ImageReadError(f"cannot read image {path}: truncated 16-bit PNG data")
    return data.reshape(height, width, planes)


def _decode_tiff(path: Path, max_pixels: int | None) -> _Decoded:
    import tifffile

    notes = []
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"cannot read image {path}: TIFF file holds no image")
        page = tif.pages[0]
        _check_size(path, int(page.imagewidth), int(page.imagelength), max_pixels)
        tag = page.tags.get(274)  # Orientation
        orientation = int(tag.value) if tag is not None else 1
        tag = page.tags.get(_TIFF_ICC_TAG)
        icc = bytes(tag.value) if tag is not None and tag.value else None
        cmyk = int(getattr(page, "photometric", 0)) == 5  # SEPARATED (inks, CMYK)
        data = page.asarray()
        planar_separate = getattr(page, "planarconfig", 1) == 2
        pages = len(tif.pages)
    if pages > 1:
        notes.append(
            f"TIFF with {pages} pages: only the first page is restored (the output has one page)"
        )
    if data.ndim == 3 and planar_separate and data.shape[0] in (1, 2, 3, 4, 5):
        data = data.transpose(1, 2, 0)
    if data.ndim not in (2, 3):
        raise ImageReadError(f"cannot read image {path}: unsupported TIFF shape {data.shape}")
    if data.dtype.kind == "u" and data.dtype.itemsize > 2 or data.dtype.kind in "fic":
        raise ImageReadError(
            f"cannot read image {path}: unsupported TIFF sample type {data.dtype} "
            "(only 8-bit and 16-bit unsigned integer images are supported)"
        )
    if cmyk and data.ndim == 3 and data.shape[2] in (4, 5):
        bits = 8 if data.dtype == np.uint8 else 16
        rgb = cmyk_to_srgb(np.ascontiguousarray(data[:, :, :4]), bits, icc, notes)
        data = np.concatenate([rgb, data[:, :, 4:]], axis=2)  # an alpha channel stays
        icc = None
    return _Decoded(np.ascontiguousarray(data), orientation, icc, notes)

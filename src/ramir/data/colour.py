"""ICC colour profiles: parse an image's embedded profile and convert its pixels to sRGB
and back (used by :mod:`ramir.data.read` and :mod:`ramir.data.write`; the docstring of
:mod:`ramir.data.read` says what reading and writing do with profiles).

* Matrix/TRC profiles (nearly all RGB and gray camera/editing profiles) are applied in
  float with the profile's own matrix and tone curves (16-bit precision kept).
* LUT-based RGB profiles and CMYK go through Pillow's :mod:`PIL.ImageCms` (littlecms).
* sRGB profiles are recognised (by their numbers, or by name for LUT ones) and not applied.
"""

from __future__ import annotations

import functools
import io
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Profile", "parse_profile", "colour_plan", "to_srgb", "from_srgb", "cmyk_to_srgb"]

# sRGB's primaries adapted to the ICC's D50 white (Bradford), as in the ICC sRGB profiles:
# linear sRGB -> PCS XYZ.
_SRGB_TO_XYZ_D50 = np.array(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)
_XYZ_D50_TO_SRGB = np.linalg.inv(_SRGB_TO_XYZ_D50)
_RELATIVE_COLORIMETRIC = 1  # littlecms rendering intents and flags (ImageCms takes ints)
_BLACK_POINT_COMPENSATION = 0x2000
_NO_CACHE = 0x0040  # no one-pixel cache: a transform may be used by several threads at once
_ROWS_PIXELS = 1 << 20  # float conversions run on blocks of about this many pixels


def _srgb_decode(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in ``[0, 1]`` -> linear light (IEC 61966-2.1)."""
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _srgb_encode(lin: np.ndarray) -> np.ndarray:
    """Linear light in ``[0, 1]`` -> sRGB-encoded values."""
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)


class _Curve:
    """A profile's tone curve (``curv`` or ``para`` tag): device value -> linear, and back.

    A parametric curve (a gamma is one) is ``(a x + b)^g + e`` for ``x >= d``, else
    ``c x + f`` (ICC function types 0-4), inverted exactly; a sampled curve is
    interpolated linearly and inverted by interpolating the other way.
    """

    def __init__(
        self, params: tuple[float, ...] | None = None, table: np.ndarray | None = None
    ) -> None:
        self.params = params
        self.table = table
        if params is not None:
            g, a = params[0], params[1]
            if not (g > 0 and a > 0):
                raise ValueError(f"unsupported parametric curve {params}")
        if table is not None:
            if table.size < 2 or table[-1] <= table[0]:
                raise ValueError("unsupported (decreasing or flat) curve table")
            self.grid = np.linspace(0.0, 1.0, table.size)
            self.rising = np.maximum.accumulate(table)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return np.interp(x, self.grid, self.table)
        g, a, b, c, d, e, f = self.params  # type: ignore[misc]
        power = np.maximum(a * x + b, 0.0) ** g + e
        return np.clip(np.where(x >= d, power, c * x + f), 0.0, 1.0)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        if self.table is not None:
            return np.interp(y, self.rising, self.grid)
        g, a, b, c, d, e, f = self.params  # type: ignore[misc]
        knee = max(a * d + b, 0.0) ** g + e
        high = (np.maximum(y - e, 0.0) ** (1.0 / g) - b) / a
        low = (y - f) / c if c > 0 else np.zeros_like(y)
        return np.clip(np.where(y >= knee, high, low), 0.0, 1.0)


_PARA_COUNTS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}


def _parse_curve(tag: bytes) -> _Curve:
    kind = tag[:4]
    if kind == b"curv":
        (count,) = struct.unpack_from(">I", tag, 8)
        if count == 0:
            return _Curve(params=(1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        if count == 1:
            (gamma,) = struct.unpack_from(">H", tag, 12)
            return _Curve(params=(gamma / 256.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0))
        table = np.frombuffer(tag, dtype=">u2", count=count, offset=12) / 65535.0
        return _Curve(table=table)
    if kind == b"para":
        (ftype,) = struct.unpack_from(">H", tag, 8)
        n = _PARA_COUNTS[ftype]
        v = [x / 65536.0 for x in struct.unpack_from(f">{n}i", tag, 12)]
        if ftype == 0:  # x^g
            params = (v[0], 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        elif ftype == 1:  # (ax + b)^g, 0 below -b/a
            params = (v[0], v[1], v[2], 0.0, -v[2] / v[1], 0.0, 0.0)
        elif ftype == 2:  # (ax + b)^g + c, c below -b/a
            params = (v[0], v[1], v[2], 0.0, -v[2] / v[1], v[3], v[3])
        elif ftype == 3:  # (ax + b)^g, cx below d
            params = (*v, 0.0, 0.0)
        else:
            params = tuple(v)
        return _Curve(params=params)  # type: ignore[arg-type]
    raise ValueError(f"unsupported curve type {kind!r}")


@dataclass(frozen=True, eq=False)
class Profile:
    """An embedded ICC profile as far as this module uses it.

    ``matrix`` (3x3, device-linear RGB -> PCS XYZ) and ``curves`` (3 for RGB, 1 for gray)
    are set for matrix/TRC profiles, applied in float; otherwise conversions go through
    littlecms (``cms``).
    """

    data: bytes
    space: str  # "RGB", "GRAY", "CMYK", ...
    description: str
    cms: object  # PIL.ImageCms.ImageCmsProfile
    matrix: np.ndarray | None
    curves: tuple[_Curve, ...] | None
    is_srgb: bool

    @property
    def name(self) -> str:
        return f"'{self.description}'" if self.description else "(unnamed)"


def _srgb_like(matrix: np.ndarray, curves: tuple[_Curve, ...]) -> bool:
    """A matrix/TRC profile that is sRGB to within what 8-bit files can show."""
    if not np.allclose(matrix, _SRGB_TO_XYZ_D50, atol=2e-3):
        return False
    x = np.linspace(0.0, 1.0, 1025)
    reference = _srgb_decode(x)
    return all(float(np.abs(c.forward(x) - reference).max()) < 2e-3 for c in curves)


@functools.lru_cache(maxsize=16)
def parse_profile(data: bytes) -> Profile:
    """Parse an ICC profile (cached on its bytes).

    Raises:
        ValueError: littlecms cannot parse it (the message says why).
    """
    from PIL import ImageCms

    if len(data) < 132 or data[36:40] != b"acsp":
        raise ValueError("not an ICC profile (no 'acsp' signature)")
    try:
        cms = ImageCms.ImageCmsProfile(io.BytesIO(data))
        description = ImageCms.getProfileDescription(cms).strip()
    except Exception as e:  # ImageCms.PyCMSError, OSError, ...
        raise ValueError(str(e) or type(e).__name__) from None
    space = data[16:20].decode("latin-1").strip()
    matrix, curves = None, None
    try:
        (count,) = struct.unpack_from(">I", data, 128)
        tags: dict[bytes, bytes] = {}
        for i in range(min(count, 200)):
            sig, offset, size = struct.unpack_from(">4sII", data, 132 + 12 * i)
            tags[sig] = data[offset : offset + size]
        if b"A2B0" not in tags and data[20:24] == b"XYZ ":  # littlecms prefers a LUT
            if space == "RGB":
                columns = [tags[t] for t in (b"rXYZ", b"gXYZ", b"bXYZ")]
                matrix = np.array(
                    [[v / 65536.0 for v in struct.unpack_from(">3i", c, 8)] for c in columns]
                ).T
                curves = tuple(_parse_curve(tags[t]) for t in (b"rTRC", b"gTRC", b"bTRC"))
                if abs(np.linalg.det(matrix)) < 1e-6:
                    matrix, curves = None, None
            elif space == "GRAY":
                curves = (_parse_curve(tags[b"kTRC"]),)
    except (KeyError, ValueError, struct.error, ZeroDivisionError):
        matrix, curves = None, None  # not a (readable) matrix/TRC profile: littlecms does it
    if space == "RGB":
        if matrix is not None and curves is not None:
            is_srgb = _srgb_like(matrix, curves)
        else:
            is_srgb = re.search(r"\bsRGB\b", description) is not None
    else:
        is_srgb = False
    return Profile(data, space, description, cms, matrix, curves, is_srgb)


def colour_plan(
    icc: bytes | None, mode: str, bit_depth: int, notes: list[str]
) -> tuple[bytes | None, Profile | None]:
    """What to do with an image's embedded profile: ``(profile to write back, profile to
    convert the pixels to sRGB through, or None)``; notes what is not done."""
    if not icc:
        return None, None
    try:
        profile = parse_profile(icc)
    except ValueError as e:
        notes.append(
            f"its colour profile cannot be read ({e}): the image is read as it is (as sRGB) "
            "and the output has no profile"
        )
        return None, None
    wanted = "GRAY" if mode == "gray" else "RGB"
    if profile.space != wanted:
        notes.append(
            f"its colour profile {profile.name} is for {profile.space or 'unknown'} images "
            f"but the image is {mode}: the profile is ignored (the output has none)"
        )
        return None, None
    if profile.is_srgb:
        return icc, None
    if profile.curves is not None:
        return icc, profile
    if bit_depth == 8 and profile.space == "RGB":
        try:
            _cms_transform(profile, True, "RGB")
        except Exception as e:  # ImageCms.PyCMSError: littlecms cannot use it
            notes.append(
                f"its colour profile {profile.name} cannot be applied ({e}): the image is "
                "read as it is (as sRGB) and the output has no profile"
            )
            return None, None
        return icc, profile
    why = "a gray LUT-based profile" if profile.space == "GRAY" else "16-bit, LUT-based profile"
    notes.append(
        f"its colour profile {profile.name} is not applied ({why}): restored in its own "
        "colour space, and the output keeps the profile"
    )
    return icc, None


@functools.lru_cache(maxsize=16)
def _cms_transform(profile: Profile, to_srgb: bool, in_mode: str) -> object:
    """A littlecms transform between ``profile`` and sRGB (relative colorimetric; black-
    point compensation for CMYK, whose black is not the screen's)."""
    from PIL import ImageCms

    srgb = ImageCms.createProfile("sRGB")
    flags = _NO_CACHE | (_BLACK_POINT_COMPENSATION if in_mode == "CMYK" else 0)
    src, dst = (profile.cms, srgb) if to_srgb else (srgb, profile.cms)
    return ImageCms.buildTransform(
        src,  # type: ignore[arg-type]
        dst,
        in_mode,
        "RGB",
        renderingIntent=_RELATIVE_COLORIMETRIC,  # type: ignore[arg-type]
        flags=flags,  # type: ignore[arg-type]
    )


def _by_rows(fn: Callable[[np.ndarray], np.ndarray], a: np.ndarray, channels: int) -> np.ndarray:
    """``fn`` applied to blocks of rows of ``(H, W, C)`` ``a`` (bounds the temporaries)."""
    h, w = a.shape[:2]
    out = np.empty((h, w, channels), np.float32)
    step = max(1, _ROWS_PIXELS // max(w, 1))
    for top in range(0, h, step):
        out[top : top + step] = fn(a[top : top + step])
    return out


def to_srgb(pixels: np.ndarray, bit_depth: int, profile: Profile) -> np.ndarray:
    """Integer ``(H, W, 3)`` pixels in ``profile``'s colour space -> float32 sRGB in [0, 1]
    (colours outside sRGB are clipped to its edge)."""
    maxval = 255 if bit_depth == 8 else 65535
    if profile.curves is None:  # LUT profile, 8-bit: littlecms
        from PIL import ImageCms

        im = ImageCms.applyTransform(
            Image.fromarray(pixels, "RGB"),
            _cms_transform(profile, True, "RGB"),  # type: ignore[arg-type]
        )
        return np.asarray(im, dtype=np.float32) / np.float32(255)
    grid = np.arange(maxval + 1) / maxval
    if profile.matrix is None:  # gray: one curve, gray -> Y -> sRGB gray
        lut = _srgb_encode(profile.curves[0].forward(grid)).astype(np.float32)
        return lut[pixels]
    luts = [c.forward(grid).astype(np.float32) for c in profile.curves]
    to_srgb = (_XYZ_D50_TO_SRGB @ profile.matrix).T.astype(np.float32)

    def block(p: np.ndarray) -> np.ndarray:
        lin = np.stack([luts[i][p[:, :, i]] for i in range(3)], axis=2)
        return _srgb_encode(lin @ to_srgb)

    return _by_rows(block, pixels, 3)


def from_srgb(color: np.ndarray, profile: Profile) -> np.ndarray:
    """Float sRGB ``(H, W, 3)`` (or gray ``(H, W, 1)``) -> float values in ``profile``'s
    colour space, the inverse of :func:`to_srgb`."""
    if profile.curves is None:  # LUT profile: littlecms, at 8 bits
        from PIL import ImageCms

        q = np.round(np.clip(color, 0.0, 1.0) * 255).astype(np.uint8)
        im = ImageCms.applyTransform(
            Image.fromarray(q, "RGB"),
            _cms_transform(profile, False, "RGB"),  # type: ignore[arg-type]
        )
        return np.asarray(im, dtype=np.float32) / np.float32(255)
    curves = profile.curves
    if profile.matrix is None:
        return _by_rows(lambda v: curves[0].inverse(_srgb_decode(v)), color, 1)
    from_srgb = (np.linalg.inv(profile.matrix) @ _SRGB_TO_XYZ_D50).T.astype(np.float32)

    def block(v: np.ndarray) -> np.ndarray:
        lin = np.clip(_srgb_decode(v) @ from_srgb, 0.0, 1.0)
        return np.stack([curves[i].inverse(lin[:, :, i]) for i in range(3)], axis=2)

    return _by_rows(block, color, 3)


def cmyk_to_srgb(
    cmyk: np.ndarray, bit_depth: int, icc: bytes | None, notes: list[str]
) -> np.ndarray:
    """``(H, W, 4)`` CMYK -> sRGB of the same dtype: through the embedded CMYK profile
    with littlecms (8-bit), else ``(1 - C)(1 - K)`` (Pillow's formula); notes which."""
    profile = None
    if icc:
        try:
            profile = parse_profile(icc)
        except ValueError:
            profile = None
    if profile is not None and profile.space == "CMYK" and bit_depth == 8:
        from PIL import ImageCms

        try:
            im = ImageCms.applyTransform(
                Image.fromarray(cmyk, "CMYK"),
                _cms_transform(profile, True, "CMYK"),  # type: ignore[arg-type]
            )
        except Exception:  # ImageCms.PyCMSError: littlecms cannot use it
            pass
        else:
            notes.append(
                f"CMYK image converted to RGB through its colour profile {profile.name}: "
                "the output is an RGB file"
            )
            return np.asarray(im)
    why = "no colour profile" if not icc else "its colour profile could not be used"
    if icc and bit_depth == 16:
        why = "16-bit CMYK, its colour profile is not applied"
    notes.append(
        f"CMYK image converted to RGB ({why}: a naive conversion, colours may differ "
        "from a colour-managed viewer's): the output is an RGB file"
    )
    maxval = 255.0 if bit_depth == 8 else 65535.0
    f = cmyk.astype(np.float32) / np.float32(maxval)
    rgb = (1.0 - f[:, :, :3]) * (1.0 - f[:, :, 3:])
    return np.round(rgb * maxval).astype(cmyk.dtype)

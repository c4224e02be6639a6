"""Batched JPEG: a tensor codec that reproduces Pillow's (libjpeg-turbo's) output bit for bit,
and Pillow itself, one sample at a time, for the CPU.

The tensor codec (:func:`jpeg_tensor`) follows what Pillow's default ``save(format="JPEG",
quality=q)`` and ``Image.open`` do with libjpeg-turbo, in integer arithmetic held exactly
in float64 tensors:

1. RGB -> YCbCr (BT.601 full range) with libjpeg's 16-bit fixed-point tables and
   rounding (``jccolor.c``);
2. 4:2:0 chroma subsampling, Pillow's default at every quality: 2x2 sums with the
   alternating 1, 2 rounding bias of ``h2v2_downsample``; edges padded by replication to
   whole blocks and MCUs as libjpeg pads them;
3. 8x8 forward DCT of level-shifted samples, the "islow" integer DCT (``jfdctint.c``,
   libjpeg's default): each pass is an integer linear map followed by a rounding shift,
   computed as a float64 matrix product (exact: every partial sum is an integer below
   2**53) and a floor;
4. quantisation with the standard luminance/chrominance tables scaled by quality as
   ``jpeg_set_quality(quality, force_baseline=TRUE)`` scales them (``(t * s + 50) //
   100`` clipped to [1, 255], ``s = 5000 // q`` below 50, ``200 - 2 q`` above), divided
   by libjpeg-turbo's reciprocal multiplication (``compute_reciprocal``, 16-bit);
5. dequantisation and the "islow" inverse DCT (``jidctint.c``) with its range limit;
6. "fancy" (triangular) chroma upsampling with its 3/4-1/4 weights and +8/+7 rounding
   (``h2v2_fancy_upsample``), edges replicated;
7. YCbCr -> RGB with libjpeg's fixed-point tables (``jdcolor.c``), clamped to 0..255.

Measured against Pillow 13.0 (libjpeg-turbo) on scikit-image's astronaut, coffee and
chelsea (crops of 128 x 128, 77 x 101 and 400 x 600) at quality 10, 20, 40, 60 and 90,
every quality 1..100 on noise images, and grayscale: **identical to Pillow's output,
every pixel (PSNR = inf)**; ``tests/test_degradations_device.py`` checks it. A different
libjpeg (IJG libjpeg 9's DCT-scaled upsampling, a non-SIMD libjpeg-turbo's 32-bit
reciprocals) may differ in a few levels; the tests would say so.

Speed (``benchmarks/bench_degradations.py``, batch 32 of 128 x 128, 1 and 2 CPU
threads, a shared 2-core machine): the tensor codec runs at 0.18-0.24x of Pillow per
sample on the CPU (about 300-600 against 1300-2600 samples/s), so ``backend="auto"``
(:func:`jpeg_backend`) uses Pillow on the CPU and the tensor codec on every other device,
where the batch stays on the device (no copy to the host and back; it needs float64, so
not Apple's MPS). Its CUDA speed was not measured here (no GPU): run the benchmark with
``--device cuda``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ramir.degradations.device._common import ParamValue, check_batch, draw_int

__all__ = [
    "STD_LUMINANCE",
    "STD_CHROMINANCE",
    "quant_table",
    "JpegDraws",
    "draw_jpeg",
    "jpeg_backend",
    "jpeg_tensor",
    "jpeg_pil",
    "render_jpeg",
    "jpeg",
]

Backend = Literal["auto", "tensor", "pil"]

# libjpeg's jcparam.c tables, natural (row-major) order
STD_LUMINANCE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip
STD_CHROMINANCE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32  # fmt: skip


def quant_table(quality: int, base: Sequence[int] = STD_LUMINANCE) -> list[int]:
    """libjpeg's ``jpeg_set_quality(quality, force_baseline=TRUE)`` scaling of ``base``."""
    q = min(max(int(quality), 1), 100)
    s = 5000 // q if q < 50 else 200 - 2 * q
    return [min(max((int(t) * s + 50) // 100, 1), 255) for t in base]


def _reciprocal(divisor: int) -> tuple[int, int, int]:
    """libjpeg-turbo's ``compute_reciprocal`` (16-bit ``DCTELEM``): ``(recip, corr, shift)``
    with ``q = ((|c| + corr) * recip) >> shift``."""
    b = divisor.bit_length() - 1
    r = 16 + b
    fq, fr = divmod(1 << r, divisor)
    c = divisor // 2
    if fr == 0:
        fq >>= 1
        r -= 1
    elif fr <= divisor // 2:
        c += 1
    else:
        fq += 1
    return fq, c, r


# islow DCT constants: FIX(x) = round(x * 2**13)
_C = {
    "0298": 2446, "0390": 3196, "0541": 4433, "0765": 6270, "0899": 7373, "1175": 9633,
    "1501": 12299, "1847": 15137, "1961": 16069, "2053": 16819, "2562": 20995, "3072": 25172,
}  # fmt: skip


def _odd_part(t0: int, t1: int, t2: int, t3: int) -> tuple[int, int, int, int]:
    """The rotations shared by ``jfdctint.c`` and ``jidctint.c`` (integer, no rounding)."""
    z1, z2, z3, z4 = t0 + t3, t1 + t2, t0 + t2, t1 + t3
    z5 = (z3 + z4) * _C["1175"]
    t0, t1, t2, t3 = t0 * _C["0298"], t1 * _C["2053"], t2 * _C["3072"], t3 * _C["1501"]
    z1, z2 = z1 * -_C["0899"], z2 * -_C["2562"]
    z3, z4 = z3 * -_C["1961"] + z5, z4 * -_C["0390"] + z5
    return t0 + z1 + z3, t1 + z2 + z4, t2 + z2 + z3, t3 + z1 + z4


def _fdct_linear(d: Sequence[int]) -> list[int]:
    """One pass of ``jpeg_fdct_islow`` before its rounding shift. The DC and 4th terms
    are pre-multiplied by ``2**13`` so that one shift (by 11 in pass 1, where they are
    ``<< 2``; by 15 in pass 2, where they are descaled by 2) serves all eight."""
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    out = [0] * 8
    out[0] = (t10 + t11) << 13
    out[4] = (t10 - t11) << 13
    z1 = (t12 + t13) * _C["0541"]
    out[2] = z1 + t13 * _C["0765"]
    out[6] = z1 - t12 * _C["1847"]
    out[7], out[5], out[3], out[1] = _odd_part(t4, t5, t6, t7)
    return out


def _idct_linear(d: Sequence[int]) -> list[int]:
    """One pass of ``jpeg_idct_islow`` before its rounding shift (by 11, then by 18)."""
    z1 = (d[2] + d[6]) * _C["0541"]
    t2 = z1 - d[6] * _C["1847"]
    t3 = z1 + d[2] * _C["0765"]
    t0, t1 = (d[0] + d[4]) << 13, (d[0] - d[4]) << 13
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


def _matrix(fn) -> torch.Tensor:
    """The integer matrix of the linear pass ``fn`` (rows: outputs, columns: inputs)."""
    cols = [fn([int(i == j) for i in range(8)]) for j in range(8)]
    return torch.tensor(cols, dtype=torch.float64).T.contiguous()


_FDCT = _matrix(_fdct_linear)
_IDCT = _matrix(_idct_linear)


@functools.lru_cache(maxsize=8)
def _tables(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(101, 2, 4, 8, 8)`` float64 tables by quality (row 0 unused), for luminance and
    chrominance: quantiser, reciprocal, correction, ``2**shift``; and the DCT matrices."""
    out = torch.zeros(101, 2, 4, 64, dtype=torch.float64)
    for q in range(1, 101):
        for ci, base in enumerate((STD_LUMINANCE, STD_CHROMINANCE)):
            qt = quant_table(q, base)
            rc = [_reciprocal(v * 8) for v in qt]
            out[q, ci, 0] = torch.tensor(qt, dtype=torch.float64)
            out[q, ci, 1] = torch.tensor([r[0] for r in rc], dtype=torch.float64)
            out[q, ci, 2] = torch.tensor([r[1] for r in rc], dtype=torch.float64)
            out[q, ci, 3] = torch.tensor([2.0 ** r[2] for r in rc], dtype=torch.float64)
    mats = torch.stack([_FDCT, _IDCT])
    return out.view(101, 2, 4, 8, 8).to(device), mats.to(device)


def _descale(x: torch.Tensor, n: int) -> torch.Tensor:
    """libjpeg's ``DESCALE(x, n) = (x + 2**(n-1)) >> n`` on exact float64 integers."""
    return torch.floor((x + float(1 << (n - 1))) * (1.0 / (1 << n)))


def _code_plane(p: torch.Tensor, tab: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Encode and decode one component: ``p`` ``(B, H, W)`` 0..255 integers (``H``, ``W``
    multiples of 8), ``tab`` ``(B, 4, 8, 8)``. Returns the decoded samples, 0..255."""
    b, h, w = p.shape
    blk = (p - 128.0).view(b, h // 8, 8, w // 8, 8).transpose(2, 3)
    fd, idc = mats[0], mats[1]
    coef = _descale(fd @ _descale(blk @ fd.T, 11), 15)  # rows, then columns
    t = tab[:, None, None]
    qv, recip, corr, scale = t[:, :, :, 0], t[:, :, :, 1], t[:, :, :, 2], t[:, :, :, 3]
    q = torch.sign(coef) * torch.floor((coef.abs() + corr) * recip / scale)
    ws = _descale(idc @ (q * qv), 11)  # columns, then rows
    v = _descale(ws @ idc.T, 18).long() & 1023
    # IDCT_range_limit: 0..127 -> +128, 128..511 -> 255, 512..895 -> 0, 896.. -> -896
    out = torch.where(v < 128, v + 128, torch.where(v < 512, 255, torch.where(v < 896, 0, v - 896)))
    return out.to(torch.float64).transpose(2, 3).reshape(b, h, w)


def _pad_to(p: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Replicate the last row/column of ``p`` ``(B, h0, w0)`` out to ``(B, h, w)``."""
    dh, dw = h - p.shape[1], w - p.shape[2]
    if dh == 0 and dw == 0:
        return p
    return F.pad(p[:, None], (0, dw, 0, dh), mode="replicate")[:, 0]


def _chroma(p: torch.Tensor, tab: torch.Tensor, mats: torch.Tensor, h: int, w: int):
    """Subsample 2x2, code, and fancy-upsample one chroma plane ``(B, h, w)``."""
    ch, cw = -(-h // 2), -(-w // 2)
    wc = -(-w // 16) * 8  # width_in_blocks * 8 of the chroma component
    hc = -(-ch // 8) * 8
    s = _pad_to(p, 2 * ch, 2 * wc).view(-1, ch, 2, wc, 2).sum((2, 4))
    bias = torch.arange(wc, device=p.device).remainder(2).to(torch.float64) + 1.0
    sub = torch.floor((s + bias) * 0.25)
    dec = _code_plane(_pad_to(sub, hc, wc), tab, mats)[:, :ch, :cw]
    up = torch.cat([dec[:, :1], dec[:, :-1]], 1)
    down = torch.cat([dec[:, 1:], dec[:, -1:]], 1)
    rows = torch.stack([3 * dec + up, 3 * dec + down], 2).reshape(-1, 2 * ch, cw)
    left = torch.cat([rows[:, :, :1], rows[:, :, :-1]], 2)
    right = torch.cat([rows[:, :, 1:], rows[:, :, -1:]], 2)
    even = torch.floor((3 * rows + left + 8) * 0.0625)
    odd = torch.floor((3 * rows + right + 7) * 0.0625)
    return torch.stack([even, odd], 3).reshape(-1, 2 * ch, 2 * cw)[:, :h, :w]


def jpeg_tensor(x: torch.Tensor, quality: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
    """JPEG-compress and decode a batch as Pillow does (see the module), on ``x``'s device.

    Args:
        x: ``(B, C, H, W)`` float in ``[0, 1]``, ``C`` = 3 (RGB, 4:2:0) or 1 (grayscale);
            rounded to 8 bits first, as :func:`ramir.degradations.jpeg`.
        quality: 1..100, one or one per sample.

    Returns:
        float32 ``(B, C, H, W)`` on 0..255 / 255 levels, bit-identical to Pillow's.
    """
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"jpeg: expected 1 or 3 channels, got {c}")
    qual = torch.as_tensor(quality, dtype=torch.long).reshape(-1).expand(b).to(x.device)
    tables, mats = _tables(str(x.device))
    tab = tables[qual.clamp(1, 100)]  # (B, 2, 4, 8, 8)
    u = torch.round(x.to(torch.float32).clamp(0.0, 1.0) * 255.0).to(torch.float64)
    hy, wy = -(-h // 8) * 8, -(-w // 8) * 8
    if c == 1:
        y = _code_plane(_pad_to(u[:, 0], hy, wy), tab[:, 0], mats)[:, :h, :w]
        return (y / 255.0).to(torch.float32)[:, None]
    r, g, bl = u[:, 0], u[:, 1], u[:, 2]
    one = 65536.0
    yy = torch.floor((19595 * r + 38470 * g + 7471 * bl + 32768) / one)
    cb = torch.floor((-11059 * r - 21709 * g + 32768 * bl + (128 * one + 32767)) / one)
    cr = torch.floor((32768 * r - 27439 * g - 5329 * bl + (128 * one + 32767)) / one)
    yd = _code_plane(_pad_to(yy, hy, wy), tab[:, 0], mats)[:, :h, :w]
    cbd = _chroma(cb, tab[:, 1], mats, h, w) - 128.0
    crd = _chroma(cr, tab[:, 1], mats, h, w) - 128.0
    rr = yd + torch.floor((91881 * crd + 32768) / one)
    gg = yd + torch.floor((-22554 * cbd - 46802 * crd + 32768) / one)
    bb = yd + torch.floor((116130 * cbd + 32768) / one)
    rgb = torch.stack([rr, gg, bb], 1).clamp(0.0, 255.0)
    return (rgb / 255.0).to(torch.float32)


def jpeg_pil(x: torch.Tensor, quality: torch.Tensor | Sequence[int] | int) -> torch.Tensor:
    """JPEG through Pillow, one sample at a time (what :func:`ramir.degradations.jpeg`
    does); ``x`` ``(B, C, H, W)`` float in ``[0, 1]``, ``C`` in {1, 3}; float32 out, on
    ``x``'s device."""
    b, c, h, w = x.shape
    if c not in (1, 3):
        raise ValueError(f"jpeg: expected 1 or 3 channels, got {c}")
    qual = torch.as_tensor(quality, dtype=torch.long).reshape(-1).expand(b).tolist()
    u8 = torch.round(x.detach().to(torch.float32).clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    arr = u8.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = np.empty_like(arr)
    for i in range(b):
        im = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i])  # uint8: L or RGB
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(qual[i]))
        buf.seek(0)
        with Image.open(buf) as dec:
            dec_arr = np.asarray(dec, dtype=np.uint8)
        out[i] = dec_arr[:, :, None] if c == 1 else dec_arr
    res = torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).contiguous()
    return res.to(torch.float32) / 255.0


def jpeg_backend(device: torch.device | str) -> Literal["tensor", "pil"]:
    """The measured choice: Pillow on the CPU (faster there), the tensor codec elsewhere."""
    return "pil" if torch.device(device).type == "cpu" else "tensor"


@dataclass
class JpegDraws:
    """``quality`` ``(B,)`` int64 in 1..100."""

    quality: torch.Tensor


def draw_jpeg(
    generator: torch.Generator,
    shape: Sequence[int],
    device: torch.device,
    *,
    quality: ParamValue = None,
    quality_range: Sequence[int] = (10, 90),
) -> JpegDraws:
    """Per sample an integer quality, uniform in ``quality_range`` (inclusive)."""
    q = draw_int(
        generator, int(shape[0]), quality, quality_range, "quality", device, bounds=(1, 100)
    )
    return JpegDraws(q)


def render_jpeg(x: torch.Tensor, d: JpegDraws, backend: Backend = "auto") -> torch.Tensor:
    """Compress each sample at its quality with ``backend`` (``auto``: :func:`jpeg_backend`)."""
    if backend == "auto":
        backend = jpeg_backend(x.device)
    if backend == "tensor":
        return jpeg_tensor(x, d.quality)
    if backend == "pil":
        return jpeg_pil(x, d.quality)
    raise ValueError(f"backend must be 'auto', 'tensor' or 'pil', got {backend!r}")


def jpeg(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    quality: ParamValue = None,
    quality_range: Sequence[int] = (10, 90),
) -> torch.Tensor:
    """JPEG compression at a quality drawn per sample (see :func:`ramir.degradations.jpeg`),
    identical to Pillow's output on every backend (see the module).

    ``x``: ``(B, C, H, W)`` float in ``[0, 1]``, ``C`` in {1, 3}; returns float32.
    """
    x = check_batch(x, "jpeg")
    d = draw_jpeg(generator, x.shape, x.device, quality=quality, quality_range=quality_range)
    return render_jpeg(x, d)

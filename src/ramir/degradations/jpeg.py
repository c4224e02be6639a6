"""JPEG compression artefacts (Pillow's libjpeg encoder, in memory)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from ramir.degradations._common import as_image, finish, pick_int

__all__ = ["jpeg"]


def jpeg(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    quality: int | None = None,
    quality_range: Sequence[int] = (10, 90),
) -> np.ndarray:
    """Encode as JPEG and decode again (8-bit, 4:2:0 chroma subsampling, libjpeg defaults).

    Args:
        quality: JPEG quality 1..100 (lower = blockier). ``None`` draws an integer uniformly
            from ``quality_range`` (inclusive). Reference code: ``[10, 90]``; paper:
            ``[20, 90]``; the LSDIR-JPEG test set: 50.
        quality_range: ``[low, high]`` for the draw.

    The image is rounded to 8 bits before encoding; 1- and 3-channel images are supported.
    The reference encodes with OpenCV (``cv2.imencode`` on BGR arrays); OpenCV converts
    BGR to YCbCr itself, so both paths encode the same colours, and at quality 10, 50 and
    90 Pillow's output on the RGB image is bit-identical to the reference's.
    """
    x = as_image(img, "jpeg")
    q = pick_int(rng, quality, quality_range, "quality", bounds=(1, 100))
    c = x.shape[2]
    if c not in (1, 3):
        raise ValueError(f"jpeg: expected 1 or 3 channels, got {c}")
    u8 = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    im = Image.fromarray(u8[:, :, 0] if c == 1 else u8, mode="L" if c == 1 else "RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as dec:
        out = np.asarray(dec, dtype=np.uint8)
    if c == 1:
        out = out[:, :, None]
    return finish(out.astype(np.float32) / np.float32(255.0))

"""Plain values that the library and the command line share.

This module imports nothing heavy (no PyTorch, NumPy or SciPy), so that the CLI can build
its parsers, and answer ``--help`` and ``--version``, without loading the library.
"""

from __future__ import annotations

ENSEMBLES: dict[str, tuple[tuple[int, bool], ...]] = {
    "none": ((0, False),),
    "flip": ((0, False), (0, True)),
    "x8": tuple((k, f) for f in (False, True) for k in range(4)),
}
"""Test-time self-ensembles: ``(quarter turns, mirror left-right)`` of each pass, by name."""

DEFAULT_OPSET = 17
"""ONNX opset of ``ramir export`` (scaled-dot-product attention and LayerNorm need 17)."""

WEB_MAX_PIXELS = 24_000_000
"""Largest image (width x height) the web app accepts."""

WEB_MAX_UPLOAD_MB = 50.0
"""Largest upload (MB) the web app accepts."""

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image (width x height) ``ramir restore`` decodes unless told otherwise: 100
megapixels (1.2 GB as float RGB), above the largest camera sensors."""

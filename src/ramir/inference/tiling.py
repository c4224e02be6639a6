"""Tiled inference: evenly laid, overlapping tiles blended without seams.

With ``tile=N`` an image is cut into overlapping ``N x N`` tiles laid out evenly over it;
each tile's output is weighted by a separable raised-cosine ramp over the overlap
(weights of two neighbours sum to one there, and are 1 elsewhere and at the image
borders), so there are no seams and memory stays bounded by the tile size: only one tile
at a time is on the compute device, the full-size input and output stay where the input
is (the CPU for files).

Tiles of one image all have the same size (the last tile of a row ends at the border, it
is not cut short), so ``batch_size`` of them can go through the network in one call
(:func:`ramir.inference.batching.apply_in_batches`). The whole image's pooled statistics
for every tile: :mod:`ramir.inference.context`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator

import torch

from ramir.errors import UsageError
from ramir.inference.batching import BatchSize, apply_in_batches, check_batch_size

__all__ = [
    "MAX_TILES",
    "MAX_OVERLAP_FRACTION",
    "check_tile_count",
    "check_tiling",
    "count_tiles",
    "tile_ramp",
    "tile_starts",
    "tiled_apply",
]

MAX_TILES = 100_000
"""Most tiles one image may be cut into. A 100-megapixel image (the largest ``ramir
restore`` reads by default) takes 441 tiles of 512 pixels, 12,100 of 128 and 97,969 of
32 without overlap; a plan of more is a mistake (a tile of a few pixels) that would run
for hours rather than a setting anyone wants."""

MAX_OVERLAP_FRACTION = 0.75
"""Largest overlap, as a fraction of the tile: beyond it each tile adds less than a
quarter of its side in new pixels and every pixel is computed more than 16 times
(``(tile / (tile - overlap))**2``) for no visible gain in blending."""


def check_tiling(
    tile: int, overlap: int, *, tile_name: str = "tile", overlap_name: str = "tile_overlap"
) -> None:
    """Refuse tile settings that cannot work or would waste most of the work.

    The tile must be positive, the overlap at least 0 and smaller than the tile, and at
    most :data:`MAX_OVERLAP_FRACTION` of it (so neighbouring tiles advance by at least a
    quarter tile). ``tile_name`` / ``overlap_name`` are how the message names the two
    settings (``--tile`` and ``--tile-overlap`` on the command line).

    Raises:
        UsageError: with what to change.
    """
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise UsageError(f"{tile_name} must be a positive number of pixels, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, numbers.Integral) or overlap < 0:
        raise UsageError(f"{overlap_name} must be >= 0 pixels, got {overlap!r}")
    largest = int(tile * MAX_OVERLAP_FRACTION)
    if tile <= overlap:
        raise UsageError(
            f"{tile_name} {tile} must be larger than {overlap_name} {overlap} (neighbouring "
            f"tiles overlap by {overlap_name} pixels); raise {tile_name} (512 is a good size) "
            f"or lower {overlap_name} (at most {largest} for {tile_name} {tile})"
        )
    if overlap > largest:
        stride = tile - overlap
        raise UsageError(
            f"{overlap_name} {overlap} is more than 3/4 of {tile_name} {tile}: each tile would "
            f"add only {stride} new pixel(s) and every pixel be computed about "
            f"{(tile / stride) ** 2:.0f} times; lower {overlap_name} to at most {largest} or "
            f"raise {tile_name} (512 is a good size)"
        )


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`tiled_apply` cuts a ``height x width`` image into."""
    th, tw = min(tile, height), min(tile, width)
    ys = tile_starts(height, th, min(overlap, th - 1))
    xs = tile_starts(width, tw, min(overlap, tw - 1))
    return len(ys) * len(xs)


def check_tile_count(
    height: int, width: int, tile: int, overlap: int, *, tile_name: str = "tile"
) -> int:
    """The tile count of a ``height x width`` image; refuses more than :data:`MAX_TILES`.

    Raises:
        UsageError: the plan has more than :data:`MAX_TILES` tiles.
    """
    n = count_tiles(height, width, tile, overlap)
    if n > MAX_TILES:
        raise UsageError(
            f"tiling a {width}x{height} image with {tile_name} {tile} (overlap {overlap}) "
            f"takes {n:,} tiles, more than the limit of {MAX_TILES:,}; raise {tile_name} "
            "(512 is a good size)"
        )
    return n


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` evenly.

    Uses the fewest tiles whose neighbours overlap by at least ``overlap`` pixels and
    spreads them evenly (first at 0, last at ``size - tile``). One tile if ``size <= tile``.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile_overlap must be in [0, tile), got {overlap} for tile {tile}")
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    last = size - tile
    return [round(i * last / (n - 1)) for i in range(n)]


def tile_ramp(length: int, ramp: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blending weights of one tile: ones, with raised-cosine ends of ``ramp`` pixels.

    ``w[i] = 0.5 - 0.5 cos(pi (i + 0.5) / ramp)`` for ``i < ramp`` when ``rise`` (a
    neighbour before), mirrored at the end when ``fall``; weights are strictly positive,
    and a falling and a rising ramp that overlap exactly sum to one.
    """
    w = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length // 2) if (rise and fall) else min(ramp, length)
    if ramp <= 0:
        return w
    i = torch.arange(ramp, dtype=torch.float64)
    up = (0.5 - 0.5 * torch.cos(math.pi * (i + 0.5) / ramp)).float()
    if rise:
        w[:ramp] = up
    if fall:
        w[length - ramp :] = torch.minimum(w[length - ramp :], up.flip(0))
    return w


def _tiles(
    h: int, w: int, tile: int, overlap: int
) -> Iterator[tuple[int, int, int, int, torch.Tensor, torch.Tensor]]:
    # A side shorter than the tile is one tile (so its overlap does not matter); the
    # overlap itself is smaller than the tile (check_tiling).
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, min(overlap, th - 1)), tile_starts(w, tw, min(overlap, tw - 1))
    for iy, y in enumerate(ys):
        wy = tile_ramp(th, overlap, rise=iy > 0, fall=iy < len(ys) - 1)
        for ix, x in enumerate(xs):
            wx = tile_ramp(tw, overlap, rise=ix > 0, fall=ix < len(xs) - 1)
            yield y, x, th, tw, wy, wx


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int = 32,
    *,
    device: torch.device | str | None = None,
    progress: bool | Callable[[int, int], None] = False,
    batch_size: BatchSize = 1,
) -> torch.Tensor:
    """Apply a size-preserving image function tile by tile with smooth blending.

    Args:
        fn: maps ``(B, C, h, w)`` on ``device`` to ``(B, C_out, h, w)``; with
            ``batch_size`` above 1 it gets ``k`` tiles at once, ``(k * B, C, h, w)``
            (tile-major: rows ``i * B .. (i + 1) * B`` are tile ``i``), and must treat
            every sample on its own.
        x: ``(B, C, H, W)``; stays on its device, tiles are moved to ``device``.
        tile: tile side in pixels (clipped to the image size).
        overlap: minimum overlap between neighbouring tiles, also the ramp length; at
            most 3/4 of ``tile`` (see :func:`check_tiling`).
        device: where ``fn`` runs (default: ``x``'s device).
        progress: ``True`` shows a tqdm bar over tiles; a callable is called as
            ``progress(done, total)`` after each batch of tiles (e.g. a web page's
            progress).
        batch_size: tiles per call of ``fn`` (see :func:`apply_in_batches`); the result
            equals one tile at a time to float rounding.

    Returns:
        ``(B, C_out, H, W)`` float32 on ``x``'s device.

    Raises:
        UsageError: ``tile`` / ``overlap`` fail :func:`check_tiling`, the image would
            take more than :data:`MAX_TILES` tiles, or ``batch_size`` is not a positive
            integer or ``"auto"``.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    check_tiling(tile, overlap)
    batch_size = check_batch_size(batch_size)
    device = torch.device(device) if device is not None else x.device
    b, _, h, w = x.shape
    check_tile_count(h, w, tile, overlap)
    tiles = list(_tiles(h, w, tile, overlap))
    out: torch.Tensor | None = None
    # The tiles form a grid, so the total weight is separable: sum_y(wy) x sum_x(wx).
    wsum_y = torch.zeros(h, dtype=torch.float32, device=x.device)
    wsum_x = torch.zeros(w, dtype=torch.float32, device=x.device)
    seen_y: set[int] = set()
    seen_x: set[int] = set()
    bar = None
    callback = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(tiles), desc="tiles", unit="tile", leave=False)

    def get(j: int) -> torch.Tensor:
        y, x0, th, tw, _, _ = tiles[j]
        return x[..., y : y + th, x0 : x0 + tw].to(device)

    def put(j: int, res: torch.Tensor) -> None:
        nonlocal out
        y, x0, th, tw, wy, wx = tiles[j]
        res = res.to(x.device, torch.float32)
        if out is None:
            out = torch.zeros(b, res.shape[1], h, w, dtype=torch.float32, device=x.device)
        wy_d, wx_d = wy.to(x.device), wx.to(x.device)
        out[..., y : y + th, x0 : x0 + tw] += res * (wy_d[:, None] * wx_d[None, :])
        if y not in seen_y:
            seen_y.add(y)
            wsum_y[y : y + th] += wy_d
        if x0 not in seen_x:
            seen_x.add(x0)
            wsum_x[x0 : x0 + tw] += wx_d

    def done(n: int) -> None:
        if bar is not None:
            bar.n = n
            bar.refresh()
        if callback is not None:
            callback(n, len(tiles))

    try:
        apply_in_batches(
            fn, len(tiles), get, put, batch_size=batch_size, device=device, progress=done
        )
    finally:
        if bar is not None:
            bar.close()
    assert out is not None
    return out.div_(wsum_y[:, None] * wsum_x[None, :])

"""Tiled inference: evenly laid, overlapping tiles blended without seams, and the
whole image's pooled statistics replayed in every tile (global context).

With ``tile=N`` an image is cut into overlapping ``N x N`` tiles laid out evenly over it;
each tile's output is weighted by a separable raised-cosine ramp over the overlap
(weights of two neighbours sum to one there, and are 1 elsewhere and at the image
borders), so there are no seams and memory stays bounded by the tile size: only one tile
at a time is on the compute device, the full-size input and output stay where the input
is (the CPU for files).

Global context: networks with global average pooling (NAFNet's channel attention,
PromptIR's prompt weights) decide *what* to restore from statistics of the whole input,
so a tile alone can be misjudged (a tile of shadows looks like a low-light image and gets
brightened). :class:`GlobalContext` records those pooled statistics in a first pass over
the whole image, downscaled to at most :data:`CONTEXT_PIXELS`, and replays them in every
tile: tiled results then follow the whole-image ones.

Batches: tiles of one image all have the same size (the last tile of a row ends at the
border, it is not cut short), so ``batch_size`` of them can go through the network in
one call (:func:`apply_in_batches`): outputs equal one tile at a time to float rounding.
``"auto"`` measures the first tile's memory on a GPU and fills about half of what is
free (at most :data:`MAX_AUTO_BATCH`); on a CPU it is 1, where a batch is no faster (the
README's figures, ``benchmarks/bench_restore.py``). A batch that runs out of GPU memory is
split in two and retried.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from ramir.errors import UsageError

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_MEMORY_FRACTION",
    "BatchSize",
    "CONTEXT_PIXELS",
    "MAX_AUTO_BATCH",
    "MAX_TILES",
    "GlobalContext",
    "apply_in_batches",
    "check_batch_size",
    "check_tiling",
    "check_tile_count",
    "context_image",
    "count_tiles",
    "global_pooling_layers",
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

CONTEXT_PIXELS = 512 * 512
"""Largest size (pixels) of the downscaled whole image whose pooled statistics the tiles
reuse (``global_context``); smaller images are used as they are. A larger context brings
the tiles no closer to the whole-image result (the README's figures) while its pass needs
memory in proportion to its area."""


BatchSize = int | Literal["auto"]
"""Tiles (or images) per call of the network: a positive number, or ``"auto"``."""

MAX_AUTO_BATCH = 32
"""Largest batch ``batch_size="auto"`` picks: beyond it a GPU is already busy."""

AUTO_MEMORY_FRACTION = 0.5
"""Share of the free GPU memory an ``"auto"`` batch may fill (measured on its first tile,
so the rest is margin for fragmentation and the blending buffers)."""


def check_batch_size(batch_size: object, name: str = "batch_size") -> BatchSize:
    """``batch_size`` if it is a positive integer or ``"auto"``.

    Raises:
        UsageError: anything else, naming ``name``.
    """
    if batch_size == "auto":
        return "auto"
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise UsageError(f"{name} must be a positive integer or 'auto', got {batch_size!r}")
    if batch_size < 1:
        raise UsageError(f"{name} must be >= 1 (or 'auto'), got {batch_size}")
    return int(batch_size)


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and (
        "out of memory" in text or "not enough memory" in text or "can't allocate" in text
    )


def _fits(peak: int, free: int) -> int:
    """How many parts of ``peak`` bytes each fit in :data:`AUTO_MEMORY_FRACTION` of
    ``free``, between 1 and :data:`MAX_AUTO_BATCH`."""
    if peak <= 0:
        return MAX_AUTO_BATCH
    return max(1, min(MAX_AUTO_BATCH, int(AUTO_MEMORY_FRACTION * free // peak)))


def apply_in_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    count: int,
    get: Callable[[int], torch.Tensor],
    put: Callable[[int, torch.Tensor], None],
    *,
    batch_size: BatchSize = 1,
    device: torch.device | str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run ``fn`` over ``count`` same-shape parts, ``batch_size`` of them per call.

    Args:
        fn: maps a batch ``(k * b, C, h, w)`` to ``(k * b, C_out, h, w)``, each sample on
            its own (no statistics across the batch).
        count: how many parts.
        get: ``get(j)`` is part ``j``, ``(b, C, h, w)`` (every part the same shape), on
            ``device``; called just before its batch runs, so parts need not all exist
            at once.
        put: ``put(j, out)`` receives part ``j``'s output ``(b, C_out, h, w)``.
        batch_size: parts per call; ``"auto"`` on CUDA runs the first part alone,
            measures its peak memory and fills :data:`AUTO_MEMORY_FRACTION` of the
            free memory (at most :data:`MAX_AUTO_BATCH`); ``"auto"`` elsewhere is 1. A
            batch that runs out of memory is halved and retried (a single part that
            does raises).
        device: where ``fn`` runs (for ``"auto"``).
        progress: called with the number of parts done after each batch.

    Returns:
        The batch size in use at the end (after ``"auto"`` and any halving).
    """
    batch_size = check_batch_size(batch_size)
    device = torch.device(device) if device is not None else torch.device("cpu")
    auto = batch_size == "auto" and device.type == "cuda"
    size = 1 if batch_size == "auto" else batch_size
    j = 0
    while j < count:
        k = min(size, count - j)
        probe = auto and j == 0
        free = base = 0
        if probe:
            torch.cuda.synchronize(device)
            free = torch.cuda.mem_get_info(device)[0]
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        try:
            batch = get(j) if k == 1 else torch.cat([get(j + i) for i in range(k)])
            out = fn(batch)
        except (RuntimeError, MemoryError) as e:
            if k == 1 or not _is_out_of_memory(e):
                raise
            batch = out = None  # type: ignore[assignment]
            if device.type == "cuda":
                torch.cuda.empty_cache()
            size = max(1, (k + 1) // 2)
            log.warning("a batch of %d ran out of memory; retrying with %d", k, size)
            continue
        if probe:
            peak = torch.cuda.max_memory_allocated(device) - base
            size = _fits(peak, free)
            log.debug("batch_size auto: %d (%.0f MB per part)", size, peak / 2**20)
        b = out.shape[0] // k
        for i in range(k):
            put(j + i, out[i * b : (i + 1) * b])
        del batch, out
        j += k
        if progress is not None:
            progress(j)
    return size


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


def global_pooling_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that average over the whole input (``AdaptiveAvgPool2d(1)``)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))
    ]


class GlobalContext:
    """Records the outputs of global-pooling layers, then replays them.

    After ``start("record", key)`` the pooled outputs of the next forward pass are stored
    under ``key`` (one list per layer, in call order); after ``start("replay", key)``
    each layer returns its stored output instead of pooling its (tile's) input; a batch of
    ``k`` tiles of the recorded images (``k * B`` samples, tile-major) gets it repeated
    ``k`` times. ``close()`` removes the hooks.
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        self.store: dict[tuple[object, int], list[torch.Tensor]] = {}
        self.mode: Literal["record", "replay"] = "record"
        self.key: object = None
        self.calls: dict[int, int] = {}
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> object:
        slot = (self.key, id(module))
        if self.mode == "record":
            self.store.setdefault(slot, []).append(output.detach())
            return None
        n = self.calls.get(id(module), 0)
        self.calls[id(module)] = n + 1
        stored = self.store[slot][n].to(output.device, output.dtype)
        repeats = output.shape[0] // max(1, stored.shape[0])
        if repeats > 1 and repeats * stored.shape[0] == output.shape[0]:
            # a batch of k tiles (tile-major, see tiled_apply): each gets its image's
            stored = stored.repeat(repeats, *([1] * (stored.dim() - 1)))
        return stored

    def start(self, mode: Literal["record", "replay"], key: object) -> None:
        self.mode, self.key, self.calls = mode, key, {}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def context_image(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """``x`` downscaled (area-averaged) to at most ``max_pixels``; ``x`` if small enough."""
    h, w = x.shape[-2:]
    if h * w <= max_pixels:
        return x
    scale = math.sqrt(max_pixels / (h * w))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    return torch.nn.functional.interpolate(x.float(), size=size, mode="area")

"""Window geometry of Swin attention: partitions, shift masks and the fast path's plans.

Pure index/mask arithmetic on ``(B, H, W, C)`` grids, shared by the layers of
:mod:`ramir.models.swin`: the relative-position index of a window, window partition and
its inverse, the official additive mask of shifted windows, the window size/shift rule
for a training size, and :class:`WindowPlan` (one cached ``index_select`` that does the
cyclic shift and the partition at once, windows grouped by shift-mask pattern).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

__all__ = [
    "SHIFT_MASK_VALUE",
    "WindowPlan",
    "relative_position_index",
    "shift_attention_mask",
    "swin_window",
    "window_partition",
    "window_plan",
    "window_reverse",
]

# Value of masked-out logits in shifted-window attention (the official code's choice).
SHIFT_MASK_VALUE = -100.0


def relative_position_index(window_size: int) -> torch.Tensor:
    """``(N, N)`` long index into the ``((2*ws-1)**2, heads)`` relative-position table.

    ``N = window_size**2``; entry ``[i, j]`` encodes the offset of token ``i`` from token
    ``j`` (row offset major), as in Swin/SwinIR.
    """
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window_size, device="cpu"),  # also when building on "meta"
            torch.arange(window_size, device="cpu"),
            indexing="ij",
        )
    ).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws, ws, C)`` windows in raster order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, c)


def window_reverse(
    windows: torch.Tensor, window_size: int, height: int, width: int
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws, ws, C)`` -> ``(B, H, W, C)``."""
    nh, nw = height // window_size, width // window_size
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, -1)


def _shift_regions(height: int, width: int, window_size: int, shift: int) -> torch.Tensor:
    """``(H, W)`` region ids of the cyclically shifted image (official slicing)."""

    def ids(n: int) -> torch.Tensor:
        r = torch.zeros(n, dtype=torch.long)
        r[max(n - window_size, 0) :] = 1
        r[n - shift :] = 2
        return r

    return ids(height)[:, None] * 3 + ids(width)[None, :]


def shift_attention_mask(
    height: int,
    width: int,
    window_size: int,
    shift: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(nW, N, N)`` additive mask of shifted-window attention: 0 within a region, -100
    between tokens that were not neighbours before the cyclic shift (official values).

    ``height`` and ``width`` must be multiples of ``window_size``; windows in raster order.
    """
    regions = _shift_regions(height, width, window_size, shift)
    win = window_partition(regions[None, :, :, None], window_size).flatten(1)  # nW, N
    diff = win[:, None, :] != win[:, :, None]
    mask = torch.zeros(diff.shape, dtype=dtype, device=device)
    return mask.masked_fill_(diff.to(device), SHIFT_MASK_VALUE)


@dataclass(frozen=True)
class WindowPlan:
    """How the fast path lays out the windows of a ``(B, H, W)`` token grid.

    Attributes:
        gather: ``(B*H*W,)`` long; ``tokens.view(B*H*W, C)[gather]`` gives the tokens of
            the cyclically shifted image in window order, windows sorted by group.
        scatter: inverse permutation of ``gather``.
        groups: ``(start, end)`` window ranges (in units of windows) of each group.
        patterns: ``(n_groups, N, N)`` additive shift mask of each group, or ``None``
            entries for groups that need no mask (all windows of an unshifted block and
            interior windows of a shifted one).
    """

    gather: torch.Tensor
    scatter: torch.Tensor
    groups: tuple[tuple[int, int], ...]
    patterns: tuple[torch.Tensor | None, ...]
    key: tuple


def window_plan(
    batch: int, height: int, width: int, window_size: int, shift: int, device: torch.device
) -> WindowPlan:
    """The cached :class:`WindowPlan` for one input geometry (see the class docstring).

    Windows are grouped by whether they are in the last window row and/or the last window
    column: with a cyclic shift only those windows mix image regions, and all windows of
    a group share one mask pattern (checked here). Plans are built outside inference mode
    so a plan first made under ``torch.inference_mode()`` also serves autograd later.
    """
    with torch.inference_mode(False):
        return _window_plan(batch, height, width, window_size, shift, torch.device(device))


@functools.lru_cache(maxsize=32)
def _window_plan(
    batch: int, height: int, width: int, window_size: int, shift: int, device: torch.device
) -> WindowPlan:
    ws = window_size
    nh, nw = height // ws, width // ws
    # Source index (in the unshifted image) of each position of the shifted image.
    rows = (torch.arange(height) + shift) % height
    cols = (torch.arange(width) + shift) % width
    src = (rows[:, None] * width + cols[None, :])[None, :, :, None]  # 1, H, W, 1
    win_src = window_partition(src, ws).flatten(1)  # nW, N (positions in one image)
    wi = torch.arange(nh)[:, None].expand(nh, nw).reshape(-1)
    wj = torch.arange(nw)[None, :].expand(nh, nw).reshape(-1)
    if shift > 0:
        kind = (wi == nh - 1).long() * 2 + (wj == nw - 1).long()
        masks = shift_attention_mask(height, width, ws, shift)
    else:
        kind = torch.zeros(nh * nw, dtype=torch.long)
        masks = None
    offsets = torch.arange(batch)[:, None] * (height * width)  # B, 1
    gathers, groups, patterns = [], [], []
    start = 0
    for k in kind.unique(sorted=True).tolist():
        sel = (kind == k).nonzero().squeeze(1)
        # (B, n_sel, N) -> batch-major inside the group.
        gathers.append((win_src[sel][None] + offsets[:, :, None]).reshape(-1))
        n = batch * sel.numel()
        groups.append((start, start + n))
        start += n
        pattern = None
        if masks is not None:
            group_masks = masks[sel]
            if not bool((group_masks == group_masks[:1]).all()):  # pragma: no cover
                raise AssertionError("windows of one group have different shift masks")
            if bool((group_masks[0] != 0).any()):
                pattern = group_masks[0].to(device)
        patterns.append(pattern)
    gather = torch.cat(gathers)
    scatter = torch.empty_like(gather)
    scatter[gather] = torch.arange(gather.numel())
    return WindowPlan(
        gather=gather.to(device),
        scatter=scatter.to(device),
        groups=tuple(groups),
        patterns=tuple(patterns),
        key=(batch, height, width, ws, shift, str(device)),
    )


def swin_window(img_hw: tuple[int, int], window_size: int) -> tuple[int, int]:
    """``(window, shift)`` for a training size: the official rule is that a training size
    no larger than the window disables shifting and shrinks the window to that size."""
    if min(img_hw) <= window_size:
        return min(img_hw), 0
    return window_size, window_size // 2

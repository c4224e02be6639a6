"""The shared plan of an evaluation run: per test set, its images, their sizes and the
batches of same-size whole images that the ranks share out by pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ramir.evaluation.config import EvalConfig

if TYPE_CHECKING:
    from ramir.data.testsets import PairedTestSet
    from ramir.distributed import DistInfo

__all__ = ["WorkPlan", "item_size", "pixels", "plan_work"]


@dataclass
class WorkPlan:
    """The shared plan of a run: per set, its image count, keys, sizes and batches."""

    counts: dict[str, int]
    keys: dict[str, list[str]]
    sizes: dict[str, list[tuple[int, int] | None]]
    """``(H, W)`` of each image, ``None`` where its file headers could not be read."""
    groups: dict[str, list[list[int]]]
    """Image indices batched together (same size, each restored whole)."""


def item_size(ts: PairedTestSet, i: int) -> tuple[int, int] | None:
    """``(H, W)`` of test item ``i`` from its files' headers (``None`` if unreadable)."""
    from ramir.data.read import ImageReadError, image_size

    pair = ts.source.pairs[i]
    try:
        h, w = image_size(pair.gt)
        if pair.lq is not None:
            lh, lw = image_size(pair.lq)
            h, w = min(h, lh), min(w, lw)
    except (ImageReadError, OSError):
        return None
    if ts.center_crop:
        h, w = min(h, ts.center_crop), min(w, ts.center_crop)
    return h, w


def pixels(size: tuple[int, int] | None) -> float:
    """An image's cost when sharing work out: its pixels (1 when its size is unknown)."""
    return float(size[0] * size[1]) if size is not None else 1.0


def plan_work(
    test_sets: dict[str, PairedTestSet], cfg: EvalConfig, cap: int, info: DistInfo
) -> WorkPlan:
    """Rank 0 reads the image sizes and groups same-size whole images (at most ``cap``
    per batch); every rank checks that it sees the same test sets (else an error on
    every rank)."""
    from ramir.distributed import agree, all_gather_objects, broadcast_object
    from ramir.inference.sharding import group_same_size

    counts = {name: min(len(ts), cfg.max_images or len(ts)) for name, ts in test_sets.items()}
    keys = {name: ts.keys()[: counts[name]] for name, ts in test_sets.items()}
    seen = all_gather_objects(keys, info)

    def check() -> None:
        for rank, other in enumerate(seen):
            for name in keys:
                if other[name] != seen[0][name]:
                    raise ValueError(
                        f"test set {name!r}: rank {rank} sees {len(other[name])} images and rank "
                        f"0 sees {len(seen[0][name])} (or other files); every machine of the run "
                        "must see the same data (a shared folder, or identical copies)"
                    )

    agree(check, info)
    sizes: dict[str, list[tuple[int, int] | None]] = {}
    if info.is_main:
        sizes = {
            name: [item_size(ts, i) for i in range(counts[name])] for name, ts in test_sets.items()
        }
    sizes = broadcast_object(sizes, info)
    groups = {}
    for name, sz in sizes.items():
        whole = [cfg.tile is None or (s is not None and max(s) <= cfg.tile) for s in sz]
        groups[name] = group_same_size(sz, whole, cap)
    return WorkPlan(counts, keys, sizes, groups)

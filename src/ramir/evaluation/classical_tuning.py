"""Tuning the classical restorers: a grid search of each setting on validation pairs.

:func:`tune` restores every ``(degraded, clean)`` pair of each task at every point of a
method's grid (:func:`grid_points`) and records the PSNR gain over the degraded input;
:class:`TuneResult` picks the best point per task and the one best over all tasks
together. ``benchmarks/tune_classical.py`` runs it on the validation photos and writes
the settings file :mod:`ramir.evaluation.classical_settings` reads.

Images are numpy RGB ``(H, W, 3)`` float in ``[0, 1]``, as for
:func:`ramir.evaluation.classical.restore_classical`.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ramir.evaluation.classical import Settings, get_method, restore_classical

__all__ = ["grid_points", "TuneResult", "tune"]


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[Settings]:
    """Every combination of the grid's values, in a fixed order (the first setting
    varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


@dataclass
class TuneResult:
    """What :func:`tune` measured for one method.

    Attributes:
        method: the method's name.
        points: the grid's settings, in search order.
        gains: task -> per grid point, the per-image PSNR gains over the input (dB).
        seconds: mean seconds per image over the search.
    """

    method: str
    points: list[Settings]
    gains: dict[str, list[list[float]]] = field(default_factory=dict)
    seconds: float = math.nan

    def mean_gain(self, task: str, i: int) -> float:
        return statistics.fmean(self.gains[task][i])

    def best(self, task: str) -> tuple[Settings, float, float]:
        """``(settings, mean gain, worst gain)`` of the best point for ``task`` (the
        first in search order on ties)."""
        means = [self.mean_gain(task, i) for i in range(len(self.points))]
        i = max(range(len(means)), key=lambda k: (means[k], -k))
        return dict(self.points[i]), means[i], min(self.gains[task][i])

    def best_all_tasks(self) -> tuple[Settings, float]:
        """``(settings, mean over tasks of the mean gain)`` of the one point best over
        all tasks together."""
        tasks = list(self.gains)
        means = [
            statistics.fmean(self.mean_gain(t, i) for t in tasks) for i in range(len(self.points))
        ]
        i = max(range(len(means)), key=lambda k: (means[k], -k))
        return dict(self.points[i]), means[i]


def tune(
    method: str,
    tasks: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray]]],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    convention: str = "ram",
    fixed: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TuneResult:
    """Grid-search ``method``'s setting on each task: the mean PSNR gain over the input.

    Args:
        method: a name of :data:`ramir.evaluation.classical.METHODS`.
        tasks: task -> ``(degraded, clean)`` pairs, RGB ``(H, W, 3)`` float in [0, 1]
            (validation photos: never the photos the results are reported on).
        grid: candidate values per setting (default: the method's grid).
        convention: the metric convention (:mod:`ramir.evaluation.metrics`).
        fixed: settings held fixed over the grid (e.g. ``{profile: np}``).
        progress: called with 1 after each restored image.

    Returns:
        A :class:`TuneResult` (deterministic: same inputs, same choice).
    """
    import time

    from ramir.evaluation.metrics import get_convention, psnr

    m = get_method(method)
    points = [m.settings({**(fixed or {}), **p}) for p in grid_points(grid or m.grid)]
    result = TuneResult(method, points)
    total, n = 0.0, 0

    conv = get_convention(convention)

    def measure(img: np.ndarray, gt: np.ndarray) -> float:
        a = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        b = torch.from_numpy(np.ascontiguousarray(gt)).permute(2, 0, 1)
        kw = dict(crop_border=conv.crop_border, y_channel=conv.y_channel)
        return float(psnr(a, b, **kw, quantize=conv.quantize))

    for task, pairs in tasks.items():
        pairs = list(pairs)
        base = [measure(lq, gt) for lq, gt in pairs]
        result.gains[task] = []
        for p in points:
            gains = []
            for (lq, gt), ref in zip(pairs, base, strict=True):
                t0 = time.perf_counter()
                out = restore_classical(lq, method, p)
                total += time.perf_counter() - t0
                n += 1
                gains.append(measure(out, gt) - ref)
                if progress is not None:
                    progress(1)
            result.gains[task].append(gains)
    result.seconds = total / n if n else math.nan
    return result

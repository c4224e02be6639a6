"""A classical method's row of an evaluation run: its settings per test set (or why it
is skipped), its cache headers (the method, its settings and its libraries' versions)
and its images, each restored by :func:`ramir.evaluation.classical.restore_tensor` and
timed."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from ramir.config import to_dict
from ramir.evaluation.cache import CACHE_VERSION
from ramir.evaluation.config import EvalConfig, ModelSpec
from ramir.evaluation.rows import RowResults, RunContext, run_row

__all__ = ["ClassicalSettings", "classical_items", "plan_classical", "run_classical_row"]

log = logging.getLogger(__name__)

ClassicalSettings = dict[str, dict[str, dict[str, Any] | None]]
"""Per classical row, per test set: the settings it runs with (``None``: not run)."""


def plan_classical(cfg: EvalConfig) -> tuple[ClassicalSettings, dict[str, str]]:
    """The settings of every classical row of ``cfg`` per test set (a bad settings file
    fails here, before any work), and ``{row: why}`` for the rows skipped because an
    optional library is missing (each logged as a warning)."""
    from ramir.evaluation.classical import unavailable
    from ramir.evaluation.classical_settings import settings_per_set

    per_row: ClassicalSettings = {}
    skipped: dict[str, str] = {}
    for mspec in cfg.models:
        if mspec.classical is None:
            continue
        why = unavailable(mspec.classical)
        if why:
            skipped[mspec.name] = why
            log.warning("row %s skipped: %s", mspec.name, why)
            continue
        per_row[mspec.name] = settings_per_set(
            mspec.classical,
            mspec.settings,
            {spec.name: (spec.degradation, spec.params) for spec in cfg.data.test},
        )
    return per_row, skipped


def classical_items(
    method: str, settings: dict[str, Any] | None, group: list[int], items: list[dict[str, Any]]
) -> list[tuple[int, torch.Tensor, float]]:
    """``(index, (1, 3, H, W) prediction in [0, 1], seconds)`` of classical ``method``
    on each item."""
    from ramir.evaluation.classical import restore_tensor

    out = []
    for i, item in zip(group, items, strict=True):
        t0 = time.perf_counter()
        pred = restore_tensor(item["lq"][None], method, settings)
        out.append((i, pred, time.perf_counter() - t0))
    return out


def run_classical_row(
    ctx: RunContext,
    results: RowResults,
    mspec: ModelSpec,
    per_set: dict[str, dict[str, Any] | None],
) -> None:
    """Measure classical row ``mspec`` on the sets where it has settings (``per_set``,
    from :func:`plan_classical`) and that its ``sets`` allow."""
    from ramir.evaluation.classical import library_versions

    method = mspec.classical
    assert method is not None
    versions = library_versions(method)
    headers = {
        set_name: {
            "version": CACHE_VERSION,
            "classical": method,
            "classical_settings": per_set[set_name],
            "libraries": versions,
            "conventions": [c.to_dict() for c in ctx.conventions],
            "test_set": to_dict(ctx.specs[set_name]),
            "data_seed": ctx.cfg.data.seed,
        }
        for set_name in ctx.test_sets
        if per_set[set_name] is not None and (mspec.sets is None or set_name in mspec.sets)
    }

    def restore(
        set_name: str, group: list[int], items: list[dict[str, Any]]
    ) -> list[tuple[int, torch.Tensor, float]]:
        return classical_items(method, per_set[set_name], group, items)

    run_row(ctx, results, mspec.name, mspec.every, headers, restore)

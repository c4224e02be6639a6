"""The rows of an evaluation run: what every row shares, the input row, and the loop
that measures one row (a model's or a classical method's) over its share of the images.

A row is measured set by set from its cache (:mod:`ramir.evaluation.cache`): the images
not measured yet are batched as the plan says (:mod:`ramir.evaluation.plan`), balanced
over the ranks by pixels, restored by the row's own function
(:mod:`ramir.evaluation.model_rows`, :mod:`ramir.evaluation.classical_rows`) and
appended to the cache as they come; rank 0 then merges the ranks' caches, and every rank
ends with the same values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ramir.evaluation.benchmark import INPUT_ROW
from ramir.evaluation.cache import ResultCache, finite, load_float, safe_name
from ramir.evaluation.config import EvalConfig
from ramir.evaluation.metrics import Convention, compute_metrics
from ramir.evaluation.plan import WorkPlan, pixels

if TYPE_CHECKING:
    from ramir.data.config import DatasetSpec
    from ramir.data.testsets import PairedTestSet
    from ramir.distributed import DistInfo

__all__ = ["RestoreBatch", "RowResults", "RunContext", "run_input_row", "run_row"]

RestoreBatch = Callable[
    [str, list[int], list[dict[str, Any]]], list[tuple[int, torch.Tensor, float]]
]
"""``(set name, image indices, test items) -> [(index, (1, 3, H, W) prediction in [0, 1],
seconds)]``: how a row restores one batch of a set."""


@dataclass
class RunContext:
    """What every row of a run shares: the settings, this process's place, the test
    sets and their plan, the progress bar."""

    cfg: EvalConfig
    info: DistInfo
    device: torch.device
    run_dir: Path
    restart: bool
    conventions: list[Convention]
    test_sets: dict[str, PairedTestSet]
    specs: dict[str, DatasetSpec]
    column_of: dict[str, str]
    """Each test set's table column (its group, else its own name)."""
    work: WorkPlan
    bar: Any = None
    """A tqdm bar on rank 0 (``None`` without progress)."""

    @property
    def ahead(self) -> int:
        """Test items read ahead of the one restored (overlapped reading on CUDA)."""
        return 1 if self.device.type == "cuda" else 0

    def grow_bar(self, n: int) -> None:
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def measure(self, pred: torch.Tensor, gt: torch.Tensor) -> dict[str, dict[str, Any]]:
        """``{convention: {"psnr", "ssim"}}`` of one ``(1, 3, H, W)`` prediction in
        ``[0, 1]`` against its ground truth (an infinite PSNR as ``"inf"``)."""
        out = {}
        for conv in self.conventions:
            m = compute_metrics(pred, gt, conv, y_channel=self.cfg.y_channel)
            out[conv.name] = {"psnr": finite(float(m["psnr"][0])), "ssim": float(m["ssim"][0])}
        return out


@dataclass
class RowResults:
    """What the rows measured, gathered on every rank."""

    values: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = field(default_factory=dict)
    """Per row -> per convention -> per set -> ``[(psnr, ssim)]`` in image order."""
    per_image: list[dict[str, Any]] = field(default_factory=list)
    """One ``per_image.csv`` row per row and image."""
    seconds: dict[str, list[float]] = field(default_factory=dict)
    """Per row, the seconds each of its images took when it was restored."""
    computed: int = 0
    """Images restored in this call."""
    expected: int = 0
    """Images of every row run (computed or from the cache)."""

    def start(self, name: str, conventions: list[Convention]) -> None:
        """An empty entry for row ``name`` (also for a row that is then skipped)."""
        self.values[name] = {c.name: {} for c in conventions}
        self.seconds[name] = []

    def add(
        self,
        ctx: RunContext,
        name: str,
        set_name: str,
        records: dict[str, dict[str, Any]],
        every: int = 1,
    ) -> None:
        """Row ``name``'s records of set ``set_name`` (every ``every``-th image)."""
        for key in ctx.work.keys[set_name][::every]:
            rec = records[key]
            for conv in ctx.conventions:
                v = rec[conv.name]
                self.values[name][conv.name].setdefault(set_name, []).append(
                    (load_float(v["psnr"]), float(v["ssim"]))
                )
            self.per_image.append(
                {
                    "model": name,
                    "set": set_name,
                    "column": ctx.column_of[set_name],
                    "key": key,
                    **{
                        f"{c.name} {k}": rec[c.name][k]
                        for c in ctx.conventions
                        for k in ("psnr", "ssim")
                    },
                }
            )


def run_input_row(ctx: RunContext, results: RowResults) -> None:
    """The degraded inputs' own PSNR/SSIM (row ``INPUT_ROW``), shared over the ranks by
    pixels; not cached (it costs a read per image)."""
    from ramir.distributed import all_gather_objects
    from ramir.inference.sharding import balance, prefetch

    info, work = ctx.info, ctx.work
    results.values[INPUT_ROW] = {c.name: {} for c in ctx.conventions}
    items = [(s, i) for s in ctx.test_sets for i in range(work.counts[s])]
    share = balance([pixels(work.sizes[s][i]) for s, i in items], info.world_size)
    mine = [items[k] for k in share[info.rank]]
    ctx.grow_bar(len(mine))
    got: dict[tuple[str, int], dict[str, Any]] = {}
    for (s, i), item, error in prefetch(
        lambda si: ctx.test_sets[si[0]][si[1]], mine, ahead=ctx.ahead
    ):
        if error is not None:
            raise error
        assert item is not None
        got[(s, i)] = ctx.measure(item["lq"][None], item["gt"][None])
        if ctx.bar is not None:
            ctx.bar.update(1)
    for part in all_gather_objects(got, info):
        got.update(part)
    for s in ctx.test_sets:
        results.add(
            ctx,
            INPUT_ROW,
            s,
            {k: {"key": k, **got[(s, i)]} for i, k in enumerate(work.keys[s])},
        )


def run_row(
    ctx: RunContext,
    results: RowResults,
    name: str,
    every: int,
    headers: dict[str, dict[str, Any]],
    restore: RestoreBatch,
) -> None:
    """Measure row ``name`` on the sets of ``headers`` (``{set: its cache header}``),
    every ``every``-th image of each; ``restore`` restores a batch.

    Every rank reads the caches; the batches with an image not measured yet are
    balanced over the ranks; each rank restores its batches and appends the results to
    its cache; then every rank gathers all results and rank 0 merges the caches.
    """
    from ramir.data.write import write_image
    from ramir.distributed import agree, all_gather_objects, barrier
    from ramir.inference.sharding import balance, prefetch

    info, work, bar = ctx.info, ctx.work, ctx.bar
    folder = ctx.run_dir / "per_image" / safe_name(name)
    caches = {s: ResultCache(folder, s, header, info) for s, header in headers.items()}
    row_sets = list(caches)
    # the row's images: every `every`-th of each set
    groups = {
        s: [g for g in ([i for i in g if i % every == 0] for g in work.groups[s]) if g]
        for s in row_sets
    }
    n_row = {s: len(work.keys[s][::every]) for s in row_sets}
    results.expected += sum(n_row.values())

    def read_caches() -> dict[str, dict[str, Any]]:
        folder.mkdir(parents=True, exist_ok=True)
        return {s: c.read(ctx.restart) for s, c in caches.items()}

    if not info.distributed:
        known = read_caches()
    else:
        known = {s: {} for s in row_sets}
        for part in all_gather_objects(agree(read_caches, info), info):
            for s, recs in part.items():
                for key, rec in recs.items():
                    known[s].setdefault(key, rec)
        had = all_gather_objects({s: c.had_parts for s, c in caches.items()}, info)
        for s, c in caches.items():
            c.had_parts = any(h[s] for h in had)
    for s, c in caches.items():
        c.start(ctx.restart, len(known[s]))
    barrier(info)

    # the batches with an image not measured yet, balanced over the ranks
    units = [
        (s, group)
        for s in row_sets
        for group in groups[s]
        if any(work.keys[s][i] not in known[s] for i in group)
    ]
    costs = [sum(pixels(work.sizes[s][i]) for i in g) for s, g in units]
    mine_units = [units[k] for k in balance(costs, info.world_size)[info.rank]]
    todo = sum(1 for s, g in mine_units for i in g if work.keys[s][i] not in known[s])
    if not info.distributed and bar is not None:
        row_total = sum(n_row.values())
        ctx.grow_bar(row_total)
        bar.update(row_total - todo)
    else:
        ctx.grow_bar(todo)
    new: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in row_sets}
    handles = {}
    try:
        for (s, group), items, error in prefetch(
            lambda u: [ctx.test_sets[u[0]][i] for i in u[1]], mine_units, ahead=ctx.ahead
        ):
            if error is not None:
                raise error
            assert items is not None
            restored = restore(s, group, items)
            if s not in handles:
                handles[s] = caches[s].open()
            fh = handles[s]
            for i, pred, took in restored:
                key = work.keys[s][i]
                if key in known[s]:
                    continue  # restored again only because its batch was
                item = items[group.index(i)]
                rec = {
                    "key": key,
                    "index": i,
                    **ctx.measure(pred, item["gt"][None]),
                    "seconds": took,
                }
                if ctx.cfg.save_images:
                    out = ctx.run_dir / "images" / safe_name(name) / safe_name(s) / f"{key}.png"
                    write_image(out, pred[0])
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                new[s][key] = rec
                if bar is not None:
                    bar.update(1)
    finally:
        for fh in handles.values():
            fh.close()
    for part in all_gather_objects(new, info):
        for s, recs in part.items():
            results.computed += len(recs)
            known[s].update(recs)
    for s, c in caches.items():
        c.merge(known[s])
    barrier(info)
    for c in caches.values():
        c.drop_own()
    barrier(info)  # every rank's own file is gone before rank 0 removes the folder
    for s, c in caches.items():
        c.clean()
        results.add(ctx, name, s, known[s], every)
        results.seconds[name] += [
            float(known[s][k]["seconds"]) for k in work.keys[s][::every] if "seconds" in known[s][k]
        ]

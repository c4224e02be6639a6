"""Run checkpoints over test sets and write the tables (``ramir evaluate``).

Layout of a run folder ``<output_dir>/<name>/``::

    config.yaml                  the resolved config
    table.md / table.csv / table.json
                                 one table per metric convention, with published rows
    per_image.csv                every image's PSNR/SSIM under every convention
    gains.md                     with ``input_row``: per-image gains over the input
                                 (mean/worst) and clean-input medians/worst cases
    per_image/<model>/<set>.jsonl
                                 the resumable cache: a header line with what the values
                                 depend on, then one line per image
    images/<model>/<set>/<key>.png   restored images (``save_images: true``)

Resuming: images already in a set's ``.jsonl`` are not recomputed. If the checkpoint
(its SHA-256), the inference settings or the test-set definition changed since, the run
stops with an error instead of mixing results (``restart=True`` recomputes).

This module is the driver; the parts are :mod:`ramir.evaluation.plan` (the images and
their batches), :mod:`ramir.evaluation.cache` (the per-image files),
:mod:`ramir.evaluation.rows` with :mod:`~ramir.evaluation.model_rows` and
:mod:`~ramir.evaluation.classical_rows` (measuring the rows) and
:mod:`ramir.evaluation.report` (the tables and files written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ramir.config import save_config
from ramir.evaluation.benchmark import Table
from ramir.evaluation.classical_rows import plan_classical, run_classical_row
from ramir.evaluation.config import EvalConfig
from ramir.evaluation.metrics import get_convention
from ramir.evaluation.model_rows import run_model_row
from ramir.evaluation.plan import plan_work
from ramir.evaluation.report import build_tables, write_report
from ramir.evaluation.rows import RowResults, RunContext, run_input_row

if TYPE_CHECKING:
    from ramir.distributed import DistInfo

__all__ = ["EvalResult", "evaluate"]


@dataclass
class EvalResult:
    """What :func:`evaluate` produced."""

    run_dir: Path
    tables: list[Table]
    paths: dict[str, Path]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    computed: int = 0
    """Images restored in this call (the rest came from the cache)."""
    reused: int = 0
    set_tables: list[Table] = field(default_factory=list)
    """The test sets of grouped columns, each in its own column (``sets.md``), as the
    official release reports them (Rain100L, Rain100H, ... beside ``Rain13k-Test``)."""


def evaluate(
    cfg: EvalConfig,
    *,
    progress: bool = True,
    restart: bool = False,
    load_model: Callable[..., torch.nn.Module] | None = None,
    dist: DistInfo | None = None,
) -> EvalResult:
    """Evaluate every model of ``cfg`` on every test set; write tables and per-image results.

    Args:
        cfg: the run settings (see :class:`EvalConfig`).
        progress: tqdm progress bars.
        restart: ignore and overwrite cached per-image results.
        load_model: ``(checkpoint, arch=..., map_location=...) -> model`` (default
            :func:`ramir.checkpoint.load_model`).
        dist: this process's place in a ``torchrun`` job
            (:func:`ramir.distributed.init_distributed`; its device is used): every
            rank measures its share of the images (balanced by pixels) and keeps them
            in its own cache file, rank 0 gathers them, merges the caches and writes
            the tables, exactly as one process would. ``None``: one process on
            ``cfg.device``.

    Returns:
        An :class:`EvalResult` with the tables and the paths written (the same on every
        rank; only rank 0 writes the tables).
    """
    from ramir.checkpoint import load_model as default_loader
    from ramir.data.testsets import build_test_set
    from ramir.distributed import SINGLE, agree
    from ramir.inference.batching import MAX_AUTO_BATCH
    from ramir.runtime import resolve_device

    info = dist or SINGLE
    loader = load_model or default_loader
    device = info.device if dist is not None else resolve_device(cfg.device)
    if cfg.half and device.type != "cuda":
        raise ValueError("half: true needs a CUDA device")
    run_dir = cfg.run_dir()

    def prepare() -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        if info.is_main:
            save_config(cfg, run_dir / "config.yaml")

    agree(prepare, info)
    conventions = [get_convention(c) for c in cfg.conventions]

    # Build (scan) every test set first, so a missing dataset fails before any work.
    test_sets = agree(
        lambda: {spec.name: build_test_set(spec, cfg.data) for spec in cfg.data.test}, info
    )
    if cfg.batch_size == "auto":
        cap = MAX_AUTO_BATCH if device.type == "cuda" else 1
    else:
        cap = int(cfg.batch_size)
    ctx = RunContext(
        cfg=cfg,
        info=info,
        device=device,
        run_dir=run_dir,
        restart=restart,
        conventions=conventions,
        test_sets=test_sets,
        specs={spec.name: spec for spec in cfg.data.test},
        column_of={spec.name: spec.group or spec.name for spec in cfg.data.test},
        work=plan_work(test_sets, cfg, cap, info),
    )
    if progress and info.is_main:
        from tqdm import tqdm

        desc = "evaluating" if not info.distributed else f"evaluating (rank 0 of {info.world_size})"
        ctx.bar = tqdm(total=0, desc=desc, unit="img")

    # Classical rows: their settings per set (a bad settings file fails before any work),
    # or why they are skipped (a missing optional library).
    classical, skipped = plan_classical(cfg)

    # every model file is there before the first image is restored (a typo in the last
    # row must not cost the time of the rows before it)
    missing = [
        m.name
        for m in cfg.models
        if m.classical is None and not Path(m.checkpoint).expanduser().is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"checkpoint not found for model(s) {', '.join(map(repr, missing))}: fix the "
            "`checkpoint:` paths in the evaluation config (nothing was evaluated)"
        )
    results = RowResults()
    try:
        if cfg.input_row:
            run_input_row(ctx, results)
        for mspec in cfg.models:
            results.start(mspec.name, ctx.conventions)
            if mspec.classical is None:
                run_model_row(ctx, results, mspec, loader)
            elif mspec.name not in skipped:
                run_classical_row(ctx, results, mspec, classical[mspec.name])
    finally:
        if ctx.bar is not None:
            ctx.bar.close()

    tables, set_tables = build_tables(ctx, results, classical, skipped)
    paths = write_report(ctx, tables, set_tables, results.per_image)
    return EvalResult(
        run_dir,
        tables,
        paths,
        results.per_image,
        results.computed,
        results.expected - results.computed,
        set_tables,
    )

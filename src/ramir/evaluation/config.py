"""Typed config of ``ramir evaluate``: models x test sets -> tables.

>>> cfg = from_dict(EvalConfig, {
...     "models": [{"name": "mine", "checkpoint": "model.safetensors"}],
...     "data": {"test": [{"name": "noise_s25", "layout": "skimage_photos",
...                        "options": {"split": "test"}, "degradation": "gaussian_noise",
...                        "params": {"sigma": 25.0}}]}})
>>> cfg.conventions
['ram']

Recipes: ``configs/eval/*.yaml`` (the paper's 7-task protocol, the 3- and 5-task
protocols of the field, Table 2's noise levels, Table 6's out-of-distribution noises,
and a synthetic set on any clean folder).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramir.config import from_dict
from ramir.data.config import DataConfig, load_with_data_config
from ramir.evaluation.benchmark import AVERAGE, INPUT_ROW, PUBLISHED_TABLES, load_paper_tables
from ramir.evaluation.metrics import CONVENTIONS
from ramir.inference.restore import ensemble_passes
from ramir.inference.tiling import check_tiling

__all__ = ["ModelSpec", "EvalConfig", "load_eval_config"]


@dataclass
class ModelSpec:
    """One model (a table row): a checkpoint, or a classical restorer.

    Attributes:
        name: the row label (unique).
        checkpoint: a ramir ``.safetensors`` file or an official ``.pth`` (not with
            ``classical``).
        classical: instead of a checkpoint, a classical method of
            :mod:`ramir.evaluation.classical` (``bm3d``, ``nlm``, ``wavelet``, ``tv``,
            ``unsharp``...), measured on the same sets with the same metrics. Without
            its optional library the row is skipped with a note.
        settings: a classical row's settings: ``tuned`` (the settings chosen on the
            validation photos, shipped in the package; ``benchmarks/tune_classical.py``
            writes them) or the path of such a file: each test set named in it gets its
            tuned setting, a clean-input set the method's ``all_tasks`` setting, other
            sets are not run; or a mapping ``{test-set name: {setting: value}}`` where
            ``"*"`` covers the sets not named (sets not covered are not run); ``None``:
            the method's defaults on the sets it is a tool for and on clean-input sets.
        sets: run this row on these test sets only (names; default: all), e.g. a slow
            classical method on the tasks it is compared on.
        every: run this row on every N-th image of each set only (in the set's order;
            default 1: all), e.g. a method that takes seconds per image; its cells then
            average those images (``n_images`` in ``table.json``).
    """

    name: str
    checkpoint: str = ""
    arch: str | None = None
    ensemble: str = "none"
    model_args: dict[str, Any] = field(default_factory=dict)
    classical: str | None = None
    settings: str | dict[str, dict[str, Any]] | None = None
    sets: list[str] | None = None
    every: int = 1

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"model name {self.name!r} must be non-empty and contain no '/'")
        if self.every < 1:
            raise ValueError(f"model {self.name!r}: every must be >= 1, got {self.every}")
        if self.classical is not None:
            from ramir.evaluation.classical import get_method

            if self.checkpoint:
                raise ValueError(
                    f"model {self.name!r}: give either checkpoint or classical, not both"
                )
            try:
                get_method(self.classical)
            except KeyError as e:  # UnknownNameError: lists the choices
                raise ValueError(f"model {self.name!r}: {e}") from None
            if self.ensemble != "none" or self.arch or self.model_args:
                raise ValueError(
                    f"model {self.name!r}: arch, ensemble and model_args are for "
                    "checkpoints, not for a classical row"
                )
            return
        if not self.checkpoint:
            raise ValueError(
                f"model {self.name!r}: give a checkpoint (or classical: a classical method)"
            )
        if self.settings is not None:
            raise ValueError(f"model {self.name!r}: settings are for classical rows only")
        try:
            ensemble_passes(self.ensemble)
        except ValueError as e:
            raise ValueError(f"model {self.name!r}: {e}") from None


@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        name: the run's name (folder under ``output_dir`` and table heading).
        output_dir: where the run folder goes.
        models: the models to evaluate (rows).
        data: the test sets in ``data.test`` (columns: a set's ``group`` or its
            ``name``), their roots (``data.root_dir``, ``data.clean_test_root``) and
            seed. Training entries (``data.datasets``) are ignored.
        columns: column order (default: order of first appearance in ``data.test``).
        average_columns: the columns ``Average`` is taken over (default: all), e.g. the
            seven tasks, leaving out a clean-input column.
        input_row: add a first row ``input (no restoration)``: the degraded inputs
            measured against their targets (on a clean-input set, ``inf``), the
            reference that gains are counted from.
        conventions: metric conventions, one table each (``ram``, ``promptir``).
        y_channel: measure PSNR/SSIM on the Y channel instead of RGB.
        tile / tile_overlap: tiled inference (``None``: whole images); the overlap is
            smaller than the tile and at most 3/4 of it
            (:func:`ramir.inference.tiling.check_tiling`).
        global_context: with ``tile``, the tiles reuse the whole image's global-pooling
            statistics (see :mod:`ramir.inference.restore`); ``false`` for each tile's own.
        batch_size: tiles of an image, or whole images of one size, per network call
            (``auto``: from the GPU's free memory, 1 on a CPU); results equal one at a
            time to float rounding, and do not depend on the number of processes.
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``...
        half: float16 autocast (CUDA only).
        save_images: also write the restored images (PNG, 8-bit).
        max_images: use only the first N images of each set (quick runs).
        published: paper tables whose rows are shown beside ours (``table1_seven_tasks``,
            ``table2_gaussian_denoising_psnr``, ``table6_finetune_ratio_psnr``).
        published_rows: keep only these published rows (default: all).
    """

    models: list[ModelSpec] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    name: str = "eval"
    output_dir: str = "runs/eval"
    columns: list[str] | None = None
    average_columns: list[str] | None = None
    input_row: bool = False
    conventions: list[str] = field(default_factory=lambda: ["ram"])
    y_channel: bool = False
    tile: int | None = None
    tile_overlap: int = 32
    global_context: bool = True
    batch_size: int | Literal["auto"] = "auto"
    device: str = "auto"
    half: bool = False
    save_images: bool = False
    max_images: int | None = None
    published: list[str] = field(default_factory=list)
    published_rows: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("'models' is empty: list at least one {name, checkpoint}")
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate model name(s): {', '.join(dup)}")
        if self.input_row and INPUT_ROW in names:
            raise ValueError(f"model name {INPUT_ROW!r} is taken by the input row; rename it")
        if not self.data.test:
            raise ValueError("'data.test' is empty: list at least one test set")
        set_names = [spec.name for spec in self.data.test]
        for m in self.models:
            unknown = [s for s in m.sets or [] if s not in set_names]
            if unknown or m.sets == []:
                raise ValueError(
                    f"model {m.name!r}: sets must name test sets ({', '.join(set_names)}); "
                    f"got {m.sets}"
                )
        if not self.name or "/" in self.name:
            raise ValueError(f"run name {self.name!r} must be non-empty and contain no '/'")
        for c in self.conventions:
            if c not in CONVENTIONS:
                raise ValueError(
                    f"unknown metric convention {c!r}; choose from: {', '.join(CONVENTIONS)}"
                )
        if not self.conventions:
            raise ValueError("'conventions' is empty: choose from " + ", ".join(CONVENTIONS))
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be >= 1 or null, got {self.tile}")
        if self.tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {self.tile_overlap}")
        if self.tile is not None:  # before any model is loaded
            check_tiling(self.tile, self.tile_overlap)
        if self.batch_size != "auto" and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or auto, got {self.batch_size}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1 or null, got {self.max_images}")
        derived = self.derived_columns()
        if self.columns is not None:
            if sorted(self.columns) != sorted(derived) or len(set(self.columns)) != len(
                self.columns
            ):
                raise ValueError(
                    f"'columns' must list each test-set column once: {', '.join(derived)}"
                )
        if self.average_columns is not None:
            unknown = [c for c in self.average_columns if c not in derived]
            if unknown or not self.average_columns:
                raise ValueError(
                    f"average_columns must name test-set columns ({', '.join(derived)}); "
                    f"got {self.average_columns}"
                )
        if AVERAGE in derived:
            raise ValueError(f"{AVERAGE!r} is reserved for the average column")
        for t in self.published:
            if t not in PUBLISHED_TABLES:
                raise ValueError(
                    f"unknown published table {t!r}; choose from: {', '.join(PUBLISHED_TABLES)}"
                )
        if self.published_rows is not None:
            tables = load_paper_tables()
            known = {r for t in self.published for r in tables[t]["rows"]}
            unknown = [r for r in self.published_rows if r not in known]
            if unknown:
                raise ValueError(
                    f"published_rows {', '.join(unknown)} are not rows of "
                    f"{', '.join(self.published) or '(no published table)'}; "
                    f"rows: {', '.join(sorted(known))}"
                )

    def derived_columns(self) -> list[str]:
        cols: list[str] = []
        for spec in self.data.test:
            col = spec.group or spec.name
            if col not in cols:
                cols.append(col)
        return cols

    def column_order(self) -> list[str]:
        """The table's test-set columns (``Average`` excluded)."""
        return list(self.columns) if self.columns is not None else self.derived_columns()

    def run_dir(self) -> Path:
        return Path(os.path.expanduser(self.output_dir)) / self.name


def load_eval_config(
    path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()
) -> EvalConfig:
    """Load an :class:`EvalConfig` from YAML with ``key=value`` overrides.

    Besides ``base:`` includes, an evaluation file may say ``data_config: FILE`` to take
    its ``data:`` section from a data recipe (e.g. ``../data/7task.yaml``; relative to
    the evaluation file, else to the current directory); keys under ``data:`` in the
    evaluation file (and ``data.*`` overrides) are merged on top.
    """
    raw, source = load_with_data_config(path, overrides)
    return from_dict(EvalConfig, raw, source)

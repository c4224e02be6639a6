"""What an evaluation run writes from its measured rows: the tables (one per metric
convention, with their notes and the published rows), the set-by-set tables of grouped
columns, ``gains.md`` and ``per_image.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from ramir.evaluation.benchmark import (
    INPUT_ROW,
    Row,
    Table,
    aggregate,
    published_rows,
    write_tables,
)
from ramir.evaluation.classical_rows import ClassicalSettings
from ramir.evaluation.config import EvalConfig
from ramir.evaluation.metrics import Convention
from ramir.evaluation.rows import RowResults, RunContext

__all__ = ["build_tables", "classical_notes", "write_report"]

Values = dict[str, dict[str, dict[str, list[tuple[float, float]]]]]


def build_tables(
    ctx: RunContext,
    results: RowResults,
    classical: ClassicalSettings,
    skipped: dict[str, str],
) -> tuple[list[Table], list[Table]]:
    """The run's tables, one per convention, and (where a column groups several sets)
    the set-by-set tables, one per convention."""
    cfg, work, column_of = ctx.cfg, ctx.work, ctx.column_of
    values = results.values
    columns = cfg.column_order()
    tables, set_tables = [], []
    grouped = [name for name in ctx.specs if column_of[name] != name]
    for conv in ctx.conventions:
        table = Table(
            title=f"{cfg.name} — {conv.name} convention",
            columns=[*columns, "Average"],
            convention=conv,
        )
        if cfg.input_row:
            cells = aggregate(values[INPUT_ROW][conv.name], column_of, columns, cfg.average_columns)
            table.rows.append(Row(INPUT_ROW, "ours", cells, source="the degraded inputs"))
        for mspec in cfg.models:
            cells = aggregate(
                values[mspec.name][conv.name], column_of, columns, cfg.average_columns
            )
            source = (
                str(mspec.checkpoint)
                if mspec.classical is None
                else f"classical: {mspec.classical}"
                + (f" ({mspec.settings})" if isinstance(mspec.settings, str) else "")
            )
            took = results.seconds.get(mspec.name) or []
            table.rows.append(
                Row(
                    mspec.name,
                    "ours",
                    cells,
                    source=source,
                    seconds=sum(took) / len(took) if took else None,
                )
            )
        for t in cfg.published:
            table.rows += published_rows(t, table.columns, cfg.published_rows)
        sizes = ", ".join(
            f"{name} ({work.counts[name]} images"
            + (f", in column {column_of[name]}" if column_of[name] != name else "")
            + ")"
            for name in ctx.test_sets
        )
        table.notes.append(f"Test sets: {sizes}.")
        over = (
            "the columns"
            if cfg.average_columns is None
            else ", ".join(cfg.average_columns) + " only"
        )
        table.notes.append(
            f"A column grouping several sets is the mean of their means; Average is the "
            f"mean over {over}."
        )
        if cfg.published:
            table.notes.append(
                "Published rows are the figures printed in the RAM paper (full-size models "
                "trained on the paper's data, measured by its authors), shown for reference; "
                "they are not measured here."
            )
        if cfg.max_images:
            table.notes.append(f"Only the first {cfg.max_images} images of each set were used.")
        table.notes += classical_notes(cfg, classical, skipped, list(ctx.specs))
        if any(r.seconds is not None for r in table.rows):
            table.notes.append(
                f"s / image: mean seconds of restoration per image on {ctx.device.type} with "
                f"{torch.get_num_threads()} thread(s) (model: its forward passes; classical: "
                "the library call), as measured when each image was restored."
            )
        tables.append(table)
        if grouped:
            set_tables.append(_set_table(cfg, conv, values, grouped, column_of))
    return tables, set_tables


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def classical_notes(
    cfg: EvalConfig,
    per_set: ClassicalSettings,
    skipped: dict[str, str],
    sets: list[str],
) -> list[str]:
    """Notes on the classical rows: what they are, their settings, where they did not
    run, and the rows skipped for a missing library."""
    from ramir.evaluation.classical import get_method

    notes = []
    rows = [m for m in cfg.models if m.classical is not None]
    if not rows:
        return notes
    described = []
    for m in rows:
        text = f"{m.name} = {get_method(m.classical).description}"
        if m.name in per_set:
            ran = [
                s
                for s in sets
                if per_set[m.name][s] is not None and (m.sets is None or s in m.sets)
            ]
            text += f", on {', '.join(ran) or 'no set'}"
            if m.every > 1:
                text += f" (every {_ordinal(m.every)} image of each set)"
        described.append(text)
    files = {
        "the shipped settings (ramir/assets/classical_settings.yaml)"
        if m.settings == "tuned"
        else Path(m.settings).name
        for m in rows
        if isinstance(m.settings, str)
    }
    how = (
        f"each at its setting per test set from {', '.join(sorted(files))} (chosen on "
        "validation photos; a clean-input set gets the method's one all-task setting)"
        if files
        else "at the settings of the config"
    )
    notes.append(
        f"Classical rows, told the task, {how}; '–' where a row was not run: "
        + "; ".join(described)
        + "."
    )
    for name, why in skipped.items():
        notes.append(f"{name}: skipped: {why}")
    return notes


def _set_table(
    cfg: EvalConfig,
    conv: Convention,
    values: Values,
    grouped: list[str],
    column_of: dict[str, str],
) -> Table:
    """One column per test set that a grouped column averages (no ``Average``)."""
    table = Table(
        title=f"{cfg.name} — {conv.name} convention, the sets of grouped columns",
        columns=grouped,
        convention=conv,
    )
    names = ([INPUT_ROW] if cfg.input_row else []) + [m.name for m in cfg.models]
    for name in names:
        per_set = {k: v for k, v in values[name][conv.name].items() if k in grouped}
        cells = aggregate(per_set, {k: k for k in per_set}, grouped, average_of=[])
        table.rows.append(Row(name, "ours", cells))
    groups = sorted({column_of[n] for n in grouped})
    table.notes.append(
        f"Each set on its own; the main table's {', '.join(groups)} column(s) are the mean "
        "of these sets' means."
    )
    return table


def write_report(
    ctx: RunContext,
    tables: list[Table],
    set_tables: list[Table],
    per_image: list[dict[str, Any]],
) -> dict[str, Path]:
    """Rank 0 writes the tables (``table.*``, ``sets.*`` with grouped columns),
    ``gains.md`` (with ``input_row``) and ``per_image.csv``; every rank returns their
    paths (and ``config``: ``config.yaml``)."""
    cfg, run_dir, is_main = ctx.cfg, ctx.run_dir, ctx.info.is_main
    paths = {
        "markdown": run_dir / "table.md",
        "csv": run_dir / "table.csv",
        "json": run_dir / "table.json",
    }
    if is_main:
        paths = write_tables(tables, run_dir, heading=f"Evaluation: {cfg.name}")
    if set_tables:
        if is_main:
            sets = write_tables(set_tables, run_dir, "sets", f"Evaluation: {cfg.name}, set by set")
        else:
            sets = {
                k: run_dir / f"sets.{e}"
                for k, e in (("markdown", "md"), ("csv", "csv"), ("json", "json"))
            }
        paths.update({f"sets_{k}": v for k, v in sets.items()})
    if cfg.input_row:
        paths["gains"] = run_dir / "gains.md"
        if is_main:
            _write_gains(run_dir, per_image, ctx.conventions[0].name)
    paths["per_image"] = run_dir / "per_image.csv"
    if is_main:
        _write_per_image(paths["per_image"], per_image)
    paths["config"] = run_dir / "config.yaml"
    return paths


def _write_gains(run_dir: Path, rows: list[dict[str, Any]], convention: str) -> Path:
    """``gains.md``: per-photo statistics (median/worst PSNR of clean-input columns, mean
    and worst gain over the input elsewhere), the do-no-harm view of the run."""
    from ramir.evaluation.gains import gain_stats, stats_markdown

    text = (
        f"# Photo by photo ({convention} convention)\n\n"
        "For clean-input columns: the PSNR of the output against the untouched image "
        "(median and worst image). Elsewhere: the gain in PSNR over the degraded input, "
        "image by image (mean and worst). A negative gain: the model made that image "
        "worse.\n\n" + stats_markdown(gain_stats(rows, convention)) + "\n"
    )
    path = run_dir / "gains.md"
    path.write_text(text, encoding="utf-8")
    return path


def _write_per_image(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    tmp.replace(path)

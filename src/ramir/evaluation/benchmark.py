"""Benchmark tables like the paper's Table 1: rows = models, columns = test sets.

A :class:`Table` holds PSNR/SSIM cells for our models and, optionally, the paper's
published figures (``ramir/assets/paper_tables.json``: Tables 1-6 as printed) as extra
rows labelled ``published``. Tables are written as Markdown, CSV (wide: one row per
model, a PSNR and an SSIM column per test-set column) and JSON.

Column values: a column averages the per-image values of its test set; a column that
groups several sets (``group:`` in the data config, e.g. ``Rain13k-Test`` or ``BSD68``
over sigma 15/25/50) is the mean of its sets' means; ``Average`` is the mean over the
columns, as in the paper.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ramir.evaluation.metrics import Convention

__all__ = [
    "AVERAGE",
    "INPUT_ROW",
    "Cell",
    "Row",
    "Table",
    "PUBLISHED_TABLES",
    "load_paper_tables",
    "published_rows",
    "aggregate",
    "write_tables",
]

AVERAGE = "Average"
INPUT_ROW = "input (no restoration)"
"""Label of the row that measures the degraded inputs themselves (``input_row: true``)."""

PUBLISHED_TABLES: dict[str, str] = {
    "table1_seven_tasks": "Table 1",
    "table2_gaussian_denoising_psnr": "Table 2",
    "table6_finetune_ratio_psnr": "Table 6",
}
"""Published tables that hold per-column rows (key in paper_tables.json -> label)."""

# The published column that plays the role of our overall "Average" column.
_PUBLISHED_AVERAGE = {
    "table1_seven_tasks": "Average",
    "table6_finetune_ratio_psnr": "OOD Average",
}


@dataclass
class Cell:
    """One table cell: mean PSNR (dB) and SSIM, and how many images they average."""

    psnr: float | None = None
    ssim: float | None = None
    n_images: int = 0

    def text(self, digits: tuple[int, int] = (2, 4)) -> str:
        p = "–" if self.psnr is None else f"{self.psnr:.{digits[0]}f}"
        if self.ssim is None:
            return p
        return f"{p} / {self.ssim:.{digits[1]}f}"


@dataclass
class Row:
    """A table row: ours (measured) or published (from the paper)."""

    label: str
    kind: Literal["ours", "published"]
    cells: dict[str, Cell] = field(default_factory=dict)
    source: str = ""
    """Checkpoint path or classical method (ours) or paper table (published)."""
    seconds: float | None = None
    """Mean seconds of restoration per image (ours; ``None`` when not measured)."""


@dataclass
class Table:
    """Rows x columns of PSNR/SSIM under one metric convention."""

    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    convention: Convention | None = None
    notes: list[str] = field(default_factory=list)

    # -- formats --------------------------------------------------------------------------
    def to_markdown(self) -> str:
        out = [f"## {self.title}", ""]
        if self.convention is not None:
            out += [
                f"Metric convention: **{self.convention.name}** ({self.convention.description}).",
                "",
            ]
        timed = any(r.seconds is not None for r in self.rows)
        header = ["Model", *[f"{c} PSNR / SSIM" for c in self.columns]]
        header += ["s / image"] if timed else []
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in self.rows:
            label = row.label if row.kind == "ours" else f"{row.label} *(published, {row.source})*"
            cells = [row.cells.get(c, Cell()).text() for c in self.columns]
            if timed:
                cells.append("–" if row.seconds is None else _seconds(row.seconds))
            out.append("| " + " | ".join([label, *cells]) + " |")
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        head = ["model", "kind", "source", "convention"]
        for c in self.columns:
            head += [f"{c} PSNR", f"{c} SSIM"]
        head.append("seconds per image")
        w.writerow(head)
        conv = self.convention.name if self.convention is not None else ""
        for row in self.rows:
            line: list[Any] = [row.label, row.kind, row.source, conv]
            for c in self.columns:
                cell = row.cells.get(c, Cell())
                line += [_num(cell.psnr, 4), _num(cell.ssim, 6)]
            line.append(_num(row.seconds, 4))
            w.writerow(line)
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "convention": self.convention.to_dict() if self.convention is not None else None,
            "columns": list(self.columns),
            "rows": [
                {
                    "label": r.label,
                    "kind": r.kind,
                    "source": r.source,
                    "seconds_per_image": r.seconds,
                    "cells": {
                        c: {
                            "psnr": _json_num(x.psnr),
                            "ssim": _json_num(x.ssim),
                            "n_images": x.n_images,
                        }
                        for c, x in r.cells.items()
                    },
                }
                for r in self.rows
            ],
            "notes": list(self.notes),
        }


def _seconds(x: float) -> str:
    return f"{x:.3f}" if x < 1 else f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _num(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _json_num(x: float | None) -> float | str | None:
    if x is None:
        return None
    return x if math.isfinite(x) else str(x)


# ----------------------------------------------------------------------------- aggregation


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def aggregate(
    per_set: Mapping[str, Sequence[tuple[float, float]]],
    column_of: Mapping[str, str],
    columns: Sequence[str],
    average_of: Sequence[str] | None = None,
) -> dict[str, Cell]:
    """Cells of one row from per-image ``(psnr, ssim)`` values of each test set.

    Args:
        per_set: set name -> per-image ``(psnr, ssim)``.
        column_of: set name -> column name (sets sharing a column are averaged set-wise).
        columns: the table's columns (without ``Average``); those with no data stay empty.
        average_of: the columns ``Average`` is taken over (default: all of ``columns``).

    Returns:
        Column -> :class:`Cell`, plus ``Average`` over ``average_of`` (only when each of
        those columns has data).
    """
    set_means: dict[str, list[tuple[float, float, int]]] = {}
    for name, values in per_set.items():
        if not values:
            continue
        p = sum(v[0] for v in values) / len(values)
        s = sum(v[1] for v in values) / len(values)
        set_means.setdefault(column_of[name], []).append((p, s, len(values)))
    cells: dict[str, Cell] = {}
    for col in columns:
        means = set_means.get(col)
        if means:
            cells[col] = Cell(
                psnr=_mean([m[0] for m in means]),
                ssim=_mean([m[1] for m in means]),
                n_images=sum(m[2] for m in means),
            )
    avg = list(columns if average_of is None else average_of)
    if avg and all(c in cells for c in avg):
        cells[AVERAGE] = Cell(
            psnr=_mean([cells[c].psnr for c in avg]),  # type: ignore[misc]
            ssim=_mean([cells[c].ssim for c in avg]),  # type: ignore[misc]
            n_images=sum(cells[c].n_images for c in avg),
        )
    return cells


# ----------------------------------------------------------------------------- published


@lru_cache(maxsize=1)
def load_paper_tables() -> dict[str, Any]:
    """The paper's published tables (``ramir/assets/paper_tables.json``)."""
    ref = resources.files("ramir") / "assets" / "paper_tables.json"
    return json.loads(ref.read_text(encoding="utf-8"))


def _published_cells(key: str, entry: Any, columns: list[str]) -> dict[str, Cell]:
    """Normalise the three layouts of paper_tables.json rows to ``{column: Cell}``."""
    cells: dict[str, Cell] = {}
    if isinstance(entry, list):  # table 6: PSNR values aligned with the columns
        for c, v in zip(columns, entry, strict=True):
            cells[c] = Cell(psnr=float(v))
    elif set(entry) == {"psnr"}:  # table 2: {"psnr": {column: value}}
        for c, v in entry["psnr"].items():
            cells[c] = Cell(psnr=float(v))
    else:  # table 1: {column: {"psnr", "ssim"}}
        for c, v in entry.items():
            cells[c] = Cell(psnr=float(v["psnr"]), ssim=float(v["ssim"]))
    return cells


def published_rows(
    table: str, columns: Sequence[str], rows: Sequence[str] | None = None
) -> list[Row]:
    """Published rows of paper table ``table`` restricted to ``columns``.

    A published cell is shown only under a column of the same name. The published
    overall average is shown in our ``Average`` column only when our columns are
    exactly the published ones (otherwise the two averages would mean different things).

    Args:
        table: a key of :data:`PUBLISHED_TABLES`.
        columns: our table's columns, ``Average`` included or not.
        rows: row names to keep (default: all), in this order.
    """
    if table not in PUBLISHED_TABLES:
        raise ValueError(
            f"unknown published table {table!r}; choose one of: {', '.join(PUBLISHED_TABLES)}"
        )
    data = load_paper_tables()[table]
    pub_columns = list(data["columns"])
    names = list(data["rows"]) if rows is None else list(rows)
    unknown = [n for n in names if n not in data["rows"]]
    if unknown:
        raise ValueError(
            f"{table} has no row(s) {', '.join(unknown)}; rows: {', '.join(data['rows'])}"
        )
    avg_col = _PUBLISHED_AVERAGE.get(table)
    ours = [c for c in columns if c != AVERAGE]
    pub_parts = [c for c in pub_columns if c != avg_col and not c.lower().endswith("average")]
    out = []
    for name in names:
        cells = _published_cells(table, data["rows"][name], pub_columns)
        shown = {c: cells[c] for c in ours if c in cells}
        if avg_col is not None and avg_col in cells and sorted(ours) == sorted(pub_parts):
            shown[AVERAGE] = cells[avg_col]
        out.append(Row(label=name, kind="published", cells=shown, source=PUBLISHED_TABLES[table]))
    return out


# ----------------------------------------------------------------------------- writing


def write_tables(
    tables: Sequence[Table], out_dir: str | Path, stem: str = "table", heading: str = ""
) -> dict[str, Path]:
    """Write ``tables`` as ``{stem}.md``, ``{stem}.csv`` and ``{stem}.json`` in ``out_dir``.

    The Markdown file holds one section per table, the CSV one block of rows per table
    (the ``convention`` column tells them apart), the JSON a list of tables.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = (f"# {heading}\n\n" if heading else "") + "\n".join(t.to_markdown() for t in tables)
    csv_text = ""
    for i, t in enumerate(tables):
        text = t.to_csv()
        csv_text += text if i == 0 else text.split("\n", 1)[1]
    paths = {
        "markdown": out_dir / f"{stem}.md",
        "csv": out_dir / f"{stem}.csv",
        "json": out_dir / f"{stem}.json",
    }
    _atomic_write(paths["markdown"], md)
    _atomic_write(paths["csv"], csv_text)
    _atomic_write(paths["json"], json.dumps([t.to_dict() for t in tables], indent=2) + "\n")
    return paths


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)

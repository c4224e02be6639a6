"""Per-photo statistics of a run: gains over the input, medians and worst cases.

A table of means hides what matters most for a model people run on their own photos:
whether it *damages* some of them. From the per-image records of
:func:`ramir.evaluation.runner.evaluate` (run with ``input_row: true``) this module
computes, for every model and column, the mean, median and worst PSNR and the mean,
median and worst gain over the degraded input, photo by photo.

On a clean-input set (degradation ``identity``) the input's PSNR is infinite, so there
are no gains; its PSNR statistics (output against the untouched photo) are the
do-no-harm figures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ramir.evaluation.benchmark import INPUT_ROW

__all__ = [
    "ColumnStats",
    "gain_stats",
    "check_goals",
    "stats_table",
    "stats_markdown",
    "format_stats",
    "format_goals",
    "format_part_record",
]


@dataclass(frozen=True)
class ColumnStats:
    """PSNR statistics of one model on one column, over its photos (dB).

    ``*_gain`` are ``None`` when the input is perfect (clean-input sets).
    """

    n: int
    mean: float
    median: float
    worst: float
    mean_gain: float | None
    median_gain: float | None
    worst_gain: float | None

    def value(self, statistic: str) -> float | None:
        """``mean``, ``median``, ``worst``, ``gain`` (= mean gain), ``median_gain``..."""
        key = "mean_gain" if statistic == "gain" else statistic
        return getattr(self, key)


def _psnr(row: Mapping[str, Any], convention: str) -> float:
    return float(row[f"{convention} psnr"])  # "inf" strings parse too


def gain_stats(
    per_image: Iterable[Mapping[str, Any]], convention: str = "ram"
) -> dict[str, dict[str, ColumnStats]]:
    """``{model: {column: ColumnStats}}`` from :class:`EvalResult` ``per_image`` rows.

    Gains are taken photo by photo against the ``input (no restoration)`` row of the
    same set (present when the run had ``input_row: true``); without it, gains are
    ``None``. A column that groups several sets pools their photos.
    """
    rows = list(per_image)
    inputs = {(r["set"], r["key"]): _psnr(r, convention) for r in rows if r["model"] == INPUT_ROW}
    values: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
    for r in rows:
        if r["model"] == INPUT_ROW:
            continue
        p = _psnr(r, convention)
        ref = inputs.get((r["set"], r["key"]))
        gain = None if ref is None or not math.isfinite(ref) else p - ref
        values.setdefault(r["model"], {}).setdefault(r["column"], []).append((p, gain))
    out: dict[str, dict[str, ColumnStats]] = {}
    for model, cols in values.items():
        out[model] = {}
        for col, vals in cols.items():
            ps = [v[0] for v in vals]
            gains = [v[1] for v in vals if v[1] is not None]
            has_gain = len(gains) == len(vals) and bool(gains)
            out[model][col] = ColumnStats(
                n=len(vals),
                mean=statistics.fmean(ps),
                median=statistics.median(ps),
                worst=min(ps),
                mean_gain=statistics.fmean(gains) if has_gain else None,
                median_gain=statistics.median(gains) if has_gain else None,
                worst_gain=min(gains) if has_gain else None,
            )
    return out


def check_goals(
    stats: Mapping[str, ColumnStats], goals: Mapping[str, Iterable[tuple[str, float]]]
) -> list[dict[str, Any]]:
    """Compare one model's column statistics with ``goals`` (``column -> [(statistic,
    threshold)]``); one record per goal: column, statistic, goal, measured, met."""
    out = []
    for col, items in goals.items():
        for statistic, goal in items:
            st = stats.get(col)
            measured = None if st is None else st.value(statistic)
            out.append(
                {
                    "column": col,
                    "statistic": statistic,
                    "goal": goal,
                    "measured": measured,
                    "met": measured is not None and measured >= goal,
                }
            )
    return out


def stats_table(
    stats: Mapping[str, Mapping[str, ColumnStats]], models: Iterable[str] | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-photo summary: for clean-input columns the median and
    worst PSNR, for the others the mean and worst gain over the input (dB); ``–`` where
    a model has no result (a classical row not run on that column)."""
    names = [m for m in (models if models is not None else stats) if m in stats]
    if not names:
        return [], []
    cols: list[str] = []  # in order of first appearance (a row may lack some columns)
    for m in names:
        cols += [c for c in stats[m] if c not in cols]

    def is_clean(c: str) -> bool:
        return all(stats[m][c].mean_gain is None for m in names if c in stats[m])

    clean = [c for c in cols if is_clean(c)]
    degraded = [c for c in cols if c not in clean]
    head = ["model"]
    head += [f"{c}: median / worst PSNR" for c in clean]
    head += [f"{c}: mean / worst gain" for c in degraded]
    body = []
    for m in names:
        st = stats[m]
        row = [m]
        row += [f"{st[c].median:.2f} / {st[c].worst:.2f}" if c in st else "–" for c in clean]
        row += [
            f"{st[c].mean_gain:+.2f} / {st[c].worst_gain:+.2f}" if c in st else "–"
            for c in degraded
        ]
        body.append(row)
    return head, body


def stats_markdown(
    stats: Mapping[str, Mapping[str, ColumnStats]], models: Iterable[str] | None = None
) -> str:
    """:func:`stats_table` as a Markdown table."""
    head, body = stats_table(stats, models)
    if not head:
        return ""
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def format_stats(table: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One text line per column of a recorded table (``{column: ColumnStats as a dict}``,
    as a model's metadata holds it): the median and worst PSNR of a clean-input column,
    the mean and worst gain of the others (dB)."""
    lines = []
    for col, st in table.items():
        if st.get("mean_gain") is None:
            lines.append(
                f"  {col:<14} clean input: median {st['median']:.2f} dB, worst {st['worst']:.2f} dB"
            )
        else:
            lines.append(
                f"  {col:<14} gain over the input: mean {st['mean_gain']:+.2f}"
                f" dB, worst {st['worst_gain']:+.2f} dB"
            )
    return lines


def format_goals(goals: list[Mapping[str, Any]]) -> list[str]:
    """Text lines for :func:`check_goals`' records (a blank line and a heading first;
    nothing without goals)."""
    if not goals:
        return []
    lines = ["", "goals:"]
    for g in goals:
        measured = "n/a" if g.get("measured") is None else f"{g['measured']:.2f}"
        state = "met" if g.get("met") else "NOT met"
        lines.append(
            f"  {g['column']:<14} {g['statistic']:<10} >= {g['goal']:<6g} "
            f"measured {measured:>7}  {state}"
        )
    return lines


def format_part_record(record: Mapping[str, Any]) -> list[str]:
    """Lines for a part's record (:func:`ramir.evaluation.protocol.measure_part`)."""
    part = record.get("part", "?")
    what = "only reported" if part == "test" else "used to choose"
    head = (
        f"photo evaluation, {part} part ({record.get('photos', '?')} photos never trained "
        f"on, {what}), per photo:"
    )
    if record.get("max_images") is not None:
        head += f" [partial run: first {record['max_images']} photos of each set]"
    lines = [head, *format_stats(record.get("table") or {})]
    goals = format_goals(record.get("goals") or [])
    if goals:
        goals[1] = f"goals ({part} part):"
    return lines + goals

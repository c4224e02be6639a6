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
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ramir.config import save_config, to_dict
from ramir.evaluation.benchmark import (
    INPUT_ROW,
    Row,
    Table,
    aggregate,
    published_rows,
    write_tables,
)
from ramir.evaluation.config import EvalConfig
from ramir.evaluation.metrics import compute_metrics, get_convention

__all__ = ["EvalResult", "evaluate", "INPUT_ROW"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1


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


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def _read_cache(path: Path, header: dict[str, Any], restart: bool) -> dict[str, dict[str, Any]]:
    """Per-image records of a set's cache file, keyed by image key."""
    if restart or not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    try:
        old = json.loads(lines[0]).get("header")
    except json.JSONDecodeError:
        old = None
    if old != header:
        raise ValueError(
            f"{path} holds results computed with a different checkpoint, inference setting or "
            "test set; use another run name/output_dir, delete that folder, or pass --restart "
            "to recompute"
        )
    records = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        records[rec["key"]] = rec
    return records


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _load_float(x: Any) -> float:
    return float(x)  # "inf" strings round-trip through float()


def evaluate(
    cfg: EvalConfig,
    *,
    progress: bool = True,
    restart: bool = False,
    load_model: Callable[..., torch.nn.Module] | None = None,
) -> EvalResult:
    """Evaluate every model of ``cfg`` on every test set; write tables and per-image results.

    Args:
        cfg: the run settings (see :class:`EvalConfig`).
        progress: tqdm progress bars.
        restart: ignore and overwrite cached per-image results.
        load_model: ``(checkpoint, arch=..., map_location=...) -> model`` (default
            :func:`ramir.checkpoint.load_model`).

    Returns:
        An :class:`EvalResult` with the tables and the paths written.
    """
    from ramir.checkpoint import file_sha256
    from ramir.checkpoint import load_model as default_loader
    from ramir.data.io import write_image
    from ramir.data.mixture import build_test_set
    from ramir.restore import restore_tensor

    loader = load_model or default_loader
    from ramir.runtime import resolve_device

    device = resolve_device(cfg.device)
    if cfg.half and device.type != "cuda":
        raise ValueError("half: true needs a CUDA device")
    run_dir = cfg.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    conventions = [get_convention(c) for c in cfg.conventions]
    columns = cfg.column_order()
    column_of = {spec.name: spec.group or spec.name for spec in cfg.data.test}

    # Build (scan) every test set first, so a missing dataset fails before any work.
    test_sets = {spec.name: build_test_set(spec, cfg.data) for spec in cfg.data.test}
    specs = {spec.name: spec for spec in cfg.data.test}

    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(min(len(ts), cfg.max_images or len(ts)) for ts in test_sets.values()) * len(
            cfg.models
        )
        bar = tqdm(total=total, desc="evaluating", unit="img")

    settings = {
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap if cfg.tile else None,
        # only with tiles (caches of whole-image runs stay valid)
        **({"global_context": cfg.global_context} if cfg.tile else {}),
        "half": cfg.half,
        "y_channel": cfg.y_channel,
    }
    # per model -> per convention -> per set -> [(psnr, ssim)]
    values: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    per_image_rows: list[dict[str, Any]] = []
    computed = reused = 0
    if cfg.input_row:
        values[INPUT_ROW] = {c.name: {} for c in conventions}
        for set_name, ts in test_sets.items():
            keys = ts.keys()
            for i in range(min(len(ts), cfg.max_images or len(ts))):
                item = ts[i]
                rec = {}
                for conv in conventions:
                    m = compute_metrics(
                        item["lq"][None], item["gt"][None], conv, y_channel=cfg.y_channel
                    )
                    rec[conv.name] = {"psnr": float(m["psnr"][0]), "ssim": float(m["ssim"][0])}
                    values[INPUT_ROW][conv.name].setdefault(set_name, []).append(
                        (rec[conv.name]["psnr"], rec[conv.name]["ssim"])
                    )
                per_image_rows.append(
                    {
                        "model": INPUT_ROW,
                        "set": set_name,
                        "column": column_of[set_name],
                        "key": keys[i],
                        **{
                            f"{c.name} {k}": _finite(rec[c.name][k])
                            for c in conventions
                            for k in ("psnr", "ssim")
                        },
                    }
                )
    try:
        for mspec in cfg.models:
            ckpt = Path(mspec.checkpoint).expanduser()
            if not ckpt.is_file():
                raise FileNotFoundError(f"model {mspec.name!r}: checkpoint not found: {ckpt}")
            sha = file_sha256(ckpt)
            model: torch.nn.Module | None = None
            values[mspec.name] = {c.name: {} for c in conventions}
            for set_name, ts in test_sets.items():
                n = min(len(ts), cfg.max_images or len(ts))
                header = {
                    "version": CACHE_VERSION,
                    "checkpoint_sha256": sha,
                    "arch": mspec.arch,
                    "settings": {**settings, "ensemble": mspec.ensemble},
                    "conventions": [c.to_dict() for c in conventions],
                    "test_set": to_dict(specs[set_name]),
                    "data_seed": cfg.data.seed,
                }
                if mspec.model_args:  # (absent otherwise: older caches stay valid)
                    header["model_args"] = mspec.model_args
                cache = run_dir / "per_image" / _safe(mspec.name) / f"{_safe(set_name)}.jsonl"
                cache.parent.mkdir(parents=True, exist_ok=True)
                records = _read_cache(cache, header, restart)
                if restart or not cache.exists() or not records:
                    cache.write_text(json.dumps({"header": header}) + "\n", encoding="utf-8")
                keys = ts.keys()
                with open(cache, "a", encoding="utf-8") as fh:
                    for i in range(n):
                        key = keys[i]
                        rec = records.get(key)
                        if rec is None:
                            item = ts[i]
                            if model is None:
                                model = loader(
                                    ckpt, arch=mspec.arch, map_location=device, **mspec.model_args
                                )
                                model.eval()
                            pred = restore_tensor(
                                model,
                                item["lq"][None],
                                tile=cfg.tile,
                                tile_overlap=cfg.tile_overlap,
                                device=device,
                                half=cfg.half,
                                ensemble=mspec.ensemble,  # type: ignore[arg-type]
                                global_context=cfg.global_context,
                            )
                            gt = item["gt"][None]
                            rec = {"key": key, "index": i}
                            for conv in conventions:
                                m = compute_metrics(pred, gt, conv, y_channel=cfg.y_channel)
                                rec[conv.name] = {
                                    "psnr": _finite(float(m["psnr"][0])),
                                    "ssim": float(m["ssim"][0]),
                                }
                            if cfg.save_images:
                                out = (
                                    run_dir
                                    / "images"
                                    / _safe(mspec.name)
                                    / _safe(set_name)
                                    / f"{key}.png"
                                )
                                write_image(out, pred[0])
                            fh.write(json.dumps(rec) + "\n")
                            fh.flush()
                            computed += 1
                        else:
                            reused += 1
                        for conv in conventions:
                            v = rec[conv.name]
                            values[mspec.name][conv.name].setdefault(set_name, []).append(
                                (_load_float(v["psnr"]), float(v["ssim"]))
                            )
                        per_image_rows.append(
                            {
                                "model": mspec.name,
                                "set": set_name,
                                "column": column_of[set_name],
                                "key": key,
                                **{
                                    f"{c.name} {k}": rec[c.name][k]
                                    for c in conventions
                                    for k in ("psnr", "ssim")
                                },
                            }
                        )
                        if bar is not None:
                            bar.update(1)
            del model
    finally:
        if bar is not None:
            bar.close()

    tables, set_tables = [], []
    grouped = [name for name in specs if column_of[name] != name]
    for conv in conventions:
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
            table.rows.append(Row(mspec.name, "ours", cells, source=str(mspec.checkpoint)))
        for t in cfg.published:
            table.rows += published_rows(t, table.columns, cfg.published_rows)
        sizes = ", ".join(
            f"{name} ({min(len(ts), cfg.max_images or len(ts))} images"
            + (f", in column {column_of[name]}" if column_of[name] != name else "")
            + ")"
            for name, ts in test_sets.items()
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
        tables.append(table)
        if grouped:
            set_tables.append(_set_table(cfg, conv, values, grouped, column_of))

    paths = write_tables(tables, run_dir, heading=f"Evaluation: {cfg.name}")
    if set_tables:
        sets = write_tables(set_tables, run_dir, "sets", f"Evaluation: {cfg.name}, set by set")
        paths.update({f"sets_{k}": v for k, v in sets.items()})
    if cfg.input_row:
        paths["gains"] = _write_gains(run_dir, per_image_rows, conventions[0].name)
    paths["per_image"] = run_dir / "per_image.csv"
    _write_per_image(paths["per_image"], per_image_rows)
    paths["config"] = run_dir / "config.yaml"
    return EvalResult(run_dir, tables, paths, per_image_rows, computed, reused, set_tables)


def _set_table(
    cfg: EvalConfig,
    conv: Any,
    values: dict[str, dict[str, dict[str, list[tuple[float, float]]]]],
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

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from ramir.data.mixture import PairedTestSet
    from ramir.distributed import DistInfo

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


def _item_size(ts: PairedTestSet, i: int) -> tuple[int, int] | None:
    """``(H, W)`` of test item ``i`` from its files' headers (``None`` if unreadable)."""
    from ramir.data.io import ImageReadError, image_size

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


@dataclass
class _Work:
    """The shared plan of a run: per set, its image count, sizes and batches."""

    counts: dict[str, int]
    keys: dict[str, list[str]]
    sizes: dict[str, list[tuple[int, int] | None]]
    groups: dict[str, list[list[int]]]


def _plan(test_sets: dict[str, PairedTestSet], cfg: EvalConfig, cap: int, info: DistInfo) -> _Work:
    """Rank 0 reads the image sizes and groups same-size whole images; every rank
    checks that it sees the same test sets (else an error on every rank)."""
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
            name: [_item_size(ts, i) for i in range(counts[name])] for name, ts in test_sets.items()
        }
    sizes = broadcast_object(sizes, info)
    groups = {}
    for name, sz in sizes.items():
        whole = [cfg.tile is None or (s is not None and max(s) <= cfg.tile) for s in sz]
        groups[name] = group_same_size(sz, whole, cap)
    return _Work(counts, keys, sizes, groups)


def _pixels(size: tuple[int, int] | None) -> float:
    return float(size[0] * size[1]) if size is not None else 1.0


class _Cache:
    """The per-image results of one model on one set: ``<set>.jsonl`` (a header line,
    then one line per image), and while several ranks run, one file per rank in
    ``<set>.parts/`` that rank 0 merges into it at the end."""

    def __init__(self, folder: Path, set_name: str, header: dict[str, Any], info: DistInfo):
        self.main = folder / f"{_safe(set_name)}.jsonl"
        self.parts = folder / f"{_safe(set_name)}.parts"
        self.header = header
        self.info = info
        self.had_parts = False

    def own(self) -> Path:
        return self.parts / f"rank{self.info.rank}.jsonl"

    def read(self, restart: bool) -> dict[str, dict[str, Any]]:
        """What earlier runs measured: the main file and any rank files."""
        records = _read_cache(self.main, self.header, restart)
        if self.parts.is_dir():
            for part in sorted(self.parts.glob("rank*.jsonl")):
                self.had_parts = True
                for key, rec in _read_cache(part, self.header, restart).items():
                    records.setdefault(key, rec)
        return records

    def start(self, restart: bool, known: int) -> None:
        """Rank 0 (or the single process) prepares the main file (before any rank
        writes: the caller puts a barrier after this)."""
        if not self.info.is_main:
            return
        if restart:
            for part in self.parts.glob("rank*.jsonl") if self.parts.is_dir() else []:
                part.unlink(missing_ok=True)
        if restart or not self.main.exists() or (not known and not self.had_parts):
            self.main.write_text(json.dumps({"header": self.header}) + "\n", encoding="utf-8")

    def open(self) -> Any:
        """The file this process appends its results to."""
        if not self.info.distributed:
            return open(self.main, "a", encoding="utf-8")
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.own()
        fresh = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a", encoding="utf-8")
        if fresh:
            fh.write(json.dumps({"header": self.header}) + "\n")
            fh.flush()
        return fh

    def merge(self, records: dict[str, dict[str, Any]]) -> None:
        """Rank 0 writes every record into the main file (atomically), if ranks wrote
        files of their own (now or in an interrupted run)."""
        if not self.info.is_main or not (self.info.distributed or self.had_parts):
            return
        lines = [json.dumps({"header": self.header})]
        lines += [json.dumps(r) for r in sorted(records.values(), key=lambda r: r["index"])]
        tmp = self.main.with_name(self.main.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(self.main)

    def clean(self) -> None:
        """After the merge: each rank deletes its own file, rank 0 those of ranks that
        are not in this run, then the folder if it is empty."""
        if not self.parts.is_dir():
            return
        if self.info.distributed:
            self.own().unlink(missing_ok=True)
        if self.info.is_main:
            for part in self.parts.glob("rank*.jsonl"):
                rank = part.stem.removeprefix("rank")
                if not rank.isdigit() or int(rank) >= self.info.world_size:
                    part.unlink(missing_ok=True)
                elif not self.info.distributed:
                    part.unlink(missing_ok=True)
            try:
                self.parts.rmdir()
            except OSError:
                pass  # another rank's file is still there (it deletes it itself)


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
    from ramir.checkpoint import file_sha256
    from ramir.checkpoint import load_model as default_loader
    from ramir.data.io import write_image
    from ramir.data.mixture import build_test_set
    from ramir.distributed import SINGLE, agree, all_gather_objects, barrier
    from ramir.evaluation.classical import library_versions, settings_per_set, unavailable
    from ramir.inference.batching import MAX_AUTO_BATCH
    from ramir.inference.sharding import balance, prefetch
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
    columns = cfg.column_order()
    column_of = {spec.name: spec.group or spec.name for spec in cfg.data.test}

    # Build (scan) every test set first, so a missing dataset fails before any work.
    test_sets = agree(
        lambda: {spec.name: build_test_set(spec, cfg.data) for spec in cfg.data.test}, info
    )
    specs = {spec.name: spec for spec in cfg.data.test}
    if cfg.batch_size == "auto":
        cap = MAX_AUTO_BATCH if device.type == "cuda" else 1
    else:
        cap = int(cfg.batch_size)
    work = _plan(test_sets, cfg, cap, info)
    overlap_io = device.type == "cuda"

    bar = None
    if progress and info.is_main:
        from tqdm import tqdm

        desc = "evaluating" if not info.distributed else f"evaluating (rank 0 of {info.world_size})"
        bar = tqdm(total=0, desc=desc, unit="img")

    def grow_bar(n: int) -> None:
        if bar is not None:
            bar.total += n
            bar.refresh()

    settings = {
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap if cfg.tile else None,
        # only with tiles (caches of whole-image runs stay valid)
        **({"global_context": cfg.global_context} if cfg.tile else {}),
        "half": cfg.half,
        "y_channel": cfg.y_channel,
    }

    def measure(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, dict[str, Any]]:
        out = {}
        for conv in conventions:
            m = compute_metrics(pred, gt, conv, y_channel=cfg.y_channel)
            out[conv.name] = {"psnr": _finite(float(m["psnr"][0])), "ssim": float(m["ssim"][0])}
        return out

    # Classical rows: their settings per set (a bad settings file fails before any work),
    # or why they are skipped (a missing optional library).
    classical_settings: dict[str, dict[str, dict[str, Any] | None]] = {}
    skipped: dict[str, str] = {}
    for mspec in cfg.models:
        if mspec.classical is None:
            continue
        why = unavailable(mspec.classical)
        if why:
            skipped[mspec.name] = why
            log.warning("row %s skipped: %s", mspec.name, why)
            continue
        classical_settings[mspec.name] = settings_per_set(
            mspec.classical,
            mspec.settings,
            {n: (sp.degradation, sp.params) for n, sp in specs.items()},
        )
    seconds: dict[str, list[float]] = {}
    expected = 0

    # per model -> per convention -> per set -> [(psnr, ssim)]
    values: dict[str, dict[str, dict[str, list[tuple[float, float]]]]] = {}
    per_image_rows: list[dict[str, Any]] = []
    computed = reused = 0

    def add_rows(
        name: str, set_name: str, records: dict[str, dict[str, Any]], every: int = 1
    ) -> None:
        for key in work.keys[set_name][::every]:
            rec = records[key]
            for conv in conventions:
                v = rec[conv.name]
                values[name][conv.name].setdefault(set_name, []).append(
                    (_load_float(v["psnr"]), float(v["ssim"]))
                )
            per_image_rows.append(
                {
                    "model": name,
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
    try:
        if cfg.input_row:
            values[INPUT_ROW] = {c.name: {} for c in conventions}
            items = [(s, i) for s in test_sets for i in range(work.counts[s])]
            share = balance([_pixels(work.sizes[s][i]) for s, i in items], info.world_size)
            mine = [items[k] for k in share[info.rank]]
            grow_bar(len(mine))
            got: dict[tuple[str, int], dict[str, Any]] = {}
            for (s, i), item, error in prefetch(
                lambda si: test_sets[si[0]][si[1]], mine, ahead=1 if overlap_io else 0
            ):
                if error is not None:
                    raise error
                assert item is not None
                got[(s, i)] = measure(item["lq"][None], item["gt"][None])
                if bar is not None:
                    bar.update(1)
            for part in all_gather_objects(got, info):
                got.update(part)
            for s in test_sets:
                add_rows(
                    INPUT_ROW,
                    s,
                    {k: {"key": k, **got[(s, i)]} for i, k in enumerate(work.keys[s])},
                )

        for mspec in cfg.models:
            values[mspec.name] = {c.name: {} for c in conventions}
            seconds[mspec.name] = []
            method = mspec.classical
            if method is not None and mspec.name in skipped:
                continue
            model: torch.nn.Module | None = None
            folder = run_dir / "per_image" / _safe(mspec.name)
            caches: dict[str, _Cache] = {}
            if method is not None:
                row_sets = [
                    s
                    for s in test_sets
                    if classical_settings[mspec.name][s] is not None
                    and (mspec.sets is None or s in mspec.sets)
                ]
                versions = library_versions(method)
                for set_name in row_sets:
                    header = {
                        "version": CACHE_VERSION,
                        "classical": method,
                        "classical_settings": classical_settings[mspec.name][set_name],
                        "libraries": versions,
                        "conventions": [c.to_dict() for c in conventions],
                        "test_set": to_dict(specs[set_name]),
                        "data_seed": cfg.data.seed,
                    }
                    caches[set_name] = _Cache(folder, set_name, header, info)
            else:
                ckpt = Path(mspec.checkpoint).expanduser()

                def check_checkpoint(ckpt: Path = ckpt, name: str = mspec.name) -> str:
                    if not ckpt.is_file():
                        raise FileNotFoundError(f"model {name!r}: checkpoint not found: {ckpt}")
                    return file_sha256(ckpt)

                sha = agree(check_checkpoint, info)
                row_sets = [s for s in test_sets if mspec.sets is None or s in mspec.sets]
                for set_name in row_sets:
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
                    caches[set_name] = _Cache(folder, set_name, header, info)
            every = mspec.every
            # the row's images: every `every`-th of each set
            groups = {
                s: [g for g in ([i for i in g if i % every == 0] for g in work.groups[s]) if g]
                for s in row_sets
            }
            n_row = {s: len(work.keys[s][::every]) for s in row_sets}
            expected += sum(n_row.values())

            def read_caches(
                caches: dict[str, _Cache] = caches, folder: Path = folder
            ) -> dict[str, dict[str, Any]]:
                folder.mkdir(parents=True, exist_ok=True)
                return {s: c.read(restart) for s, c in caches.items()}

            known = read_caches() if not info.distributed else None
            if info.distributed:
                known = {s: {} for s in row_sets}
                for part in all_gather_objects(agree(read_caches, info), info):
                    for s, recs in part.items():
                        for key, rec in recs.items():
                            known[s].setdefault(key, rec)
                had = all_gather_objects({s: c.had_parts for s, c in caches.items()}, info)
                for s, c in caches.items():
                    c.had_parts = any(h[s] for h in had)
            assert known is not None
            for s, c in caches.items():
                c.start(restart, len(known[s]))
            barrier(info)

            # the batches with an image not measured yet, balanced over the ranks
            units = [
                (s, group)
                for s in row_sets
                for group in groups[s]
                if any(work.keys[s][i] not in known[s] for i in group)
            ]
            costs = [sum(_pixels(work.sizes[s][i]) for i in g) for s, g in units]
            mine_units = [units[k] for k in balance(costs, info.world_size)[info.rank]]
            todo = sum(1 for s, g in mine_units for i in g if work.keys[s][i] not in known[s])
            if not info.distributed and bar is not None:
                row_total = sum(n_row.values())
                grow_bar(row_total)
                bar.update(row_total - todo)
            else:
                grow_bar(todo)
            new: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in row_sets}
            handles = {}
            try:
                for (s, group), items, error in prefetch(
                    lambda u: [test_sets[u[0]][i] for i in u[1]],
                    mine_units,
                    ahead=1 if overlap_io else 0,
                ):
                    if error is not None:
                        raise error
                    assert items is not None
                    if method is not None:
                        restored = _classical_items(
                            method, classical_settings[mspec.name][s], group, items
                        )
                    else:
                        if model is None:
                            model = loader(
                                ckpt, arch=mspec.arch, map_location=device, **mspec.model_args
                            )
                            model.eval()
                        t0 = time.perf_counter()
                        preds = _restore_items(model, group, items, cfg, mspec.ensemble, device)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        each = (time.perf_counter() - t0) / len(preds)
                        restored = [(i, pred, each) for i, pred in preds]
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
                            **measure(pred, item["gt"][None]),
                            "seconds": took,
                        }
                        if cfg.save_images:
                            out = run_dir / "images" / _safe(mspec.name) / _safe(s) / f"{key}.png"
                            write_image(out, pred[0])
                        fh.write(json.dumps(rec) + "\n")
                        fh.flush()
                        new[s][key] = rec
                        if bar is not None:
                            bar.update(1)
            finally:
                for fh in handles.values():
                    fh.close()
            del model
            for part in all_gather_objects(new, info):
                for s, recs in part.items():
                    computed += len(recs)
                    known[s].update(recs)
            for s, c in caches.items():
                c.merge(known[s])
            barrier(info)
            for s, c in caches.items():
                c.clean()
                add_rows(mspec.name, s, known[s], every)
                seconds[mspec.name] += [
                    float(known[s][k]["seconds"])
                    for k in work.keys[s][::every]
                    if "seconds" in known[s][k]
                ]
        reused = expected - computed
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
            source = (
                str(mspec.checkpoint)
                if mspec.classical is None
                else f"classical: {mspec.classical}"
                + (f" ({mspec.settings})" if isinstance(mspec.settings, str) else "")
            )
            took = seconds.get(mspec.name) or []
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
            for name in test_sets
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
        table.notes += _classical_notes(cfg, classical_settings, skipped, list(specs))
        if any(r.seconds is not None for r in table.rows):
            table.notes.append(
                f"s / image: mean seconds of restoration per image on {device.type} with "
                f"{torch.get_num_threads()} thread(s) (model: its forward passes; classical: "
                "the library call), as measured when each image was restored."
            )
        tables.append(table)
        if grouped:
            set_tables.append(_set_table(cfg, conv, values, grouped, column_of))

    paths = {
        "markdown": run_dir / "table.md",
        "csv": run_dir / "table.csv",
        "json": run_dir / "table.json",
    }
    if info.is_main:
        paths = write_tables(tables, run_dir, heading=f"Evaluation: {cfg.name}")
    if set_tables:
        if info.is_main:
            sets = write_tables(set_tables, run_dir, "sets", f"Evaluation: {cfg.name}, set by set")
        else:
            sets = {
                k: run_dir / f"sets.{e}"
                for k, e in (("markdown", "md"), ("csv", "csv"), ("json", "json"))
            }
        paths.update({f"sets_{k}": v for k, v in sets.items()})
    if cfg.input_row:
        paths["gains"] = run_dir / "gains.md"
        if info.is_main:
            _write_gains(run_dir, per_image_rows, conventions[0].name)
    paths["per_image"] = run_dir / "per_image.csv"
    if info.is_main:
        _write_per_image(paths["per_image"], per_image_rows)
    paths["config"] = run_dir / "config.yaml"
    return EvalResult(run_dir, tables, paths, per_image_rows, computed, reused, set_tables)


def _restore_items(
    model: torch.nn.Module,
    group: list[int],
    items: list[dict[str, Any]],
    cfg: EvalConfig,
    ensemble: str,
    device: torch.device,
) -> list[tuple[int, torch.Tensor]]:
    """``(index, (1, 3, H, W) prediction)`` for each item of a batch: items of the same
    shape in one call (EXIF orientation can make a planned size wrong), one by one
    otherwise; a lone item exactly as without batching."""
    from ramir.inference.restore import restore_tensor

    kwargs = dict(
        tile_overlap=cfg.tile_overlap,
        device=device,
        half=cfg.half,
        ensemble=ensemble,
        global_context=cfg.global_context,
        batch_size=cfg.batch_size,
    )
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, item in enumerate(items):
        by_shape.setdefault(tuple(item["lq"].shape), []).append(k)
    out: list[tuple[int, torch.Tensor]] = []
    for members in by_shape.values():
        if len(members) == 1:
            k = members[0]
            pred = restore_tensor(model, items[k]["lq"][None], tile=cfg.tile, **kwargs)
            out.append((group[k], pred))
            continue
        x = torch.stack([items[k]["lq"] for k in members])
        pred = restore_tensor(model, x, tile=None, **kwargs)  # each fits in one tile
        out += [(group[k], pred[n : n + 1]) for n, k in enumerate(members)]
    return sorted(out, key=lambda t: t[0])


def _classical_items(
    method: str, settings: dict[str, Any] | None, group: list[int], items: list[dict[str, Any]]
) -> list[tuple[int, torch.Tensor, float]]:
    """``(index, (1, 3, H, W) prediction, seconds)`` of classical ``method`` on each item."""
    from ramir.evaluation.classical import restore_tensor

    out = []
    for i, item in zip(group, items, strict=True):
        t0 = time.perf_counter()
        pred = restore_tensor(item["lq"][None], method, settings)
        out.append((i, pred, time.perf_counter() - t0))
    return out


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _classical_notes(
    cfg: EvalConfig,
    per_set: dict[str, dict[str, dict[str, Any] | None]],
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

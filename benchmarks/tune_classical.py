"""Choose the classical baselines' settings on the VALIDATION photos only.

For every classical method (:mod:`ramir.evaluation.classical`) and every test set of the
validation data config that the method is a tool for (its degradations), grid-search
the method's setting by the mean PSNR gain over the degraded input (RAM convention),
and write the chosen settings, with their validation gains, to a YAML file that
``ramir evaluate`` reads (``settings:`` of a classical row)::

    python benchmarks/tune_classical.py                     # every method
    python benchmarks/tune_classical.py --methods tv nlm    # only these (others kept)

Defaults: ``configs/data/photos_val.yaml`` (the validation part: every test set must
say ``part: val``, so the test part never chooses), centre crops of 256x256 of each
photo; BM3D (seconds per image) on every 4th photo in 128x128 centre crops
(``--slow-*``); ``--tasks`` restricts the test sets (a method is then not run on the
others by ``ramir evaluate``). The file keeps the methods it was not asked to tune, so methods can be
tuned in separate runs. Prints what it chose and the time per image.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLOW = ("bm3d", "bm3d_est")


def _crop(img: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return img
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top : top + ch, left : left + cw])


def load_tasks(data_path: Path, allow_any_part: bool) -> tuple[dict[str, Any], dict[str, list]]:
    """The degraded test sets of ``data_path``: name -> spec, name -> [(lq, gt)] numpy
    ``(H, W, 3)`` float32 in [0, 1], in key order."""
    from ramir.data.config import load_data_config
    from ramir.data.testsets import build_test_set

    cfg = load_data_config(data_path)
    specs, pairs = {}, {}
    for spec in cfg.test:
        if spec.degradation in (None, "identity"):
            continue
        if not allow_any_part and spec.options.get("part") != "val":
            sys.exit(
                f"test set {spec.name!r} of {data_path.name} is not restricted to the "
                "validation part (options.part: val): settings are chosen on validation "
                "photos only (--allow-any-part for another data set)"
            )
        ts = build_test_set(spec, cfg)
        items = [ts[i] for i in range(len(ts))]
        specs[spec.name] = spec
        pairs[spec.name] = [
            (
                it["lq"].permute(1, 2, 0).numpy(),
                it["gt"].permute(1, 2, 0).numpy(),
            )
            for it in items
        ]
    return specs, pairs


def main(argv: list[str] | None = None) -> int:
    from ramir.evaluation.classical import METHODS, applies_to, library_versions, unavailable
    from ramir.evaluation.classical_tuning import grid_points, tune

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "configs/data/photos_val.yaml"))
    p.add_argument("--out", default=str(ROOT / "src/ramir/assets/classical_settings.yaml"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--tasks", nargs="+", default=None, help="only these test sets (names)")
    p.add_argument("--crop", type=int, default=256, help="centre crop of each photo (px)")
    p.add_argument("--every", type=int, default=1, help="every Nth photo (key order)")
    p.add_argument("--slow-crop", type=int, default=128, help="centre crop for BM3D")
    p.add_argument("--slow-every", type=int, default=4, help="every Nth photo for BM3D")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--allow-any-part", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data_path = Path(args.data)
    specs, all_pairs = load_tasks(data_path, args.allow_any_part)
    out_path = Path(args.out)
    doc: dict[str, Any] = {}
    if out_path.exists():
        doc = yaml.safe_load(out_path.read_text(encoding="utf-8")) or {}
    methods_doc = doc.setdefault("methods", {})
    try:
        data_name = str(data_path.resolve().relative_to(ROOT))
    except ValueError:
        data_name = data_path.name
    doc["protocol"] = {
        "data": data_name,
        "score": "mean PSNR gain over the degraded input (dB), RAM convention",
        "choice": "per task: the best grid point (the first in grid order on ties); "
        "all_tasks: the one point best on the mean over the method's tasks",
    }

    for name in args.methods:
        why = unavailable(name)
        if why:
            print(f"{name}: skipped: {why}", flush=True)
            continue
        method = METHODS[name]
        slow = name in SLOW
        crop = args.slow_crop if slow else args.crop
        every = args.slow_every if slow else args.every
        tasks = {
            t: [(_crop(lq, crop), _crop(gt, crop)) for lq, gt in pairs[::every]]
            for t, pairs in all_pairs.items()
            if applies_to(name, specs[t].degradation, specs[t].params)
            and (args.tasks is None or t in args.tasks)
        }
        if not tasks:
            print(f"{name}: no test set of {data_path.name} it is a tool for", flush=True)
            continue
        n_photos = len(next(iter(tasks.values())))
        n_points = len(grid_points(method.grid))
        print(
            f"{name}: {len(tasks)} task(s) x {n_points} settings x {n_photos} photos "
            f"({crop}x{crop})",
            flush=True,
        )
        t0 = time.perf_counter()
        res = tune(name, tasks)
        chosen = {}
        for t in tasks:
            settings, gain, worst = res.best(t)
            chosen[t] = {
                "settings": settings,
                "val_gain": round(gain, 3),
                "val_worst": round(worst, 3),
            }
            print(f"  {t}: {settings} -> {gain:+.2f} dB (worst {worst:+.2f})", flush=True)
        settings, gain = res.best_all_tasks()
        print(f"  all tasks: {settings} -> {gain:+.2f} dB", flush=True)
        methods_doc[name] = {
            "description": method.description,
            "photos": n_photos,
            "crop": crop,
            "grid": {k: list(v) for k, v in method.grid.items()},
            "seconds_per_image": round(res.seconds, 4),
            "libraries": library_versions(name),
            "tuned": _dt.date.today().isoformat(),
            "tasks": chosen,
            "all_tasks": {"settings": settings, "val_gain": round(gain, 3)},
        }
        print(
            f"  {res.seconds:.3f} s per image ({torch.get_num_threads()} thread(s)), "
            f"{time.perf_counter() - t0:.0f} s in all",
            flush=True,
        )
        _write(out_path, doc)
    return 0


HEADER = """\
# Settings of the classical baselines (ramir.evaluation.classical), chosen on the
# VALIDATION part of the photo evaluation set only, by benchmarks/tune_classical.py
# (do not edit by hand: rerun it). Per method: per task (test-set name), the grid
# point with the best mean PSNR gain over the degraded input on the validation
# photos (val_gain, val_worst: its mean and worst-photo gains, dB); all_tasks: the one
# point best over all its tasks together, used where no task is given (clean photos).
# photos/crop: how many validation photos and which centre crop the search used.
# ramir evaluate reads it: models: [{name: bm3d, classical: bm3d, settings: tuned}]
"""


def _write(path: Path, doc: dict[str, Any]) -> None:
    from ramir.evaluation.classical import METHODS

    order = [m for m in METHODS if m in doc["methods"]]
    order += sorted(m for m in doc["methods"] if m not in METHODS)
    doc = {"protocol": doc["protocol"], "methods": {m: doc["methods"][m] for m in order}}
    text = HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())

"""Time per image of the classical baselines and the shipped model, measured together.

Every method of :mod:`ramir.evaluation.classical` (at its tuned setting for one of its
tasks) and the default model restore the same photos (256x256 centre crops of the
validation part's noisy photos, or its blurred ones for the sharpeners), one after the
other, so the figures compare under the same machine load::

    python benchmarks/bench_classical.py              # 4 photos, 1 and 2 threads
    python benchmarks/bench_classical.py --photos 8 --threads 2

Prints the median seconds per image per method and thread count, and the load average
(other processes on the machine slow every row alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from ramir.data.config import load_data_config
    from ramir.data.testsets import build_test_set
    from ramir.evaluation.classical import METHODS, restore_classical, unavailable
    from ramir.evaluation.classical_settings import load_settings_file

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=4)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--crop", type=int, default=256)
    args = p.parse_args(argv)

    cfg = load_data_config(ROOT / "configs/data/photos_val.yaml")
    specs = {s.name: s for s in cfg.test}
    photos = {}
    for task in ("noise", "blur"):
        spec = specs[task]
        spec.center_crop = args.crop
        ts = build_test_set(spec, cfg)
        photos[task] = [ts[i]["lq"] for i in range(min(args.photos, len(ts)))]

    from ramir.checkpoint import load_model
    from ramir.inference.restore import restore_tensor

    model = load_model(ROOT / "src/ramir/assets/default_model.safetensors").eval()
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.crop}x{args.crop}")
    print(
        "| method | task | setting | " + " | ".join(f"{t} thread(s)" for t in args.threads) + " |"
    )
    print("|---|---|---|" + "---:|" * len(args.threads))
    rows: list[tuple[str, str, str, list[float]]] = []
    for name in METHODS:
        why = unavailable(name)
        if why:
            print(f"| {name} | – | skipped: {why} |" + " |" * len(args.threads))
            continue
        tasks, _ = load_settings_file("tuned", name)
        task = "noise" if "noise" in tasks else "blur"
        settings = tasks[task]
        figures = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            took = []
            for x in photos[task]:
                img = x.permute(1, 2, 0).numpy()
                t0 = time.perf_counter()
                restore_classical(img, name, settings)
                took.append(time.perf_counter() - t0)
            figures.append(statistics.median(took))
        rows.append((name, task, str(settings), figures))
    figures = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        took = []
        with torch.no_grad():
            restore_tensor(model, photos["noise"][0][None])  # warm-up
            for x in photos["noise"]:
                t0 = time.perf_counter()
                restore_tensor(model, x[None])
                took.append(time.perf_counter() - t0)
        figures.append(statistics.median(took))
    rows.append(("default model", "any (blind)", "-", figures))
    for name, task, settings, figs in rows:
        print(f"| {name} | {task} | {settings} | " + " | ".join(f"{f:.3f}" for f in figs) + " |")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

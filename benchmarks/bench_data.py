"""Data-loading speed: samples/second of the synthetic 7-task mixture.

For each patch size (default 64 and 128) and each ``num_workers`` (default 0 and 2) this
builds the mixture of ``--config`` (default ``configs/data/synthetic7.yaml``: the seven
degradations + identity on the photos bundled with scikit-image), decodes its photos
once (``preload``; forked workers share them), runs a warm-up, then times ``--batches`` batches of
``--batch-size`` through a ``torch.utils.data.DataLoader`` and prints samples/second.

It also prints the cost of each task per sample (in-process), and, with ``--model``, the
time of one training step (forward + L1 backward + Adam) of that backbone at the same
batch and patch size, with the ratio data time / step time (aim: < 10%; with workers the
data time overlaps the step, so the in-process ratio is the pessimistic one).

Examples::

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --patches 64 --workers 0 2 4 --batches 50
    python benchmarks/bench_data.py --model nafnet --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ramir.data.config import load_data_config
from ramir.data.mixture import MixtureDataset

ROOT = Path(__file__).resolve().parents[1]


def loader_throughput(
    config: Path, patch: int, workers: int, batch: int, batches: int, warmup: int
) -> float:
    """Samples per second through a DataLoader, after ``warmup`` batches."""
    n = batch * (batches + warmup * max(workers, 1))
    cfg = load_data_config(config, [f"patch_size={patch}", f"epoch_length={n}"])
    ds = MixtureDataset(cfg)
    ds.preload()
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    it = iter(loader)
    for _ in range(warmup * max(workers, 1)):
        next(it)
    t0 = time.perf_counter()
    count = 0
    for b in it:
        count += b["lq"].shape[0]
    return count / (time.perf_counter() - t0)


def per_task_ms(config: Path, patch: int, n: int) -> dict[str, float]:
    """Milliseconds per sample for each task, in-process, caches warm."""
    cfg = load_data_config(config, [f"patch_size={patch}", f"epoch_length={n + 64}"])
    ds = MixtureDataset(cfg)
    ds.preload()
    total: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for i in range(64, 64 + n):
        t = time.perf_counter()
        s = ds[i]
        total[s["task"]] += time.perf_counter() - t
        count[s["task"]] += 1
    return {k: 1e3 * total[k] / count[k] for k in total}


def step_seconds(model_name: str, patch: int, batch: int, steps: int = 5) -> float:
    """Seconds per training step (forward, L1, backward, Adam) of a backbone on CPU."""
    from ramir.models import build_model

    model = build_model(model_name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, patch, patch)
    y = torch.rand(batch, 3, patch, patch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = (model(x) - y).abs().mean()
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "data" / "synthetic7.yaml")
    ap.add_argument("--patches", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per setting")
    ap.add_argument("--warmup", type=int, default=4, help="warm-up batches per worker")
    ap.add_argument("--model", help="also time a training step of this backbone (e.g. nafnet)")
    ap.add_argument("--json", type=Path, help="write the figures to this JSON file")
    ap.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads of the main process (on a busy machine, 1 avoids "
        "thread-pool stalls in the DataLoader's collate with 0 workers)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(
        f"config {args.config.name}, batch {args.batch_size}, {args.batches} timed batches; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} "
        "(figures are noisy when the machine is busy)"
    )
    results: dict[str, object] = {"config": str(args.config), "batch_size": args.batch_size}
    rows = []
    for patch in args.patches:
        for workers in args.workers:
            sps = loader_throughput(
                args.config, patch, workers, args.batch_size, args.batches, args.warmup
            )
            rows.append({"patch": patch, "workers": workers, "samples_per_s": sps})
            print(f"patch {patch:>4}  workers {workers}:  {sps:8.1f} samples/s")
    results["throughput"] = rows

    per_task = {}
    for patch in args.patches:
        ms = per_task_ms(args.config, patch, n=16 * 8)
        per_task[patch] = ms
        shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(ms.items(), key=lambda kv: -kv[1]))
        print(f"patch {patch:>4}  ms/sample by task (in-process): {shown}")
    results["ms_per_sample_by_task"] = per_task

    if args.model:
        steps = []
        for patch in args.patches:
            st = step_seconds(args.model, patch, args.batch_size)
            in_proc = next(
                r for r in rows if r["patch"] == patch and r["workers"] == args.workers[0]
            )
            data_s = args.batch_size / float(in_proc["samples_per_s"])
            ratio = data_s / st
            steps.append({"patch": patch, "step_s": st, "data_s": data_s, "ratio": ratio})
            print(
                f"patch {patch:>4}  {args.model} step {st * 1e3:.1f} ms/batch; data "
                f"{data_s * 1e3:.1f} ms/batch with {args.workers[0]} workers = {100 * ratio:.1f}% "
                "of the step"
            )
        results["model_step"] = {"model": args.model, "rows": steps}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

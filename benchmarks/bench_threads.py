"""Training speed on a shared CPU: threads and OpenMP wait policy, idle and under load.

Trains the demo's default network (NAFNet width 16, the shipped model's size; batch 8,
64x64 crops, masked L1, Adam) for a fixed time in a fresh process, and prints its
iterations per second for every combination of

* ``threads``: PyTorch intra-op threads (1, 2, ... up to the CPU count, and ``auto``,
  the CLI's default: the CPUs not already busy by the 1-minute load average);
* ``wait``: ``OMP_WAIT_POLICY`` ``active`` (idle threads spin: what the OpenMP runtime
  does when nothing is set) or ``passive`` (idle threads sleep: the CLI's default);
* ``load``: ``idle`` (alone) or ``busy`` (beside a second, identical training process
  with the same settings, as when two ``ramir demo`` runs share a machine).

For ``busy`` it prints both processes' speeds and their sum, and every row's ratio to the
fastest idle row, the figure that says what a busy machine costs.

Examples::

    python benchmarks/bench_threads.py                  # ~4 min on 2 cores
    python benchmarks/bench_threads.py --seconds 30 --threads 1 2 4 auto
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _child(threads: str, seconds: float, seed: int) -> None:
    """Train for ``seconds`` (after 3 warm-up steps); print ``{"it_s": ...}``."""
    import numpy as np
    import torch
    from skimage import data as skdata

    from ramir.masking import random_mask
    from ramir.models import build_model
    from ramir.runtime import set_threads
    from ramir.training.losses import masked_l1_loss

    n = set_threads("auto" if threads == "auto" else int(threads))
    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    photo = torch.from_numpy(skdata.astronaut().astype(np.float32) / 255).permute(2, 0, 1)
    model = build_model("nafnet_w16")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)

    def step() -> None:
        ys = gen.integers(0, photo.shape[1] - 64, 8)
        xs = gen.integers(0, photo.shape[2] - 64, 8)
        gt = torch.stack([photo[:, y : y + 64, x : x + 64] for y, x in zip(ys, xs, strict=True)])
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        mask = random_mask(64, 64, ratio=0.5, generator=g)  # (1, 1, 64, 64)
        pred = model(lq * (1 - mask))
        loss = masked_l1_loss(pred, gt, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    print(json.dumps({"it_s": steps / (time.perf_counter() - start), "threads": n}), flush=True)


def _spawn(threads: str, wait: str, seconds: float, seed: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_WAIT_POLICY": wait.upper()}
    env.pop("OMP_NUM_THREADS", None)
    cmd = [sys.executable, __file__, "--child", threads, "--seconds", str(seconds)]
    return subprocess.Popen([*cmd, "--seed", str(seed)], env=env, stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"benchmark child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cpus = os.cpu_count() or 1
    default_threads = [str(t) for t in sorted({1, min(2, cpus), cpus})] + ["auto"]
    p.add_argument("--threads", nargs="+", default=default_threads, help="thread counts")
    p.add_argument("--waits", nargs="+", default=["active", "passive"])
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per run")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        _child(args.child, args.seconds, args.seed)
        return

    import torch

    print(
        f"# {cpus} CPUs, torch {torch.__version__}, NAFNet w16 (the shipped model's size), "
        f"batch 8, 64x64, {args.seconds:g} s per run"
    )
    rows = []
    for wait in args.waits:
        for threads in args.threads:
            idle = _result(_spawn(threads, wait, args.seconds, 0))
            rows.append((wait, threads, "idle", idle["threads"], [idle["it_s"]]))
            # "auto" beside a busy machine: start the competitor first, let the load
            # average see it, then start the measured run
            settle = 10 if threads != "auto" else 60
            first = _spawn(threads, wait, settle + args.seconds + 15, 1)
            time.sleep(settle)
            second = _spawn(threads, wait, args.seconds, 0)
            b = _result(second)
            a = _result(first)
            rows.append((wait, threads, "busy", b["threads"], [b["it_s"], a["it_s"]]))
    best = max(r[4][0] for r in rows if r[2] == "idle")
    print(
        f"{'wait':<8} {'threads':>7} {'load':<5} {'used':>4} {'it/s':>7} {'vs best idle':>12} "
        f"{'other run':>9} {'sum':>6}"
    )
    for wait, threads, load, used, speeds in rows:
        other = f"{speeds[1]:9.2f}" if len(speeds) > 1 else f"{'':>9}"
        total = f"{sum(speeds):6.2f}" if len(speeds) > 1 else f"{'':>6}"
        print(
            f"{wait:<8} {threads:>7} {load:<5} {used:>4} {speeds[0]:7.2f} "
            f"{speeds[0] / best:12.2f} {other} {total}"
        )


if __name__ == "__main__":
    main()

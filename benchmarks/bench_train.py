"""Training speed: iterations/second and peak memory of masked pretraining steps.

For each backbone this measures, on the same data, model size, batch and crop:

* ``bare``: a minimal loop (masked input, masked L1, ``backward()``, Adam ``step()``,
  ``zero_grad()``) over batches already in memory;
* ``loop``: :func:`ramir.training.train` itself (data loader, schedule, masks, loss
  accumulation, NaN guard, JSONL logging every ``--log-every`` steps; no EMA, progress
  bar, TensorBoard or checkpoints except the last one, which is not timed);

and prints it/s for both and the loop's overhead ``bare_it_s / loop_it_s - 1`` (aim: below
5%). The ``probe`` row (a one-convolution network whose step costs almost nothing) gives
the loop's own cost per step in milliseconds, the figure to compare with a backbone's
step time when run-to-run noise hides a few percent. Each measurement runs in a fresh subprocess so its peak memory (CPU: max RSS; GPU:
``torch.cuda.max_memory_allocated``) is its own; ``--repeats`` alternating runs keep the
best of each to damp noise from other work on the machine.

Examples::

    python benchmarks/bench_train.py                     # tiny + full backbones, CPU
    python benchmarks/bench_train.py --models nafnet_tiny ram_swinir_tiny --iters 50
    python benchmarks/bench_train.py --device cuda --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch
from torch.utils.data import Dataset

# name: (arch, constructor args, batch, crop, timed iterations on CPU, warm-up iterations)
BACKBONES: dict[str, tuple[str, dict[str, Any], int, int, int, int]] = {
    # the named sizes of ramir.models (this benchmark's NAFNet is twice as wide)
    "nafnet_tiny": ("nafnet_tiny", {"width": 16}, 8, 64, 40, 3),
    "ram_swinir_tiny": ("ram_swinir_tiny", {}, 8, 32, 40, 3),
    "probe": ("bench_probe", {}, 8, 64, 300, 20),
    # full size: seconds per step on a CPU, so small batches/crops and few steps there
    "ram_swinir": ("ram_swinir", {}, 1, 32, 4, 1),
    "ram_promptir": ("ram_promptir", {}, 1, 32, 4, 1),
}


def _register_probe() -> None:
    """Register ``bench_probe``: one 1x1 convolution, to time the loop around the model."""
    from torch import nn

    from ramir.models import MODELS
    from ramir.models.base import RestorationModel

    class Probe(RestorationModel):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

    if "bench_probe" not in MODELS:
        MODELS.add("bench_probe", Probe)


class MemoryPairs(Dataset):
    """Random ``(3, crop, crop)`` pairs in [0, 1], made once and kept in memory."""

    def __init__(self, n: int, crop: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.gt = torch.rand(n, 3, crop, crop, generator=g)
        self.lq = (self.gt + 0.1 * torch.randn(self.gt.shape, generator=g)).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.gt)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"lq": self.lq[i], "gt": self.gt[i], "index": i}


def _peak_memory(device: torch.device) -> float:
    """Peak memory in MiB: CUDA allocator peak, or this process's max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if platform.system() == "Darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bare(name: str, device: torch.device, iters: int, warmup: int) -> dict[str, float]:
    from ramir.masking import random_mask
    from ramir.models import build_model
    from ramir.training.losses import masked_l1_loss

    arch, kwargs, batch, crop, _, _ = BACKBONES[name]
    torch.manual_seed(0)
    model = build_model(arch, **kwargs).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    data = MemoryPairs(batch * 4, crop)
    norm = model.normalization
    g = torch.Generator().manual_seed(0)
    start = 0.0
    for it in range(warmup + iters):
        if it == warmup:
            _sync(device)
            start = time.perf_counter()
        k = (it % 4) * batch
        lq = norm.normalize(data.lq[k : k + batch].to(device))
        gt = norm.normalize(data.gt[k : k + batch].to(device))
        mask = random_mask(crop, crop, generator=g).to(device)
        loss = masked_l1_loss(model(lq, mask), gt, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return {"it_per_s": iters / (time.perf_counter() - start), "peak_mib": _peak_memory(device)}


def run_loop(
    name: str, device: torch.device, iters: int, warmup: int, log_every: int
) -> dict[str, float]:
    from ramir.config import from_dict
    from ramir.training import TrainingConfig, train

    arch, kwargs, batch, crop, _, _ = BACKBONES[name]
    cfg = from_dict(
        TrainingConfig,
        {
            "model": {"name": arch, "args": kwargs},
            "train": {
                "total_iter": warmup + iters,
                "batch_size": batch,
                "input": "masked",
                "device": device.type,
            },
            "optim": {"lr": 1e-4, "betas": [0.9, 0.99]},
            "logging": {
                "log_every": log_every,
                "tensorboard": False,
                "progress": False,
                "plot": False,
            },
            "checkpoint": {"every": 10**9, "keep_last": 1},
        },
    )
    stamps: dict[int, float] = {}

    def on_step(iteration: int) -> None:
        if iteration in (warmup, warmup + iters - 1):
            _sync(device)
            stamps[iteration] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        # the last iteration writes the final checkpoint: time up to the one before it
        train(cfg, out, dataset=MemoryPairs(batch * 4, crop), on_step=on_step)
    elapsed = stamps[warmup + iters - 1] - stamps[warmup]
    return {"it_per_s": (iters - 1) / elapsed, "peak_mib": _peak_memory(device)}


def _child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    _register_probe()
    if args.mode == "bare":
        res = run_bare(args.one, device, args.iters, args.warmup)
    else:
        res = run_loop(args.one, device, args.iters, args.warmup, args.log_every)
    print("RESULT " + json.dumps(res))


def _measure(
    name: str, mode: str, args: argparse.Namespace, iters: int, warmup: int
) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        name,
        "--mode",
        mode,
        "--device",
        args.device,
        "--iters",
        str(iters),
        "--warmup",
        str(warmup),
        "--log-every",
        str(args.log_every),
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} {mode} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--repeats", type=int, default=3, help="alternating runs; the best is kept")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=0, help="timed steps (0: per-model default)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps")
    p.add_argument("--log-every", type=int, default=10, help="the loop's logging interval")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["bare", "loop"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        _child(args)
        return

    from ramir.models import build_model, count_parameters

    _register_probe()
    print(
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
        + f", torch {torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
        f"{args.repeats} alternating runs (best kept), loop logs every {args.log_every} it"
    )
    header = (
        f"{'backbone':<16} {'params':>8} {'batch x crop':>12} {'bare it/s':>10} "
        f"{'loop it/s':>10} {'overhead':>9} {'bare MiB':>9} {'loop MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name in args.models:
        arch, kwargs, batch, crop, default_iters, default_warmup = BACKBONES[name]
        gpu = args.device.startswith("cuda")
        iters = max(2, args.iters or default_iters * (10 if gpu else 1))
        warmup = max(
            1, args.warmup if args.warmup is not None else default_warmup * (3 if gpu else 1)
        )
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for mode in ("bare", "loop"):
                r = _measure(name, mode, args, iters, warmup)
                if mode not in best or r["it_per_s"] > best[mode]["it_per_s"]:
                    best[mode] = r
        overhead = best["bare"]["it_per_s"] / best["loop"]["it_per_s"] - 1
        n = count_parameters(build_model(arch, **kwargs))
        row = {
            "backbone": name,
            "params": n,
            "batch": batch,
            "crop": crop,
            "iters": iters,
            "bare_it_per_s": best["bare"]["it_per_s"],
            "loop_it_per_s": best["loop"]["it_per_s"],
            "overhead": overhead,
            "bare_peak_mib": best["bare"]["peak_mib"],
            "loop_peak_mib": best["loop"]["peak_mib"],
        }
        rows.append(row)
        print(
            f"{name:<16} {n / 1e6:>7.2f}M {f'{batch} x {crop}':>12} "
            f"{row['bare_it_per_s']:>10.2f} {row['loop_it_per_s']:>10.2f} {overhead:>+8.1%} "
            f"{row['bare_peak_mib']:>9.0f} {row['loop_peak_mib']:>9.0f}",
            flush=True,
        )
        if name == "probe":
            ms = 1e3 / row["loop_it_per_s"] - 1e3 / row["bare_it_per_s"]
            print(f"{'':<16} the loop's own cost: {ms:.2f} ms per step", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": args.device, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

"""Backbone speed and memory: forward latency and one training step, full size.

For each backbone in ``ramir.models.list_models()`` (default arguments = the paper's full
size) this measures

* forward latency in eval mode under ``torch.no_grad()`` at ``--sizes`` (default 256x256
  and 512x512, batch 1), and
* one training step: batch ``--train-batch`` (4) of ``--train-size`` (64x64) patches,
  L1 loss, ``backward()`` and an Adam step (timed after one warm-up step, so Adam's state
  exists),

with the peak memory of each. ``ram_swinir`` runs in three variants: ``fast`` (the
default: grouped-window SDPA attention with cached plans), ``plain`` (the textbook
attention: explicit ``softmax(q k^T * scale + bias + mask) v``, masks rebuilt on every
call) and ``reference`` (plain attention plus PyTorch's default convolution memory
layout, i.e. the computation of the official architecture code); the ratios to ``fast``
are printed.

Every measurement runs in a fresh subprocess, so the peak memory is that case's own:
on CUDA ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak
resident set (``getrusage`` ``ru_maxrss``) over its size after building the model and
input, i.e. activations and temporaries (plus Adam state and gradients for training).
Before timing, one small (64x64) forward warms up the thread pool and kernels.

``--malloc retain`` asks glibc to keep freed memory for reuse (``mallopt``) instead of
returning every large block to the system: large tensors then avoid fresh page faults on
each allocation. It changes no numbers; the default ``system`` keeps glibc's behaviour.

Examples::

    python benchmarks/bench_models.py                          # everything, CPU
    python benchmarks/bench_models.py --models ram_swinir --sizes 256 --no-train
    python benchmarks/bench_models.py --quick                  # smoke run, tiny sizes
    python benchmarks/bench_models.py --device cuda --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import resource
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from ramir.models import build_model, count_parameters, list_models

VARIANTS = {"ram_swinir": ("fast", "plain", "reference")}


# -- one measurement (runs in a worker process) -------------------------------------------
def _retain_freed_memory() -> None:
    """Keep freed heap memory in the process (glibc) so large tensors reuse pages."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks up to 1 GiB from the heap
    libc.mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD: do not give the heap back


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _prepare(model: torch.nn.Module, variant: str) -> None:
    if variant == "default":
        return
    model.set_attention_impl("fast" if variant == "fast" else "plain")
    if variant == "reference":
        # The official code's convolutions: PyTorch's default memory layout.
        from ramir.models.swin import Conv2d

        for m in model.modules():
            if isinstance(m, Conv2d):
                m.forward = types.MethodType(torch.nn.Conv2d.forward, m)


def measure(spec: dict) -> dict:
    """Time one case described by ``spec`` and return seconds and peak memory."""
    device = torch.device(spec["device"])
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec["malloc"] == "retain" and device.type == "cpu":
        _retain_freed_memory()
    torch.manual_seed(0)
    model = build_model(spec["model"]).to(device)
    _prepare(model, spec["variant"])
    gen = torch.Generator().manual_seed(0)
    size, batch = spec["size"], spec["batch"]
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    warm = torch.randn(1, 3, 64, 64, generator=gen).to(device)
    times = []
    if spec["kind"] == "forward":
        model.eval()
        with torch.no_grad():
            model(warm)
            _sync(device)
            base = _rss_peak_bytes()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            for _ in range(spec["repeats"]):
                start = time.perf_counter()
                model(x)
                _sync(device)
                times.append(time.perf_counter() - start)
    else:
        model.train()
        target = torch.randn(batch, 3, size, size, generator=gen).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
        with torch.no_grad():
            model(warm)
        _sync(device)
        base = _rss_peak_bytes()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        for i in range(spec["repeats"] + 1):  # step 0 is the warm-up (Adam state)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.l1_loss(model(x), target)
            loss.backward()
            optimizer.step()
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_peak_bytes() - base
    return {"seconds": min(times), "mean_seconds": sum(times) / len(times), "peak_bytes": peak}


# -- driver ---------------------------------------------------------------------------------
def run_case(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(result: dict | None) -> tuple[str, str]:
    if result is None:
        return "-", "-"
    if "error" in result:
        return "failed", "-"
    return f"{result['seconds']:.2f}", f"{result['peak_bytes'] / 2**20:.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", nargs="+", default=None, help="default: every network that restores images"
    )
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 512], help="forward sides")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per case (min shown)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--train-size", type=int, default=64, help="training patch side (64)")
    ap.add_argument("--train-batch", type=int, default=4, help="training batch (4)")
    ap.add_argument("--no-train", action="store_true", help="skip the training step")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="ram_swinir variants to time (default: fast plain reference)",
    )
    ap.add_argument("--malloc", choices=["system", "retain"], default="system")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per case")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32/48 px, batch 2")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return 0
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.quick:
        args.sizes, args.train_size, args.train_batch = [32, 48], 32, 2
    models = args.models or list_models(restoring=True)
    unknown = sorted(set(models) - set(list_models()))
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(list_models())}")
    threads = args.threads or torch.get_num_threads()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({name or platform.machine()}), torch {torch.__version__}, "
        f"{threads} threads, malloc {args.malloc}; forward batch 1 at {args.sizes}; "
        f"training step batch {args.train_batch} at {args.train_size}x{args.train_size}, "
        f"L1 + Adam; min of {args.repeats} run(s); peak memory in MiB",
        flush=True,
    )
    rows = []
    for arch in models:
        params = count_parameters(build_model(arch))
        variants = VARIANTS.get(arch, ("default",))
        if args.variants and arch in VARIANTS:
            variants = tuple(v for v in variants if v in args.variants)
        for variant in variants:
            row = {"model": arch, "variant": variant, "params": params, "results": {}}
            cases = [("forward", s, 1) for s in args.sizes]
            if not args.no_train:
                cases.append(("train", args.train_size, args.train_batch))
            for kind, size, batch in cases:
                spec = {
                    "model": arch,
                    "variant": variant,
                    "kind": kind,
                    "size": size,
                    "batch": batch,
                    "repeats": args.repeats,
                    "device": args.device,
                    "threads": threads,
                    "malloc": args.malloc,
                }
                result = run_case(spec, args.timeout)
                key = f"{kind}_{size}"
                row["results"][key] = result
                secs, mem = _fmt(result)
                err = f"  ({result['error']})" if "error" in result else ""
                print(
                    f"  {arch:<13} {variant:<9} {key:<12} {secs:>8} s {mem:>7} MiB{err}", flush=True
                )
            rows.append(row)

    keys = [f"forward_{s}" for s in args.sizes]
    if not args.no_train:
        keys.append(f"train_{args.train_size}")
    header = ["model", "variant", "params"]
    for k in keys:
        header += [f"{k} s", "peak MiB"]
    lines = [header]
    for row in rows:
        line = [row["model"], row["variant"], f"{row['params'] / 1e6:.2f}M"]
        for k in keys:
            line += list(_fmt(row["results"].get(k)))
        lines.append(line)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    print()
    for i, line in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")

    by = {(r["model"], r["variant"]): r["results"] for r in rows}
    fast = by.get(("ram_swinir", "fast"))
    for other in ("plain", "reference"):
        slow = by.get(("ram_swinir", other))
        if not fast or not slow:
            continue
        ratios = []
        for k in keys:
            a, b = fast.get(k, {}), slow.get(k, {})
            if "seconds" in a and "seconds" in b:
                ratios.append(f"{k} {b['seconds'] / a['seconds']:.2f}x")
        print(f"\nram_swinir fast vs {other}: " + ", ".join(ratios))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MAC speed: seconds per 64x64 image at 200 path steps, ours vs the reference way.

For each backbone (full size by default) this times

* ``ours``: :func:`ramir.attribution.mask_attribution_conductance` (activation gradients
  only, ``--chunk`` path steps per forward, gradients consumed by hooks), and
* ``reference way``: the same numbers computed as the authors' script does (one image
  and one path step at a time, a Python loop over pixels for the soft mask, a full
  ``backward()`` with parameter gradients),
  :func:`ramir.attribution.reference.mac_reference`,

on the same image and reveal order, and reports the ratio and how far the scores differ.

Cost per path step does not depend on the number of steps, so ``--steps`` (default 20)
steps are measured and the time is extrapolated linearly to ``--target-steps`` (200, the
paper's N); both ways run the same ``--steps``-step path, so their scores are comparable.
A warm-up run with the same batch shapes precedes each measurement (for a model that
does not declare ``per_sample_outputs`` it also runs the one-off layout probe, cached
per model and shape, that decides whether path steps may share a batch; its cost is a
few forward passes per analysis).

Examples::

    python benchmarks/bench_mac.py                       # ram_swinir + ram_promptir, CPU
    python benchmarks/bench_mac.py --models nafnet --steps 10
    python benchmarks/bench_mac.py --device cuda --chunk 16
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ramir.attribution import list_layers, mask_attribution_conductance, random_orders
from ramir.attribution.reference import mac_reference
from ramir.models import build_model, count_parameters


def test_image(size: int) -> torch.Tensor:
    """A real photo's ``size x size`` centre crop, ``(1, 3, size, size)`` in [0, 1]."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255.0
    h, w = img.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top : top + size, left : left + size].unsqueeze(0).contiguous()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, *args, **kwargs) -> tuple[float, dict[str, float]]:
    sync(device)
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    sync(device)
    return time.perf_counter() - start, out


def compare(fast: dict[str, float], ref: dict[str, float], ratio: float = 0.1) -> dict[str, float]:
    """Max relative difference per layer, difference relative to the top score, selection overlap."""
    top = max(abs(v) for v in ref.values())
    rel = max(abs(fast[k] - ref[k]) / abs(ref[k]) for k in ref if ref[k] != 0)
    rel_top = max(abs(fast[k] - ref[k]) for k in ref) / top
    k = int(ratio * len(ref) + 1e-9)
    sel_f = set(sorted(fast, key=lambda n: -fast[n])[:k])
    sel_r = set(sorted(ref, key=lambda n: -ref[n])[:k])
    return {
        "max_rel_diff": rel,
        "max_diff_over_top_score": rel_top,
        "top10pct_overlap": len(sel_f & sel_r) / max(k, 1),
    }


def bench_model(arch: str, args: argparse.Namespace, device: torch.device, scale: float) -> dict:
    torch.manual_seed(0)
    model = build_model(arch).to(device).eval()
    lq = model.normalization.normalize(test_image(args.size)).to(device)
    order = random_orders(1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    order = order.to(device)
    n_layers = len(list_layers(model))
    print(
        f"\n{arch}: {count_parameters(model) / 1e6:.2f}M parameters, {n_layers} layers", flush=True
    )
    row: dict = {"model": arch, "layers": n_layers, "device": str(device), "ours": {}}
    for chunk in args.chunk:
        # Warm-up with the same batch shapes, which also runs the (cached) layout probe.
        warm = max(2, chunk + args.steps % chunk)
        mask_attribution_conductance(model, lq, steps=warm, order=order, chunk=chunk)
    if not args.no_reference:
        mac_reference(model, lq, steps=2, order=order)
    times: dict[str, list[float]] = {}
    scores: dict[str, dict[str, float]] = {}
    peak: dict[str, float] = {}
    for rep in range(args.repeat):  # interleaved, so a busy spell hits every variant
        runs: list[tuple[str, object, dict]] = [
            (f"chunk {c}", mask_attribution_conductance, {"chunk": c}) for c in args.chunk
        ]
        if not args.no_reference:
            runs.append(("reference", mac_reference, {}))
        for label, fn, kw in runs:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t, out = timed(device, fn, model, lq, steps=args.steps, order=order, **kw)
            times.setdefault(label, []).append(t)
            scores.setdefault(label, out)
            if device.type == "cuda":
                peak[label] = torch.cuda.max_memory_allocated(device) / 2**30
            print(
                f"  [{rep + 1}/{args.repeat}] {label:<10} {t / args.steps:7.3f} s/step", flush=True
            )
    best = {label: min(ts) * scale for label, ts in times.items()}
    first = f"chunk {args.chunk[0]}"
    for chunk in args.chunk:
        label = f"chunk {chunk}"
        row["ours"][chunk] = {"s_per_image": best[label], "peak_gib": peak.get(label)}
        extra = f", peak {peak[label]:.1f} GiB" if label in peak else ""
        line = f"  ours ({label}):  {best[label]:8.1f} s/image{extra}"
        if not args.no_reference:
            diff = compare(scores[label], scores["reference"])["max_rel_diff"]
            row["ours"][chunk]["max_rel_diff"] = diff
            line += f"; max rel. score difference to the reference way {diff:.1e}"
        print(line)
    if not args.no_reference:
        ref = best["reference"]
        row["reference_s_per_image"] = ref
        extra = f", peak {peak['reference']:.1f} GiB" if "reference" in peak else ""
        print(f"  reference way:     {ref:8.1f} s/image{extra}")
        fastest = min(best[f"chunk {c}"] for c in args.chunk)
        row["speedup"] = ref / fastest
        row.update(compare(scores[first], scores["reference"]))
        print(
            f"  speed-up {row['speedup']:.2f}x (best of {args.repeat}); scores vs reference way: "
            f"max relative difference {row['max_rel_diff']:.2e} per layer, "
            f"{row['max_diff_over_top_score']:.2e} of the top score; top-10% selections agree "
            f"on {row['top10pct_overlap']:.0%}"
        )
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["ram_swinir", "ram_promptir"])
    ap.add_argument("--size", type=int, default=64, help="image side (default 64)")
    ap.add_argument("--steps", type=int, default=20, help="path steps measured (default 20)")
    ap.add_argument("--target-steps", type=int, default=200, help="steps reported (default 200)")
    ap.add_argument("--chunk", type=int, nargs="+", default=[4], help="chunk sizes to time")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats; best is kept")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference way")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args()

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = args.target_steps / args.steps
    print("note: timings on a shared machine are noisy; the best of --repeat runs is reported")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.size}x{args.size} image; {args.steps} steps "
        f"measured, times extrapolated to {args.target_steps} steps (x{scale:g})"
    )
    results = [bench_model(arch, args, device, scale) for arch in args.models]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

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

``--analysis`` times whole ``ramir analyze`` runs instead
(:func:`ramir.attribution.analysis.run_analysis` on ``--images`` 64x64 crops of real
photos written to a folder, seconds of the scoring loop): ``unbatched`` (``batch: 1,
chunk: 1``: one image and one path step per forward pass) against every batched
setting (``batch``: each of ``--batch`` images per call x ``chunk``: each of ``--chunk``
path steps per forward pass), in interleaved repeats, and prints seconds per analysis
extrapolated to ``--target-steps``, the ratio to the unbatched run, the largest relative
score difference and whether the rankings and the top-10% selections are the same.
``nafnet_w16`` analyses the default model's weights (``ramir/assets/
default_model.safetensors``) when they ship; other names build that backbone (or named
size) with seeded random weights. On a machine shared with other jobs, ``--threads 1``
gives steadier figures (oversubscribed threads slow every setting several times over).

Examples::

    python benchmarks/bench_mac.py                       # ram_swinir + ram_promptir, CPU
    python benchmarks/bench_mac.py --models nafnet --steps 10
    python benchmarks/bench_mac.py --device cuda --chunk 16
    python benchmarks/bench_mac.py --analysis --models nafnet_w16 ram_swinir_tiny \\
        --images 4 --steps 20 --batch 1 4 --chunk 1 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from importlib import resources
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


PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "colorwheel"]


def write_photos(folder: Path, n: int, size: int) -> None:
    """``n`` centre crops ``size x size`` of scikit-image's colour photos as PNG files."""
    from skimage import data

    from ramir.data.transforms import center_crop
    from ramir.data.write import write_image

    for i in range(n):
        img = torch.from_numpy(getattr(data, PHOTOS[i % len(PHOTOS)])()).permute(2, 0, 1)
        img = center_crop(img.float() / 255.0, size)
        if i >= len(PHOTOS):  # more images than photos: shifted crops of the same ones
            img = torch.roll(img, shifts=(7 * i, 11 * i), dims=(-2, -1))
        write_image(folder / f"{i:02d}_{PHOTOS[i % len(PHOTOS)]}.png", img.contiguous())


def analysis_checkpoint(name: str, folder: Path) -> tuple[Path, str]:
    """The weights file to analyse and what it is."""
    from ramir.checkpoint import save_model

    shipped = Path(str(resources.files("ramir") / "assets" / "default_model.safetensors"))
    if name == "nafnet_w16" and shipped.is_file():
        return shipped, "the default model's weights"
    torch.manual_seed(0)
    return save_model(build_model(name), folder / f"{name}.safetensors"), "seeded random weights"


def _agreement(one: dict[str, float], other: dict[str, float]) -> dict:
    """Largest relative score difference, identical ranking, top-10% selection overlap."""
    rel = max(abs(other[k] - v) / abs(v) for k, v in one.items() if v != 0)
    k = max(1, int(0.1 * len(one)))
    top_one = set(sorted(one, key=lambda n: -one[n])[:k])
    top_other = set(sorted(other, key=lambda n: -other[n])[:k])
    return {
        "max_rel_diff": rel,
        "same_ranking": sorted(other, key=other.get) == sorted(one, key=one.get),
        "top10pct_overlap": len(top_one & top_other) / k,
    }


def bench_analysis(name: str, args: argparse.Namespace, scale: float) -> dict:
    from ramir.attribution.analysis import run_analysis
    from ramir.attribution.config import AnalysisImages, AnalyzeConfig

    settings = [(1, 1)] + [(b, c) for b in args.batch for c in args.chunk if (b, c) != (1, 1)]
    label = {s: f"batch {s[0]} x chunk {s[1]}" for s in settings}
    times: dict[tuple[int, int], list[float]] = {s: [] for s in settings}
    scores: dict[tuple[int, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_photos(folder / "images", args.images, args.size)
        ckpt, what = analysis_checkpoint(name, folder)

        def run(setting: tuple[int, int], steps: int) -> tuple[float, dict[str, float]]:
            cfg = AnalyzeConfig(
                checkpoint=str(ckpt),
                images=AnalysisImages(folder=str(folder / "images"), count=args.images),
                steps=steps, batch=setting[0], chunk=setting[1], device=args.device,
                threads=args.threads, out_dir=str(folder / "out"),
            )  # fmt: skip
            res = run_analysis(cfg, progress=False)
            return res.seconds, res.scores

        print(f"\n{name} ({what}): {args.images} images", flush=True)
        for s in settings:  # warm-up with the same batch shapes (and any layout probe)
            run(s, max(2, s[1] + args.steps % s[1]))
        for rep in range(args.repeat):  # interleaved, so a busy spell hits every setting
            for s in settings:
                seconds, scores[s] = run(s, args.steps)
                times[s].append(seconds)
                print(
                    f"  [{rep + 1}/{args.repeat}] {label[s]:<19} {seconds:7.2f} s for "
                    f"{args.steps} steps",
                    flush=True,
                )
    best = {s: min(ts) * scale for s, ts in times.items()}
    median = {s: statistics.median(ts) * scale for s, ts in times.items()}
    base = (1, 1)
    print(
        f"  seconds per analysis ({args.images} images x {args.target_steps} steps; best of "
        f"{args.repeat}, median in brackets):"
    )
    rows = []
    for s in settings:
        row = {
            "batch": s[0], "chunk": s[1], "s_per_analysis": best[s],
            "median_s_per_analysis": median[s], "speedup": best[base] / best[s],
            "median_speedup": median[base] / median[s],
        }  # fmt: skip
        line = (
            f"    {label[s]:<19} {best[s]:7.1f} s ({median[s]:.1f})  "
            f"{row['speedup']:.2f}x ({row['median_speedup']:.2f}x) vs one input per forward"
        )
        if s != base:
            row.update(_agreement(scores[base], scores[s]))
            line += (
                f"; scores differ by at most {row['max_rel_diff']:.1e} (relative), ranking "
                f"{'identical' if row['same_ranking'] else 'DIFFERENT'}, top-10% selections "
                f"agree on {row['top10pct_overlap']:.0%}"
            )
        print(line, flush=True)
        rows.append(row)
    return {"model": name, "weights": what, "images": args.images, "settings": rows}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", nargs="+", default=["ram_swinir", "ram_promptir"])
    ap.add_argument("--size", type=int, default=64, help="image side (default 64)")
    ap.add_argument("--steps", type=int, default=20, help="path steps measured (default 20)")
    ap.add_argument("--target-steps", type=int, default=200, help="steps reported (default 200)")
    ap.add_argument("--chunk", type=int, nargs="+", default=[4], help="chunk sizes to time")
    ap.add_argument("--analysis", action="store_true", help="time whole analyses (see above)")
    ap.add_argument("--images", type=int, default=4, help="--analysis: images (default 4)")
    ap.add_argument("--batch", type=int, nargs="+", default=[4],
                    help="--analysis: images per call to time (default 4)")  # fmt: skip
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
    if args.analysis:
        results = [bench_analysis(name, args, scale) for name in args.models]
    else:
        results = [bench_model(arch, args, device, scale) for arch in args.models]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

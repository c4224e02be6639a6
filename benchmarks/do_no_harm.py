"""What a model does to photos that need nothing: per-photo changes on clean inputs.

Runs a model on the clean photos of the corpus's evaluation split (``ramir data corpus
--split eval`` fetches them) and prints, photo by photo, the PSNR of the output against
the untouched photo and *how* it changed it:

* ``shift``: mean level change, output minus input, in 8-bit levels (per channel R/G/B
  and overall): a global tone change (brightening is what low-light enhancement does,
  a darker, more contrasted image what dehazing does);
* ``contrast``: standard deviation of the output over that of the input;
* ``detail``: energy of the Laplacian of the output over that of the input (below 1:
  smoothed, as denoising and deblocking do; above 1: sharpened, as deblurring does);
* ``looks like``: the task whose correction the change resembles most, by these rules:
  brighter by more than 3 levels -> low light; darker by more than 3 levels or contrast
  up by more than 5% -> haze; detail below 0.85 -> noise/JPEG (smoothing); detail above
  1.15 -> blur (sharpening); otherwise "-" (a small change).

Then the worst photos, and a count of the "looks like" labels over all photos. This is
the measurement behind the do-no-harm row of the README's default-model table.

Examples::

    python benchmarks/do_no_harm.py                                 # the shipped model
    python benchmarks/do_no_harm.py --model runs/x/model.safetensors --view eval_native
    python benchmarks/do_no_harm.py --folder my_photos/             # any clean photos
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import torch


def laplacian_energy(img: np.ndarray) -> float:
    """Mean squared 4-neighbour Laplacian of an ``(H, W, 3)`` float image."""
    lap = -4 * img[1:-1, 1:-1] + img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]
    return float(np.mean(lap**2))


def describe_change(inp: np.ndarray, out: np.ndarray) -> dict[str, float | str]:
    """How ``out`` differs from ``inp`` (both ``(H, W, 3)`` float in [0, 1])."""
    shift = (out.mean(axis=(0, 1)) - inp.mean(axis=(0, 1))) * 255.0
    contrast = float(out.std() / max(inp.std(), 1e-6))
    detail = laplacian_energy(out) / max(laplacian_energy(inp), 1e-12)
    overall = float(shift.mean())
    if overall > 3:
        label = "low light (brightened)"
    elif overall < -3 or contrast > 1.05:
        label = "haze (darkened/contrast up)"
    elif detail < 0.85:
        label = "noise/JPEG (smoothed)"
    elif detail > 1.15:
        label = "blur (sharpened)"
    else:
        label = "-"
    return {
        "shift": overall,
        "shift_rgb": "/".join(f"{v:+.1f}" for v in shift),
        "contrast": contrast,
        "detail": detail,
        "looks_like": label,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--view", default="eval", choices=["eval", "eval_native"])
    ap.add_argument("--folder", type=Path, default=None, help="clean photos instead of the corpus")
    ap.add_argument("--worst", type=int, default=10, help="how many of the worst photos to list")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ramir.checkpoint import load_model
    from ramir.data.listing import list_images
    from ramir.data.read import read_image
    from ramir.evaluation.metrics import psnr
    from ramir.inference.restore import default_model_path, restore_tensor

    if args.folder is not None:
        files = list_images(args.folder, recursive=True)
    else:
        from ramir.corpus.views import view_files

        files = view_files(args.view)
    model = load_model(args.model or default_model_path())
    rows = []
    for f in files:
        x = read_image(f).rgb
        y = restore_tensor(model, x[None])[0]
        q = lambda t: np.round(t.clamp(0, 1).permute(1, 2, 0).numpy() * 255) / 255  # noqa: E731
        rows.append({"photo": f.stem, "psnr": float(psnr(y, x)), **describe_change(q(x), q(y))})
    rows.sort(key=lambda r: r["psnr"])
    ps = [r["psnr"] for r in rows]
    print(
        f"model: {args.model or 'shipped default'}; {len(rows)} clean photos ({args.folder or args.view})"
    )
    print(
        f"PSNR of the output against the input: median {statistics.median(ps):.2f} dB, "
        f"worst {min(ps):.2f} dB, mean {statistics.fmean(ps):.2f} dB; "
        f"{sum(p < 35 for p in ps)} photos under 35 dB, {sum(p < 40 for p in ps)} under 40 dB"
    )
    shifts = [abs(r["shift"]) for r in rows]
    print(f"mean |level shift|: {statistics.fmean(shifts):.2f} levels (max {max(shifts):.1f})")
    print(
        f"\n{'photo':36s} {'PSNR':>6s} {'shift (R/G/B)':>20s} {'contrast':>8s} {'detail':>7s}  looks like"
    )
    for r in rows[: args.worst]:
        print(
            f"{r['photo'][:36]:36s} {r['psnr']:6.2f} {r['shift']:+6.1f} ({r['shift_rgb']:>14s})"
            f" {r['contrast']:8.3f} {r['detail']:7.3f}  {r['looks_like']}"
        )
    print("\nwhat the change looks like, over all photos:")
    for label, n in Counter(r["looks_like"] for r in rows).most_common():
        sub = [r["psnr"] for r in rows if r["looks_like"] == label]
        print(f"  {label:28s} {n:3d} photos, median PSNR {statistics.median(sub):.2f} dB")


if __name__ == "__main__":
    main()

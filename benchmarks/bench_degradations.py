"""Degradation speed: NumPy per sample (today's data path) against the batched tensor
versions (``ramir.degradations.device``), samples/second.

For every degradation the training recipes use (with the recipes' training parameters)
this times the NumPy function on ``--batch`` crops of real photos one at a time (each with
its own generator, as a data worker does), and the batched version on the same crops as
one ``(B, 3, H, W)`` tensor on ``--device`` (generator on that device). Columns:
"NumPy", samples/s of the NumPy functions on ``(H, W, C)`` arrays; "route", of
``apply_batch(..., path="numpy")`` (the same from a tensor batch, conversions included);
"batched", of ``path="batched"``; "ratio", batched / NumPy (> 1: batched is faster);
"CPU", the same ratio in CPU time of this process (other processes on a shared machine
do not inflate it); "vs rt", batched / route, what ``path="auto"`` decides on the CPU
(``CPU_NUMPY_FASTER``); last, the path ``auto`` takes on that device. The JPEG section times the tensor codec against Pillow per sample on the
device (the choice ``jpeg_backend`` makes) and prints the PSNR between the tensor codec's
and Pillow's output on whole photos at quality 10, 20, 40, 60 and 90.

Examples::

    python benchmarks/bench_degradations.py                   # CPU, 2 threads, batch 32 of 128 x 128
    python benchmarks/bench_degradations.py --threads 1
    python benchmarks/bench_degradations.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: idle threads sleep

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

import ramir.degradations as D  # noqa: E402
import ramir.degradations.device as DD  # noqa: E402
from ramir.degradations.chain import CAMERA_STEPS  # noqa: E402
from ramir.degradations.device import compression  # noqa: E402

# The recipes' training tasks (configs/data/synthetic7.yaml, configs/default_model.yaml).
TASKS: list[tuple[str, str, dict]] = [
    ("identity", "identity", {}),
    ("noise", "gaussian_noise", {"sigma_range": [0, 50]}),
    ("blur", "gaussian_blur", {"sigma_range": [2.0, 3.0]}),
    ("motion_blur", "motion_blur", {}),
    ("jpeg", "jpeg", {"quality_range": [10, 90]}),
    ("haze", "haze", {}),
    ("haze scene 1-8", "haze", {"scene_scale_range": [1, 8]}),
    ("rain", "rain", {}),
    ("low_light", "low_light", {}),
    ("mixed (chain)", "chain", {"steps": [dict(s) for s in CAMERA_STEPS]}),
]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def crops(n: int, size: int) -> np.ndarray:
    """``n`` random ``size`` crops of scikit-image's photos, float32 ``(n, size, size, 3)``."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = getattr(skdata, PHOTOS[i % len(PHOTOS)])()[:, :, :3]
        y = int(rng.integers(0, img.shape[0] - size + 1))
        x = int(rng.integers(0, img.shape[1] - size + 1))
        out.append(img[y : y + size, x : x + size].astype(np.float32) / 255.0)
    return np.stack(out)


def timeit(
    fns: list[Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> list[tuple[float, float]]:
    """Median ``(wall, CPU)`` seconds of each of ``fns`` over ``repeats`` rounds, after a
    warm-up. The functions take turns in every round, so a load that comes and goes on a
    shared machine slows them alike; the CPU time (this process, all threads) is the
    work done, which other processes do not inflate."""
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for r in range(repeats + 1):
        for fn, ts in zip(fns, times, strict=True):
            t, c = time.perf_counter(), time.process_time()
            fn()
            sync()
            if r:
                ts.append((time.perf_counter() - t, time.process_time() - c))
    return [
        (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for ts in times
    ]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def jpeg_psnr(device: torch.device) -> dict[int, float]:
    """PSNR (dB) of the tensor codec against Pillow over whole photos, per quality."""
    out = {}
    for q in (10, 20, 40, 60, 90):
        vals = []
        for name in ("astronaut", "coffee", "chelsea"):
            u8 = getattr(skdata, name)()[:, :, :3]
            buf = io.BytesIO()
            Image.fromarray(u8).save(buf, format="JPEG", quality=q)
            buf.seek(0)
            with Image.open(buf) as im:
                ref = np.asarray(im)
            x = torch.from_numpy(u8.astype(np.float32) / 255).permute(2, 0, 1)[None].to(device)
            got = compression.jpeg_tensor(x, q)[0].permute(1, 2, 0).cpu().numpy()
            vals.append(psnr(np.rint(got * 255), ref))
        out[q] = min(vals)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    imgs = crops(args.batch, args.size)
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy()).to(dev)
    print(
        f"batch {args.batch} x 3 x {args.size} x {args.size}, device {dev}"
        f"{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, "
        f"{args.threads} CPU threads, torch {torch.__version__}, {platform.processor() or ''}"
    )
    print(
        f"{'samples/s':<16}{'NumPy':>8}{'route':>9}{'batched':>9}{'ratio':>9}{'CPU':>9}{'vs rt':>9}"
    )
    rows = {}
    for label, name, params in TASKS:
        fn = D.get(name)

        def numpy_path(fn=fn, params=params) -> None:
            for i in range(len(imgs)):
                fn(imgs[i], np.random.default_rng(i), **params)

        g = torch.Generator(device=dev).manual_seed(0)
        deg = DD.batch_version(name, params)
        (w_np, c_np), (w_r, _), (w_b, c_b) = timeit(
            [
                numpy_path,
                lambda deg=deg, g=g: deg(x, g, "numpy"),
                lambda deg=deg, g=g: deg(x, g, "batched"),
            ],
            args.repeats,
            sync,
        )
        sps_np, sps_r, sps_b = args.batch / w_np, args.batch / w_r, args.batch / w_b
        route = DD.preferred_path(name, dev)
        rows[label] = {
            "numpy": sps_np,
            "numpy_route": sps_r,
            "batched": sps_b,
            "ratio": sps_b / sps_np,
            "cpu_ratio": c_np / c_b,
            "batched_vs_route": sps_b / sps_r,
            "auto": route,
        }
        print(
            f"{label:<16}{sps_np:>8.0f}{sps_r:>9.0f}{sps_b:>9.0f}{sps_b / sps_np:>8.2f}x"
            f"{c_np / c_b:>8.2f}x{sps_b / sps_r:>8.2f}x   {route}"
        )

    q = torch.randint(10, 91, (args.batch,), generator=torch.Generator().manual_seed(0))
    (t_tensor, _), (t_pil, _) = timeit(
        [lambda: compression.jpeg_tensor(x, q), lambda: compression.jpeg_pil(x, q)],
        args.repeats,
        sync,
    )
    choice = compression.jpeg_backend(dev)
    print(
        f"\nJPEG on {dev}: tensor codec {args.batch / t_tensor:.0f} samples/s, Pillow per sample "
        f"{args.batch / t_pil:.0f} samples/s (tensor / Pillow = {t_pil / t_tensor:.2f}x); "
        f"jpeg_backend({dev.type!r}) = {choice!r}"
    )
    scores = jpeg_psnr(dev)
    print(
        "JPEG tensor codec vs Pillow, worst PSNR over astronaut/coffee/chelsea: "
        + ", ".join(
            f"q{k} {v:.1f} dB" if v != float("inf") else f"q{k} inf" for k, v in scores.items()
        )
    )
    if args.json:
        out = {
            "device": str(dev),
            "batch": args.batch,
            "size": args.size,
            "threads": args.threads,
            "tasks": rows,
            "jpeg": {"tensor": args.batch / t_tensor, "pil": args.batch / t_pil, "choice": choice},
            "jpeg_psnr": {str(k): (None if v == float("inf") else v) for k, v in scores.items()},
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

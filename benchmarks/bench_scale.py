"""Restoration throughput at scale: processes under torchrun, batched tiles and images.

Two parts, each printing images per second and the ratio to the baseline, **one
process, one tile (or image) at a time** (``--batch-size 1``, no reader/writer thread):

* ``--part procs`` (CPU): ``ramir restore`` of a folder of photos (mixed sizes around
  ``--size``) with 1 process and with ``torchrun --nproc-per-node 2..N`` (gloo, one
  thread each), the whole command timed (start-up included: it is what a user waits
  for). Outputs are checked byte for byte against the single process.
* ``--part batch`` (GPU, or CPU for a smoke run): :func:`ramir.inference.batch.restore_files` in
  this process on photos of ``--sizes`` (512: whole images, batched across images;
  2048: tiles of 512, batched within the image) for ``--batch-sizes`` (and ``auto``),
  with the shipped model and RAM-PromptIR at paper size (seeded random weights: the
  speed does not depend on them). Timed from the first read to the last write,
  model loading excluded; reading and writing overlap the network on CUDA.

Examples::

    python benchmarks/bench_scale.py --part procs --images 32            # this CPU
    python benchmarks/bench_scale.py --part batch --device cuda          # a GPU
    python benchmarks/bench_scale.py --part batch --device cpu --smoke   # plumbing

Photos are the scikit-image ones (astronaut, coffee, chelsea, ...) resized to each size,
so the model sees real content; JPEG files, as a photo album would be.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def photos(folder: Path, count: int, sizes: list[tuple[int, int]], seed: int = 0) -> None:
    """``count`` JPEG photos in ``folder``, cycling through ``sizes`` ``(H, W)`` and the
    scikit-image photos, each a random crop (seeded) resized to its size."""
    from PIL import Image
    from skimage import data as skdata

    sources = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        src = sources[i % len(sources)]
        top = int(rng.integers(0, src.shape[0] // 4 + 1))
        left = int(rng.integers(0, src.shape[1] // 4 + 1))
        crop = Image.fromarray(src[top:, left:]).resize((w, h), Image.Resampling.BICUBIC)
        crop.save(folder / f"photo_{i:04d}.jpg", quality=92)


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(k, None)
    return env


def _timed(cmd: list[str], threads: int) -> float:
    t = time.perf_counter()
    res = subprocess.run(cmd, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return wall


def part_procs(a: argparse.Namespace) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        s = a.size
        photos(work / "in", a.images, [(s, s), (s * 3 // 4, s), (s, s * 5 // 4)])
        base = ["restore", str(work / "in"), "-q", "--batch-size", "1"]
        if a.model:
            base += ["--model", str(a.model)]
        print(f"{a.images} photos of {s}x{s}, {s * 3 // 4}x{s} and {s}x{s * 5 // 4}; {cpus} CPUs; "
              f"whole command timed (start-up included), best of {a.repeat}")  # fmt: skip
        one = min(
            _timed(
                [
                    sys.executable,
                    "-m",
                    "ramir",
                    *base,
                    "-o",
                    str(work / "one"),
                    "--threads",
                    str(cpus),
                ],
                cpus,
            )  # fmt: skip
            for _ in range(a.repeat)
        )
        print(f"  1 process, {cpus} threads, one tile at a time: {one:6.1f} s  "
              f"{a.images / one:6.2f} img/s  (baseline)")  # fmt: skip
        single = min(
            _timed(
                [
                    sys.executable,
                    "-m",
                    "ramir",
                    *base,
                    "-o",
                    str(work / "single"),
                    "--threads",
                    "1",
                ],
                1,
            )  # fmt: skip
            for _ in range(a.repeat)
        )
        print(f"  1 process, 1 thread:                {single:6.1f} s  "
              f"{a.images / single:6.2f} img/s  x{one / single:.2f}")  # fmt: skip
        # the same threads per process give the same bytes (threads change float rounding)
        reference = {p.name: p.read_bytes() for p in (work / "single").iterdir()}
        for n in range(2, a.procs + 1):
            torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                        "--nproc-per-node", str(n), "-m", "ramir"]  # fmt: skip
            threads = max(1, cpus // n)
            out = work / f"procs{n}"
            wall = min(
                _timed([*torchrun, *base, "-o", str(out), "--threads", str(threads)], threads)
                for _ in range(a.repeat)
            )
            same = {p.name: p.read_bytes() for p in out.iterdir()} == reference
            check = ""
            if threads == 1:
                check = "  outputs identical to 1 thread" if same else "  OUTPUTS DIFFER"
            print(f"  {n} processes (gloo), {threads} thread(s) each: {wall:6.1f} s  "
                  f"{a.images / wall:6.2f} img/s  x{one / wall:.2f}{check}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _model(name: str, smoke: bool) -> torch.nn.Module:
    from ramir.checkpoint import load_model
    from ramir.inference.restore import default_model_path
    from ramir.models import build_model

    if name == "default":
        return load_model(default_model_path()).eval()
    torch.manual_seed(0)
    return build_model(f"{name}_tiny" if smoke else name).eval()


def part_batch(a: argparse.Namespace) -> None:
    from ramir.inference.batch import restore_files

    device = torch.device(a.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    deadline = time.perf_counter() + a.budget
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        for name in a.models:
            model = _model(name, a.smoke).to(device)
            for size in a.sizes:
                count = a.images_small if size <= 1024 else a.images_large
                folder = work / f"in{size}"
                if not folder.exists():
                    photos(folder, count, [(size, size)])
                tile = "auto" if size <= 1024 else 512
                kind = "whole images" if size <= 1024 else "tiles of 512"
                restore_files(model, [next(folder.iterdir())], work / "warm", tile=tile,
                              device=device, progress=False, batch_size=1)  # fmt: skip
                base = None
                settings = [(1, False), *((b, True) for b in a.batch_sizes)]
                for bs, overlap in settings:
                    if time.perf_counter() > deadline:
                        print("  (budget spent: the rest skipped)")
                        return
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    t = time.perf_counter()
                    report = restore_files(model, [folder], out, tile=tile, device=device,
                                           progress=False, batch_size=bs, overlap_io=overlap)  # fmt: skip
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    wall = time.perf_counter() - t
                    if report.failed:
                        print(f"  {report.failed[0]}")
                    rate = len(report.written) / wall
                    base = base or rate
                    mem = ""
                    if device.type == "cuda":
                        mem = f"  peak {torch.cuda.max_memory_allocated() / 2**30:5.1f} GiB"
                    label = f"batch {bs}" + ("" if overlap else ", no reader/writer threads")
                    print(f"  {name:12s} {size}x{size} ({kind}, {count} photos) {label:38s} "
                          f"{rate:7.2f} img/s  x{rate / base:.2f}{mem}", flush=True)  # fmt: skip
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _batch(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=["procs", "batch"], required=True)
    p.add_argument("--images", type=int, default=32, help="procs: photos in the folder")
    p.add_argument("--size", type=int, default=384, help="procs: photo size (three shapes)")
    p.add_argument("--procs", type=int, default=2, help="procs: up to this many processes")
    p.add_argument("--repeat", type=int, default=1, help="procs: best of this many runs")
    p.add_argument("--model", type=Path, default=None, help="procs: checkpoint (default: shipped)")
    p.add_argument("--device", default="cuda", help="batch: cuda or cpu")
    p.add_argument("--models", nargs="+", default=["default", "ram_promptir"])
    p.add_argument("--sizes", nargs="+", type=int, default=[512, 2048])
    p.add_argument("--batch-sizes", nargs="+", type=_batch, default=[1, 8, 32, "auto"])
    p.add_argument("--images-small", type=int, default=64, help="batch: photos of <= 1024")
    p.add_argument("--images-large", type=int, default=4, help="batch: photos of > 1024")
    p.add_argument("--budget", type=float, default=300, help="batch: seconds, then stop")
    p.add_argument("--smoke", action="store_true", help="batch: tiny models (plumbing)")
    a = p.parse_args(argv)
    if a.part == "procs":
        part_procs(a)
    else:
        part_batch(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())

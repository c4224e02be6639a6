"""Start-up time of the command line: what a user waits before anything happens.

Runs each command in a fresh process ``--repeats`` times and prints the best and median
wall time:

* ``ramir --version`` and ``ramir --help``: parsers only (no PyTorch, NumPy or SciPy);
* ``import torch``: the floor for any command that computes;
* ``ramir restore`` of one 512x512 photo with the shipped model (``--threads auto``),
  next to the time the restoration itself takes in a warm process, so the start-up's
  share of the command is visible.

Examples::

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAMIR = [sys.executable, "-m", "ramir"]


def _timed(cmd: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def _warm_restore_seconds(photo: Path, repeats: int) -> float:
    code = (
        "import time, ramir, torch\n"
        "from ramir.inference.restore import default_model_path\n"
        "m = ramir.load_model(default_model_path())\n"
        f"ramir.restore(m, {str(photo)!r})\n"
        "best = 1e9\n"
        f"for _ in range({repeats}):\n"
        "    t = time.perf_counter()\n"
        f"    ramir.restore(m, {str(photo)!r})\n"
        "    best = min(best, time.perf_counter() - t)\n"
        "print(best)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(np.ascontiguousarray(skdata.astronaut()[:512, :512])).save(photo)
        rows = [
            ("ramir --version", _timed([*RAMIR, "--version"], args.repeats)),
            ("ramir --help", _timed([*RAMIR, "--help"], args.repeats)),
            ("python -c 'import torch'", _timed([sys.executable, "-c", "import torch"], 3)),
            (
                "ramir restore 512x512 (whole command)",
                _timed([*RAMIR, "restore", str(photo), "-o", f"{tmp}/out", "-q"], args.repeats),
            ),
        ]
        warm = _warm_restore_seconds(photo, args.repeats)
    print(f"# {sys.platform}, Python {sys.version.split()[0]}, best / median of {args.repeats}")
    print(f"{'command':<40} {'best s':>8} {'median s':>9}")
    for name, times in rows:
        print(f"{name:<40} {min(times):8.2f} {statistics.median(times):9.2f}")
    whole = min(rows[-1][1])
    print(f"{'restore 512x512 in a warm process':<40} {warm:8.2f}")
    print(f"start-up share of `ramir restore`: {(whole - warm) / whole:.0%} ({whole - warm:.2f} s)")


if __name__ == "__main__":
    main()

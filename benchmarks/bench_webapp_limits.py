"""Peak memory of ``ramir serve`` under hostile uploads (Linux: the server's VmHWM).

Starts ``ramir serve --device cpu`` (the shipped model, default limits; a CPU measurement
even where CUDA is available) in a subprocess and sends:

* ``png_bomb``: a 1-bit PNG of a few KB that declares 13000x13000 pixels;
* ``tiff_bomb``: a zlib-compressed 16-bit TIFF that declares 8000x8000 pixels;
* ``flood``: 12 uploads at once of a small PNG that declares 2000x2000 pixels (more
  than the queue holds: the rest get 503);

and prints, for each, the answers and the server's peak resident memory so far, then the
peak after every accepted job has been restored, and what is left in its temporary
folder after SIGTERM.

Example::

    python benchmarks/bench_webapp_limits.py
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, body: bytes, name: str) -> int:
    req = urllib.request.Request(f"{url}/api/restore?filename={name}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _bodies() -> dict[str, bytes]:
    import tifffile

    png = io.BytesIO()
    Image.new("1", (13000, 13000)).save(png, format="PNG")
    tif = io.BytesIO()
    tifffile.imwrite(tif, np.zeros((8000, 8000), np.uint16), compression="zlib", tile=(512, 512))
    small = io.BytesIO()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (2000, 2000), dtype=np.uint8) // 64 * 64  # compresses well
    Image.fromarray(noise).save(small, format="PNG", optimize=True)
    return {"png_bomb": png.getvalue(), "tiff_bomb": tif.getvalue(), "flood": small.getvalue()}


def main() -> None:
    bodies = _bodies()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TMPDIR": tmp}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ramir", "serve", "--port", "0", "--device", "cpu"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            url = line.split(" on ")[1].split()[0].rstrip("/")
            print(
                f"# ramir serve, default limits; server start-up peak {_peak_mb(proc.pid):.0f} MB"
            )
            print(f"{'case':<10} {'upload':>10} {'answers':<28} {'peak MB':>8}")
            for name in ("png_bomb", "tiff_bomb"):
                status = _post(url, bodies[name], f"{name}.png")
                size = f"{len(bodies[name]) / 1024:.0f} KB"
                print(f"{name:<10} {size:>10} {status!s:<28} {_peak_mb(proc.pid):8.0f}")
            with ThreadPoolExecutor(12) as pool:
                codes = list(
                    pool.map(lambda i: _post(url, bodies["flood"], f"f{i}.png"), range(12))
                )
            summary = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
            size = f"{len(bodies['flood']) / 1024:.0f} KB"
            print(f"{'flood':<10} {size:>10} {summary:<28} {_peak_mb(proc.pid):8.0f}")
            deadline = time.monotonic() + 600
            # wait for the worker: the server answers jobs as they finish
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                cpu = Path(f"/proc/{proc.pid}/stat").read_text().split()
                before = int(cpu[13]) + int(cpu[14])
                time.sleep(3)
                cpu = Path(f"/proc/{proc.pid}/stat").read_text().split()
                if int(cpu[13]) + int(cpu[14]) - before < 10:  # idle: the queue is empty
                    break
            print(f"{'after all accepted jobs ran':<50} {_peak_mb(proc.pid):8.0f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        left = [p.name for p in Path(tmp).iterdir()]
        print(f"temporary files left after SIGTERM: {left or 'none'}")


if __name__ == "__main__":
    main()

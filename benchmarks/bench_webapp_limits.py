"""``ramir serve`` under hostile clients (Linux: the server's /proc/PID/status).

Starts ``ramir serve --device cpu`` (the shipped model, default limits; a CPU measurement
even where CUDA is available) in a subprocess and runs, each case on its own (the
server's peak memory, VmHWM, is reset before each through ``/proc/PID/clear_refs``):

* ``big_uploads``: 16 uploads at once of 45 MB each (random bytes: not an image);
* ``slow_senders``: 8 uploads that declare 64 KB and send their body at 4 bytes/s;
* ``slowloris``: N sockets (``--slowloris``, default 1000) that send a request line and
  then one more header line every 5 s, never finishing their headers;
* ``short_body``: 8 uploads that declare 1 MB, send 1 KB and then nothing;
* ``png_bomb``: a 1-bit PNG of a few KB that declares 13000x13000 pixels;
* ``tiff_bomb``: a zlib-compressed 16-bit TIFF that declares 8000x8000 pixels;
* ``flood``: 12 uploads at once of a small PNG that declares 2000x2000 pixels (more
  than the server takes at once: the rest get 503), then the peak once the accepted
  jobs ran.

For each: what the clients got (status codes, ``closed``: the server closed the socket
without an answer, ``reset``: a TCP reset, ``open``: still open when the case ended, with
the seconds after which the server ended them), the server's peak resident memory during
the case, its most threads during the case and its threads once the clients are gone,
and whether a normal request (``GET /api/info``) made in the middle of the case was
answered, and how fast. Last, what is left in its temporary folder after SIGTERM, and how
many tracebacks the server printed.

To measure another version of ``ramir`` (say, the last commit), put its ``src`` first
on ``PYTHONPATH``::

    python benchmarks/bench_webapp_limits.py                      # every case
    python benchmarks/bench_webapp_limits.py --cases slowloris,short_body --slowloris 300
    git worktree add /tmp/ramir_old HEAD && \\
        PYTHONPATH=/tmp/ramir_old/src python benchmarks/bench_webapp_limits.py
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CASES = (
    "big_uploads",
    "slow_senders",
    "slowloris",
    "short_body",
    "png_bomb",
    "tiff_bomb",
    "flood",
)


# ------------------------------------------------------------------------ the server side
def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _peak_mb(pid: int) -> float:
    return int(_status(pid)["VmHWM"].split()[0]) / 1024


def _threads(pid: int) -> int:
    return int(_status(pid)["Threads"])


def _reset_peak(pid: int) -> None:
    """VmHWM back to the current resident size (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


class Sampler:
    """The server's most threads, polled every 50 ms while a case runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_threads = _threads(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.max_threads = max(self.max_threads, _threads(self.pid))
            except (OSError, KeyError, ValueError):
                return

    def __enter__(self) -> Sampler:
        _reset_peak(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------ the client side
def _post(url: str, body: bytes, name: str) -> str:
    req = urllib.request.Request(f"{url}/api/restore?filename={name}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return str(r.status)
    except urllib.error.HTTPError as e:
        return str(e.code)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ConnectionResetError | BrokenPipeError):
            return "reset"
        return type(reason).__name__


def _probe(url: str, timeout: float = 10.0) -> str:
    """A normal request: answered, and how fast."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/api/info", timeout=timeout) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except (urllib.error.URLError, OSError) as e:
        return f"no ({type(getattr(e, 'reason', e)).__name__})"
    return f"{code} in {time.monotonic() - start:.2f} s"


class RawClient:
    """A socket that sends what it is told, when it is told, and notes how it ended."""

    def __init__(self, address: tuple[str, int], head: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(address)  # in progress: see _open
        self.head = head
        self.connected = False
        self.start = time.monotonic()
        self.answer = b""
        self.end: str | None = None
        self.ended_at: float | None = None

    def send(self, data: bytes) -> None:
        if self.end is not None or not self.connected:
            return
        try:
            self.sock.send(data)
        except BlockingIOError:
            pass
        except OSError:
            self._ended("reset")

    def readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._ended("reset")
            return
        if data:
            self.answer = (self.answer + data)[:64]
        else:
            self._ended("closed")

    def _ended(self, how: str) -> None:
        if self.end is None:
            code = self.answer.split()[1].decode() if self.answer.startswith(b"HTTP/") else ""
            self.end = code or how
            self.ended_at = time.monotonic() - self.start

    def close(self) -> None:
        if self.end is None:
            self.end = "open" if self.connected else "no connection"
        self.sock.close()


def _open(
    address: tuple[str, int], heads: list[bytes], limit: float = 60.0, rate: float = 200.0
) -> list[RawClient]:
    """Connect (non-blocking, ``rate`` a second), each sending its head once connected;
    those not connected within ``limit`` seconds are given up."""
    clients: list[RawClient] = []
    sel = selectors.DefaultSelector()
    deadline = time.monotonic() + limit
    start = time.monotonic()
    while (len(clients) < len(heads) or sel.get_map()) and time.monotonic() < deadline:
        # at most `rate` new connections a second: a listen backlog of 5 (the standard
        # library's) drops a burst, and the dropped connect again only seconds later
        due = min(len(heads), int((time.monotonic() - start) * rate) + 1)
        while len(clients) < due:
            try:
                c = RawClient(address, heads[len(clients)])
            except OSError:  # out of file descriptors...
                heads = heads[: len(clients)]
                break
            clients.append(c)
            sel.register(c.sock, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=0.005):
            c = key.data
            sel.unregister(c.sock)
            if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                c._ended("refused")
                continue
            c.connected = True
            c.start = time.monotonic()
            try:
                c.sock.sendall(c.head)  # small: the socket's buffer takes it
            except OSError:
                c._ended("reset")
    for key in list(sel.get_map().values()):
        key.data.close()
    sel.close()
    return clients


def _watch(clients: list[RawClient], seconds: float, every: float, data: bytes | None) -> None:
    """Read answers for ``seconds``; every ``every`` s send ``data`` on the open sockets."""
    sel = selectors.DefaultSelector()
    for c in clients:
        if c.connected and c.end is None:
            sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + seconds
    next_send = time.monotonic() + every
    while time.monotonic() < deadline and sel.get_map():
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            c.readable()
            if c.end is not None:
                sel.unregister(c.sock)
        if data is not None and time.monotonic() >= next_send:
            next_send += every
            for c in clients:
                c.send(data)
                if c.end is not None and c.sock in sel.get_map():
                    sel.unregister(c.sock)
    sel.close()


def _summary(clients: list[RawClient]) -> str:
    groups: dict[str, list[float]] = collections.defaultdict(list)
    for c in clients:
        groups[c.end or "open"].append(c.ended_at if c.ended_at is not None else float("nan"))
    parts = []
    for end, times in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        if end in ("open", "no connection"):
            parts.append(f"{end} x{len(times)}")
        else:
            lo, hi = min(times), max(times)
            when = f"{lo:.0f} s" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} s"
            parts.append(f"{end} x{len(times)} at {when}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------ the cases
def _image_bodies() -> dict[str, bytes]:
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


def _wait_idle(pid: int, limit: float = 600) -> None:
    """Until the worker has restored every accepted job (the server's CPU goes quiet)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu = Path(f"/proc/{pid}/stat").read_text().split()
        before = int(cpu[13]) + int(cpu[14])
        time.sleep(3)
        cpu = Path(f"/proc/{pid}/stat").read_text().split()
        if int(cpu[13]) + int(cpu[14]) - before < 10:
            return


def _head(address: tuple[str, int], length: int) -> bytes:
    return (
        f"POST /api/restore?filename=up.png HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def run_case(name: str, url: str, pid: int, args: argparse.Namespace) -> tuple[str, str, str]:
    """``(what was sent, what the clients got, the normal request's answer)``."""
    host, port = url.split("//")[1].split(":")
    address = (host, int(port))
    probe = "-"
    if name == "big_uploads":
        body = np.random.default_rng(0).bytes(45 * 2**20)
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(_post, url, body, f"big{i}.png") for i in range(16)]
            time.sleep(0.5)
            probe = _probe(url)
            codes = [f.result() for f in futures]
        answers = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
        return "16 x 45 MB at once", answers, probe
    if name == "slow_senders":
        clients = _open(address, [_head(address, 65536)] * 8)
        holder: list[str] = []
        t = threading.Timer(2.0, lambda: holder.append(_probe(url)))
        t.start()
        _watch(clients, args.hold, every=1.0, data=b"\0" * 4)
        t.join()
        for c in clients:
            c.close()
        return "8 x 64 KB at 4 B/s", _summary(clients), holder[0] if holder else "-"
    if name == "slowloris":
        start = time.monotonic()
        clients = _open(
            address, [f"GET /api/info?{i} HTTP/1.1\r\n".encode() for i in range(args.slowloris)]
        )
        opened = time.monotonic() - start
        holder = []
        t = threading.Timer(2.0, lambda: holder.append(_probe(url)))
        t.start()
        _watch(clients, args.hold, every=5.0, data=b"X-Pad: x\r\n")
        t.join()
        for c in clients:
            c.close()
        n = sum(c.connected for c in clients)
        what = f"{n} sockets (connected in {opened:.1f} s)"
        return what, _summary(clients), holder[0] if holder else "-"
    if name == "short_body":
        clients = _open(address, [_head(address, 2**20) + b"\0" * 1024] * 8)
        holder = []
        t = threading.Timer(2.0, lambda: holder.append(_probe(url)))
        t.start()
        _watch(clients, args.hold, every=3600, data=None)
        t.join()
        for c in clients:
            c.close()
        return "8 x 1 KB of 1 MB declared", _summary(clients), holder[0] if holder else "-"
    bodies = _image_bodies()
    if name in ("png_bomb", "tiff_bomb"):
        code = _post(url, bodies[name], f"{name}.png")
        return f"{len(bodies[name]) / 1024:.0f} KB", code, probe
    if name == "flood":
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda i: _post(url, bodies["flood"], f"f{i}.png"), range(12)))
        probe = _probe(url)
        _wait_idle(pid)
        answers = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
        return f"12 x {len(bodies['flood']) / 1024:.0f} KB (2000x2000)", answers, probe
    raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated (default: all)")
    p.add_argument("--slowloris", type=int, default=1000, help="sockets of the slowloris case")
    p.add_argument(
        "--hold", type=float, default=45.0, help="seconds the slow clients keep at it (45)"
    )
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TMPDIR": tmp}
        errors = tempfile.TemporaryFile("w+")  # the server's stderr: tracebacks counted
        proc = subprocess.Popen(
            [sys.executable, "-m", "ramir", "serve", "--port", "0", "--device", "cpu"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            line = proc.stdout.readline()
            url = line.split(" on ")[1].split()[0].rstrip("/")
            pid = proc.pid
            print(
                f"# ramir serve, default limits; start-up: peak {_peak_mb(pid):.0f} MB, "
                f"{_threads(pid)} threads"
            )
            print(
                f"{'case':<13} {'sent':<30} {'answers':<44} {'peak MB':>7} {'threads':>7} "
                f"{'after':>5}  normal request"
            )
            baseline = _threads(pid)
            for name in cases:
                settle = time.monotonic() + 60  # the last case's threads gone first
                while _threads(pid) > baseline + 2 and time.monotonic() < settle:
                    time.sleep(0.5)
                with Sampler(pid) as s:
                    what, answers, probe = run_case(name, url, pid, args)
                time.sleep(1.0)
                print(
                    f"{name:<13} {what:<30} {answers:<44} {_peak_mb(pid):7.0f} "
                    f"{s.max_threads:7d} {_threads(pid):5d}  {probe}",
                    flush=True,
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        left = [p.name for p in Path(tmp).iterdir()]
        print(f"temporary files left after SIGTERM: {left or 'none'}")
        errors.seek(0)
        print(f"tracebacks on the server's stderr: {errors.read().count('Traceback')}")


if __name__ == "__main__":
    main()

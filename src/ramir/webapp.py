"""A local web app for restoring photos (``ramir serve``).

Standard library only (``http.server``): the page and its script ship inside the package,
nothing is fetched from a CDN, nothing is sent anywhere but the local server, and it binds
to 127.0.0.1 by default. Why not Starlette + Uvicorn: the bounds below take one small
``ThreadingHTTPServer`` subclass, less than two new dependencies would bring.

Requests queue: one worker thread runs the model, jobs wait their turn and report their
position and progress (tiled inference reports per tile). Endpoints:

* ``GET /`` the page; ``GET /api/info`` the model, its parameter count and limits;
* ``POST /api/restore?degradation=NAME&level=X&seed=N`` with the image file as the body:
  ``202 {"job": id}``, or ``400``/``411``/``413`` with ``{"error": message}`` for bad input;
* ``GET /api/jobs/<id>``: status, queue position, progress, timing, or the error;
* ``GET /api/jobs/<id>/input.png`` (the image restored, after any synthetic degradation)
  and ``/output.png`` (the restored image, in the input's mode and bit depth).

Bounds (:class:`WebConfig`): a connection waits for its request line and headers in one
selector thread, holding no thread of its own, for ``header_timeout`` seconds at most (at
most ``max_pending`` of them, the oldest closed first); at most ``max_connections``
requests are handled at once, a thread each (more get a quick ``503``); an upload is
refused from its headers, before its body is read: ``411`` without a ``Content-Length``,
``413`` over ``max_upload_mb``, ``503`` with ``Retry-After`` while ``max_uploads`` uploads
are arriving or the queue has no room (uploads arriving count against ``max_queued``).
The body is streamed to a file in the service's temporary folder (1 MiB at a time) and
must arrive without ``idle_timeout`` seconds of silence and on average at
``min_rate_kb`` KB/s or more, or the connection is dropped and the partial file deleted;
answers are sent under the same deadlines. One upload is decoded at a time, and from its
declared size first; queued jobs keep their input encoded (a PNG on disk, not a decoded
float image), and the files of rejected, failed and evicted jobs are deleted at once.
The temporary folder (``ramir-serve-*`` in the system's) holds an ``owner`` marker
(process id and start time, locked while the server runs); at start-up the folders of
earlier runs whose process is gone (``kill -9``, a crash) are deleted. POSTs from another
web page (an ``Origin`` that is not this server) and requests for another host name
while bound to a loopback address are refused (``403``). Error messages never show
server paths.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import re
import selectors
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch

from ramir.data.io import (
    ImageReadError,
    ImageTooLargeError,
    read_image,
    write_image,
)
from ramir.errors import RamirError
from ramir.models import count_parameters
from ramir.models.base import RestorationModel
from ramir.options import WEB_MAX_PIXELS, WEB_MAX_UPLOAD_MB

__all__ = [
    "WebConfig",
    "RestoreService",
    "Upload",
    "BoundedHTTPServer",
    "make_server",
    "remove_stale_folders",
    "SYNTHETIC",
]

log = logging.getLogger(__name__)

# Synthetic degradations offered by the page: one "level" slider each, mapped to the
# parameters of the registered degradation (``ramir.degradations``).
SYNTHETIC: dict[str, dict[str, Any]] = {
    "noise": {
        "label": "Gaussian noise",
        "level": "sigma (0-255)",
        "default": 25,
        "min": 1,
        "max": 75,
    },
    "jpeg": {"label": "JPEG", "level": "quality", "default": 20, "min": 5, "max": 95},
    "blur": {
        "label": "Gaussian blur",
        "level": "sigma (pixels)",
        "default": 2.0,
        "min": 0.2,
        "max": 4.0,
    },
    "haze": {"label": "Haze", "level": "density", "default": 0.6, "min": 0.1, "max": 1.0},
    "rain": {"label": "Rain", "level": "amount", "default": 0.5, "min": 0.1, "max": 1.0},
    "lowlight": {"label": "Low light", "level": "darkness", "default": 0.5, "min": 0.1, "max": 1.0},
}


def _synthetic_params(name: str, level: float) -> tuple[str, dict[str, Any]]:
    """The registered degradation and its fixed parameters for a page slider ``level``."""
    if name == "noise":
        return "gaussian_noise", {"sigma": level}
    if name == "jpeg":
        return "jpeg", {"quality": int(round(level))}
    if name == "blur":
        return "gaussian_blur", {"sigma": level}
    if name == "haze":
        return "haze", {"beta": 0.4 + 1.8 * level, "airlight": 0.9}
    if name == "rain":
        return "rain", {
            "density": 0.002 + 0.012 * level,
            "length": 20.0,
            "angle": 10.0,
            "intensity": 0.8,
        }
    if name == "lowlight":
        return "low_light", {"gamma": 1.5 + 2.0 * level, "a": 0.95, "b": 1.0 - 0.5 * level}
    raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")


def check_synthetic(name: str, level: float) -> None:
    """Raise ``ValueError`` (a message for the page) unless ``name`` is ``"none"`` or a
    page degradation and ``level`` is in its slider's range."""
    if not name or name == "none":
        return
    spec = SYNTHETIC.get(name)
    if spec is None:
        raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")
    if not spec["min"] <= level <= spec["max"]:
        raise ValueError(
            f"{spec['label']} {spec['level']} must be in [{spec['min']}, {spec['max']}], got {level}"
        )


def apply_synthetic(img: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
    """Degrade ``img`` (float32 ``(H, W, 3)`` in [0, 1]) by the page's degradation ``name``
    at slider ``level``; deterministic for a given ``seed``."""
    from ramir import degradations

    if name not in SYNTHETIC:
        raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")
    check_synthetic(name, level)
    fn_name, params = _synthetic_params(name, level)
    return degradations.get(fn_name)(img, np.random.default_rng(seed), **params)


@dataclass
class WebConfig:
    """Limits and inference settings of the web app."""

    max_pixels: int = WEB_MAX_PIXELS  # images larger than this are refused
    max_upload_mb: float = WEB_MAX_UPLOAD_MB
    tile: int | None = 512  # tiled inference above this size (None: whole image)
    tile_overlap: int = 32
    max_jobs_kept: int = 32  # finished jobs whose files are kept (oldest deleted first)
    max_queued: int = 8  # jobs waiting, running or arriving; more are refused with 503
    max_connections: int = 32  # requests handled at once, a thread each; more get 503
    max_pending: int = 512  # connections still sending their headers (no thread each)
    max_uploads: int = 4  # uploads arriving at once; more get 503 before their body is read
    header_timeout: float = 10.0  # seconds for the request line and headers, all of them
    idle_timeout: float = 30.0  # longest silence while a body arrives or an answer leaves
    min_rate_kb: float = 256.0  # KB/s a body or an answer averages, beyond idle_timeout


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
"""Host names of the loopback address; bound to one, the server answers only to them."""

TEMP_PREFIX = "ramir-serve-"
"""Name prefix of the service's temporary folders (in :func:`tempfile.gettempdir`)."""

OWNER_MARKER = "owner"
"""The file in a service's temporary folder naming its process (JSON ``pid``, ``started``)."""

UNMARKED_STALE_S = 24 * 3600
"""A ``ramir-serve-*`` folder without an owner marker (an older ramir made it) is deleted
once this old; younger, it may be a live server's, or one being created."""

CHUNK = 1 << 20
"""Bytes read from an upload, or sent of an answer, at a time."""

MAX_HEAD = 64 * 1024
"""Longest request line and headers, in bytes (then ``431``)."""

LINGER_S = 2.0
"""After answering a POST without reading its body, how long what the client still sends
is read and discarded, so that it sees the answer rather than a TCP reset."""


class ServerBusyError(RamirError, RuntimeError):
    """The job queue is full: the client should retry later."""


# ----------------------------------------------------------------- temporary folders
def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot), ``None`` if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def _pid_alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started``."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it: never call a folder stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process, alive
    if started is not None:
        now = _process_started(pid)
        if now is not None and now != started:
            return False  # the pid was reused by a newer process
    return True


def _locked(marker: Path) -> bool:
    """Whether a live process holds the lock on ``marker`` (False where locks are not
    available)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        with open(marker, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def _claim(folder: Path) -> io.BufferedWriter:
    """Write this process's owner marker into ``folder`` and lock it; the lock lasts
    while the returned file is open."""
    f = open(folder / OWNER_MARKER, "wb")  # noqa: SIM115 - held open for the lock
    f.write(json.dumps({"pid": os.getpid(), "started": _process_started(os.getpid())}).encode())
    f.flush()
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def remove_stale_folders(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Delete the temporary folders that earlier ``ramir serve`` runs left behind.

    A ``ramir-serve-*`` folder in ``root`` (default: the system's temporary folder) owned
    by this user is stale when the process its owner marker names is gone and nothing
    holds the marker's lock (a server killed with ``kill -9``, a crash); folders without a
    marker once :data:`UNMARKED_STALE_S` old. A live server's folder is never touched.
    Returns the names deleted.
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(base.glob(TEMP_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        try:
            st = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # symbolic links included: never followed
            continue
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            continue
        marker = folder / OWNER_MARKER
        try:
            owner = json.loads(marker.read_bytes())
            pid, started = int(owner["pid"]), owner.get("started")
        except FileNotFoundError:
            if time.time() - st.st_mtime < UNMARKED_STALE_S:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable or being written: leave it
        else:
            if _locked(marker) or _pid_alive(pid, None if started is None else str(started)):
                continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder.name)
    return removed


# ---------------------------------------------------------------------------- jobs
@dataclass
class Job:
    id: str
    workdir: Path
    width: int
    height: int
    mode: str
    bit_depth: int
    status: str = "queued"  # queued | running | done | error
    progress: float = 0.0
    error: str | None = None
    seconds: float | None = None
    created: float = field(default_factory=time.time)


class Upload:
    """Room claimed for one upload (:meth:`RestoreService.reserve`), before its body is
    read: write the body to :attr:`path`, then pass this to :meth:`RestoreService.submit`.

    While held, the upload counts against ``max_uploads`` and ``max_queued``. Leaving its
    ``with`` block (or :meth:`release`) gives the room back and, unless it was submitted,
    deletes its file.
    """

    def __init__(self, service: RestoreService, job_id: str, workdir: Path, path: Path) -> None:
        self.service = service
        self.id = job_id
        self.workdir = workdir
        self.path = path
        self.submitted = False
        self._released = False

    def release(self) -> None:
        """Give the room back; delete the files unless submitted (idempotent)."""
        with self.service._lock:
            if self._released:
                return
            self._released = True
            self.service._uploads -= 1
        if not self.submitted:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _suffix(filename: str) -> str:
    """The upload file's suffix: the client's, when short and plain (``.tif`` decides the
    decoder), else ``.img``."""
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img"


class RestoreService:
    """Runs restoration jobs one at a time on a worker thread."""

    def __init__(
        self, model: RestorationModel, config: WebConfig, *, device: str = "cpu", name: str = ""
    ) -> None:
        self.model = model.to(device).eval()
        self.config = config
        self.device = device
        self.name = name or getattr(model, "arch_name", type(model).__name__)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._decode = threading.Lock()  # one upload decoded at a time bounds memory
        self._uploads = 0  # uploads reserved: arriving, or waiting to be decoded
        removed = remove_stale_folders()
        if removed:
            log.info("deleted %d temporary folder(s) of earlier ramir serve runs", len(removed))
        self._tmp = tempfile.TemporaryDirectory(prefix=TEMP_PREFIX)
        self._owner = _claim(Path(self._tmp.name))
        self._worker = threading.Thread(target=self._work, name="ramir-restore", daemon=True)
        self._worker.start()

    # -- public -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The model and the limits, for the page."""
        return {
            "model": self.name,
            "arch": getattr(self.model, "arch_name", ""),
            "parameters": count_parameters(self.model),
            "device": self.device,
            "max_pixels": self.config.max_pixels,
            "max_upload_mb": self.config.max_upload_mb,
            "tile": self.config.tile,
            "degradations": SYNTHETIC,
        }

    def reserve(self, filename: str = "") -> Upload:
        """Claim room for one upload before receiving it.

        Raises :class:`ServerBusyError` when ``max_uploads`` uploads are already arriving
        or the queue (jobs waiting, running, and uploads arriving) is full.
        """
        with self._lock:
            if self._uploads >= self.config.max_uploads:
                raise ServerBusyError(
                    f"the server is busy receiving other uploads ({self._uploads}); "
                    "try again in a minute"
                )
            self._check_room()
            self._uploads += 1
        job_id = uuid.uuid4().hex[:12]
        workdir = Path(self._tmp.name) / job_id
        try:
            workdir.mkdir()
        except BaseException:
            with self._lock:
                self._uploads -= 1
            raise
        return Upload(self, job_id, workdir, workdir / f"upload{_suffix(filename)}")

    def submit(
        self,
        data: bytes | str | os.PathLike[str] | Upload,
        filename: str = "",
        degradation: str = "none",
        level: float = 0.0,
        seed: int = 0,
    ) -> Job:
        """Decode (and optionally degrade) an uploaded image and queue it.

        ``data``: the file's bytes, the path of an image file (copied; the original is
        left alone), or an :class:`Upload` whose file was written (its files then belong
        to the job, or are deleted).

        Raises ``ValueError`` with a message for the page when the upload is unusable, and
        :class:`ServerBusyError` when ``max_queued`` jobs are already waiting. The files of
        a refused upload are deleted.
        """
        if isinstance(data, Upload):
            upload = data
        else:
            upload = self.reserve(filename or (str(data) if not isinstance(data, bytes) else ""))
        try:
            if isinstance(data, bytes):
                upload.path.write_bytes(data)
            elif not isinstance(data, Upload):
                shutil.copyfile(data, upload.path)
            with self._decode:
                job = self._prepare(upload, filename, degradation, level, seed)
            with self._lock:
                self.jobs[job.id] = job  # its room was reserved: no new check
                upload.submitted = upload._released = True
                self._uploads -= 1
                self._evict()
        finally:
            upload.release()
        self._queue.put(job)
        return job

    def _check_room(self) -> None:
        live = sum(j.status in ("queued", "running") for j in list(self.jobs.values()))
        if live + self._uploads >= self.config.max_queued:
            raise ServerBusyError(
                f"the server is busy: {live + self._uploads} images are waiting, arriving or "
                "being restored; try again in a minute"
            )

    def _evict(self) -> None:
        """Forget the oldest finished jobs over ``max_jobs_kept`` and delete their files."""
        finished = [j for j in self.jobs.values() if j.status in ("done", "error")]
        for old in finished[: max(0, len(finished) - self.config.max_jobs_kept)]:
            del self.jobs[old.id]
            shutil.rmtree(old.workdir, ignore_errors=True)

    def _public(self, text: str) -> str:
        """``text`` without the server's temporary paths."""
        return text.replace(self._tmp.name + os.sep, "").replace(self._tmp.name, "")

    def _prepare(
        self, upload: Upload, filename: str, degradation: str, level: float, seed: int
    ) -> Job:
        src = upload.path
        check_synthetic(degradation, level)
        try:
            # refused from the declared size, before decoding (a 20 KB PNG can declare
            # 13000x13000 pixels)
            image = read_image(src, max_pixels=self.config.max_pixels)
        except ImageTooLargeError as e:
            raise ValueError(
                f"{self._public(_short(e))}; start the server with a larger --max-pixels to "
                "accept it"
            ) from None
        except ImageReadError as e:
            raise ValueError(
                f"not a readable image ({Path(filename).name or 'upload'}): "
                f"{self._public(_short(e))}"
            ) from None
        except MemoryError:
            raise ValueError("the server ran out of memory decoding this image") from None
        finally:
            src.unlink(missing_ok=True)
        h, w = image.rgb.shape[-2:]
        if h * w > self.config.max_pixels:
            raise ValueError(
                f"image of {w}x{h} pixels is over this server's limit of "
                f"{self.config.max_pixels:,} pixels; downscale it or start the server with a "
                "larger --max-pixels"
            )
        if min(h, w) < self.model.min_size:
            raise ValueError(
                f"image of {w}x{h} is smaller than the model's minimum "
                f"{self.model.min_size}x{self.model.min_size}"
            )
        if degradation and degradation != "none":
            arr = image.rgb.permute(1, 2, 0).numpy()
            out = apply_synthetic(arr, degradation, level, seed)
            image.rgb = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).permute(
                2, 0, 1
            )
        # the queued job keeps its input encoded: the worker decodes it when its turn comes
        write_image(upload.workdir / "input.png", image.rgb, like=image)
        return Job(
            id=upload.id,
            workdir=upload.workdir,
            width=int(w),
            height=int(h),
            mode=image.mode,
            bit_depth=image.bit_depth,
        )

    def status(self, job_id: str) -> dict[str, Any] | None:
        """A job's state for the page (``None``: no such job)."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            position = 0
            if job.status == "queued":
                position = sum(
                    1
                    for j in self.jobs.values()
                    if j.status in ("queued", "running") and j.created < job.created
                )
        return {
            "job": job.id,
            "status": job.status,
            "progress": round(job.progress, 4),
            "position": position,
            "error": job.error,
            "seconds": job.seconds,
            "width": job.width,
            "height": job.height,
            "mode": job.mode,
            "bit_depth": job.bit_depth,
        }

    def file(self, job_id: str, name: str) -> Path | None:
        """A job's ``input.png`` or ``output.png`` (``None``: no such file yet)."""
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None or name not in ("input.png", "output.png"):
            return None
        path = job.workdir / name
        return path if path.is_file() else None

    def close(self) -> None:
        """Stop the worker and delete the temporary folder."""
        self._queue.put(None)
        self._worker.join(timeout=5)
        self._owner.close()
        self._tmp.cleanup()

    # -- worker -------------------------------------------------------------------------
    def _work(self) -> None:
        from ramir.restore import restore

        while True:
            job = self._queue.get()
            if job is None:
                return
            job.status = "running"
            start = time.perf_counter()
            try:

                def progress(done: int, total: int, job: Job = job) -> None:
                    job.progress = done / max(total, 1)

                image = read_image(job.workdir / "input.png", max_pixels=None)
                out = restore(
                    self.model,
                    image.rgb,
                    tile=self.config.tile,
                    tile_overlap=self.config.tile_overlap,
                    device=self.device,
                    progress=progress,
                )
                write_image(job.workdir / "output.png", out, like=image)
                job.seconds = round(time.perf_counter() - start, 3)
                job.progress = 1.0
                job.status = "done"
            except Exception as e:  # keep serving whatever one image does
                log.exception("restoring job %s failed", job.id)
                job.error = f"restoration failed: {self._public(_short(e))}"
                job.status = "error"
                shutil.rmtree(job.workdir, ignore_errors=True)
            finally:
                image = None  # type: ignore[assignment]
                with self._lock:
                    self._evict()


def _short(e: BaseException, limit: int = 300) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _page() -> bytes:
    return resources.files("ramir").joinpath("assets/web/index.html").read_bytes()


# ------------------------------------------------------------------------ the server
def _canned(status: int, message: str, retry_after: int | None = None) -> bytes:
    """A whole ``Connection: close`` JSON answer, sent without a handler thread."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\n"
        "Content-Type: application/json\r\nCache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if retry_after is not None:
        head += f"Retry-After: {retry_after}\r\n"
    return head.encode() + b"\r\n" + body


_BUSY = _canned(503, "the server is handling too many requests; try again shortly", 5)
_HEAD_TIMEOUT = _canned(408, "the request's headers took too long")
_HEAD_TOO_LONG = _canned(431, "the request's headers are too long")


class _ShortBodyError(ConnectionError):
    """The client ended its upload before the bytes it declared."""


class _StoreError(RuntimeError):
    """An upload could not be written to the temporary folder (disk full...)."""


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes: first those the header gate read, then the socket's, each
    read bounded by the handler's deadline and ``idle_timeout``."""

    def __init__(self, handler: BoundedHandler, prefix: bytes) -> None:
        super().__init__()
        self._handler = handler
        self._prefix = memoryview(prefix)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if len(self._prefix):
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        self._handler._arm()
        return self._handler.connection.recv_into(b)


class BoundedHandler(BaseHTTPRequestHandler):
    """A request handler whose every read and write is bounded in time.

    Built by :class:`BoundedHTTPServer` with the bytes its header gate already read.
    ``_deadline`` is when the current phase (the headers, a body, an answer) must be
    done; no read or write waits longer than ``idle_timeout`` for the client.
    """

    server: BoundedHTTPServer

    def __init__(
        self,
        request: socket.socket,
        client_address: Any,
        server: BoundedHTTPServer,
        prefix: bytes = b"",
    ) -> None:
        self._prefix = prefix
        self._deadline = time.monotonic() + server.config.header_timeout
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self, self._prefix), 64 * 1024)

    def _expect(self, nbytes: int, within: float | None = None) -> None:
        """The deadline for moving ``nbytes`` (a body in or an answer out): ``within``
        seconds, or ``idle_timeout`` plus the time at ``min_rate_kb``."""
        if within is None:
            cfg = self.server.config
            rate = cfg.min_rate_kb * 1024
            within = cfg.idle_timeout + (nbytes / rate if rate > 0 else float("inf"))
        self._deadline = time.monotonic() + within

    def _arm(self) -> None:
        """The socket's timeout for the next read or write; ``TimeoutError`` past the
        deadline."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client was too slow")
        self.connection.settimeout(min(left, self.server.config.idle_timeout))

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for i in range(0, len(view), CHUNK):
            self._arm()
            self.connection.sendall(view[i : i + CHUNK])

    def _linger(self) -> None:
        """After answering without reading the body: stop sending and discard what the
        client still sends, for :data:`LINGER_S` at most, so that it reads the answer
        rather than a reset."""
        sink = bytearray(64 * 1024)
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            end = time.monotonic() + LINGER_S
            while (left := end - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv_into(sink):
                    break
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quieter than stderr spam
        log.debug("%s - " + format, self.address_string(), *args)


@dataclass
class _Pending:
    """A connection whose request line and headers are still arriving."""

    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


def _pending_limit(config: WebConfig) -> int:
    """``max_pending``, within the open files this process may have."""
    limit = config.max_pending
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft - config.max_connections - 64)
    except (ImportError, OSError, ValueError):  # pragma: no cover - Windows
        pass
    return max(1, limit)


class BoundedHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` that bounds its connections (see :class:`WebConfig`).

    Accepted connections go to a header gate, one thread with a selector, until their
    request line and headers are in: ``header_timeout`` seconds at most, ``max_pending``
    connections at most (beyond, the oldest is closed: a slow-headers attack ages out
    while normal requests, whose headers come at once, pass). A connection with its
    headers gets a thread of its own if fewer than ``max_connections`` requests are being
    handled, else a quick ``503`` and is closed. The handler (a :class:`BoundedHandler`)
    starts from the bytes the gate read.
    """

    daemon_threads = True
    request_queue_size = 128  # the listen backlog

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BoundedHandler],
        config: WebConfig,
    ) -> None:
        self.config = config
        self._limit = max(1, config.max_connections)
        self._slots = threading.BoundedSemaphore(self._limit)
        self._max_pending = _pending_limit(config)
        self._pending: OrderedDict[socket.socket, _Pending] = OrderedDict()
        self._incoming: deque[tuple[socket.socket, Any]] = deque()
        self._closing = threading.Event()
        super().__init__(address, handler)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._gate = threading.Thread(
            target=self._gate_loop, name="ramir-http-headers", daemon=True
        )
        self._gate.start()

    # -- called by serve_forever's thread ------------------------------------------------
    def process_request(self, request: Any, client_address: Any) -> None:
        """Hand a new connection to the header gate (no thread of its own yet)."""
        if self._closing.is_set():
            self.shutdown_request(request)
            return
        self._incoming.append((request, client_address))
        self._wake()

    def server_close(self) -> None:
        self._closing.set()
        self._wake()
        if self._gate.is_alive() and self._gate is not threading.current_thread():
            self._gate.join(5)
        super().server_close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away or stalled: not a server bug
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.exception("error handling a request from %s", client_address)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the header gate -----------------------------------------------------------------
    def _gate_loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._gate_step()
            except Exception:  # the gate must outlive any one connection's oddity
                log.exception("the header gate failed a step; it goes on")
                time.sleep(0.01)
        for sock in list(self._pending):
            self._drop(sock)
        while self._incoming:
            self._incoming.popleft()[0].close()

    def _gate_step(self) -> None:
        """Wait for bytes (or a new connection, or the next deadline) and act on them."""
        timeout = 1.0
        if self._pending:
            first = next(iter(self._pending.values()))
            timeout = min(timeout, max(0.0, first.deadline - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_r:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
            else:
                self._read_head(key.fileobj)  # type: ignore[arg-type]
        self._admit()
        self._expire()

    def _admit(self) -> None:
        while self._incoming:
            sock, address = self._incoming.popleft()
            try:
                sock.setblocking(False)
                self._selector.register(sock, selectors.EVENT_READ)
            except (OSError, ValueError):
                sock.close()
                continue
            self._pending[sock] = _Pending(address, time.monotonic() + self.config.header_timeout)
            while len(self._pending) > self._max_pending:
                oldest = next(iter(self._pending))
                log.debug("too many connections sending headers: closed the oldest")
                self._drop(oldest, _HEAD_TIMEOUT)
            self._read_head(sock)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._pending:
            sock, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                return
            log.debug("headers from %s took too long: closed", pending.address)
            self._drop(sock, _HEAD_TIMEOUT)

    def _read_head(self, sock: socket.socket) -> None:
        pending = self._pending.get(sock)
        if pending is None:
            return
        try:
            data = sock.recv(MAX_HEAD)
        except BlockingIOError:
            return
        except OSError:
            self._drop(sock)
            return
        if not data:
            self._drop(sock)
            return
        start = max(0, len(pending.head) - 2)
        pending.head += data
        head = pending.head
        if head.find(b"\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0:
            self._selector.unregister(sock)
            del self._pending[sock]
            self._dispatch(sock, pending.address, bytes(head))
        elif len(head) > MAX_HEAD:
            self._drop(sock, _HEAD_TOO_LONG)

    def _drop(self, sock: socket.socket, answer: bytes = b"") -> None:
        self._pending.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        self._close(sock, answer)

    @staticmethod
    def _close(sock: socket.socket, answer: bytes = b"") -> None:
        """Send ``answer`` if the socket takes it at once, and close."""
        with contextlib.suppress(OSError):
            if answer:
                sock.setblocking(False)
                sock.send(answer)
            sock.shutdown(socket.SHUT_WR)
        sock.close()

    def _dispatch(self, sock: socket.socket, address: Any, head: bytes) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("%d requests in progress: refused one from %s", self._limit, address)
            self._close(sock, _BUSY)
            return
        try:
            sock.setblocking(True)
            threading.Thread(
                target=self._serve, args=(sock, address, head), name="ramir-http", daemon=True
            ).start()
        except Exception:  # no thread to be had (RuntimeError), or the socket is gone
            self._slots.release()
            self._close(sock, _BUSY)

    def _serve(self, sock: socket.socket, address: Any, head: bytes) -> None:
        try:
            self.RequestHandlerClass(sock, address, self, head)  # type: ignore[call-arg]
        except Exception:
            self.handle_error(sock, address)
        finally:
            self.shutdown_request(sock)
            self._slots.release()


def make_server(
    service: RestoreService, host: str = "127.0.0.1", port: int = 7860
) -> BoundedHTTPServer:
    """An HTTP server (not yet serving) bound to ``host:port`` (port 0 = any free port)."""
    page = _page()
    max_bytes = int(service.config.max_upload_mb * 1024 * 1024)
    loopback = host in LOOPBACK_NAMES

    class Handler(BoundedHandler):
        server_version = "ramir"

        def _send(
            self,
            status: int,
            body: bytes,
            ctype: str,
            extra: dict[str, str] | None = None,
            within: float | None = None,
        ) -> None:
            self._expect(len(body) + 4096, within)
            self._arm()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self._write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _send_file(self, path: Path, download_name: str) -> None:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError:
                self._json(404, {"error": "no such file (yet)"})
                return
            with f:
                size = os.fstat(f.fileno()).st_size
                self._expect(size + 4096)
                self._arm()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(size))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Disposition", f'inline; filename="{download_name}"')
                self.end_headers()
                while chunk := f.read(CHUNK):
                    self._write(chunk)

        def _refuse(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
            """Answer a POST without reading its body, then linger (see ``_linger``)."""
            self.close_connection = True
            body = json.dumps({"error": message}).encode()
            self._send(status, body, "application/json", {"Connection": "close", **(extra or {})})
            self._linger()

        def _give_up(self, status: int, message: str) -> None:
            """A last answer to a client whose upload stalled or ended early (1 s at
            most: it may not read it), then the connection is closed."""
            self.close_connection = True
            body = json.dumps({"error": message}).encode()
            with contextlib.suppress(OSError):
                self._send(status, body, "application/json", {"Connection": "close"}, within=1.0)
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.setblocking(False)
                sink = bytearray(64 * 1024)
                while self.connection.recv_into(sink):  # what arrived: closing on unread
                    pass  # bytes would reset the connection before the answer is read

        def _refused(self, post: bool) -> bool:
            """403 (and True) for a request this server must not answer: another host
            name while bound to loopback (DNS rebinding), or a POST whose Origin is
            another site (a web page the user visits posting to the local server)."""
            answer = self._refuse if post else lambda s, m: self._json(s, {"error": m})
            host_header = self.headers.get("Host", "")
            name = urlparse(f"http://{host_header}").hostname or ""
            if loopback and name not in LOOPBACK_NAMES:
                answer(403, "this server answers only on its loopback address")
                return True
            origin = self.headers.get("Origin")
            if post and origin is not None and urlparse(origin).netloc != host_header:
                answer(403, "uploads are accepted only from this server's page")
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802
            if self._refused(post=False):
                return
            path = urlparse(self.path).path
            if path in ("/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(200, service.info())
            elif path.startswith("/api/jobs/"):
                parts = path.split("/")[3:]
                if len(parts) == 1:
                    st = service.status(parts[0])
                    self._json(200, st) if st else self._json(404, {"error": "no such job"})
                elif len(parts) == 2:
                    f = service.file(parts[0], parts[1])
                    if f is None:
                        self._json(404, {"error": "no such file (yet)"})
                    else:
                        self._send_file(f, f"{parts[0]}-{parts[1]}")
                else:
                    self._json(404, {"error": "not found"})
            else:
                self._json(404, {"error": "not found"})

        def _content_length(self) -> int | None:
            """The upload's declared size, or ``None`` once refused (411, 400, 413)."""
            if self.headers.get("Transfer-Encoding") is not None:
                self._refuse(411, "send the file with a Content-Length (not chunked)")
                return None
            values = self.headers.get_all("Content-Length") or []
            if not values:
                self._refuse(411, "a Content-Length is required: send the image file as the body")
                return None
            raw = values[0].strip()
            if len(values) > 1 or not re.fullmatch(r"[0-9]{1,18}", raw):
                self._refuse(400, "invalid Content-Length")
                return None
            length = int(raw)
            if length == 0:
                self._refuse(400, "empty upload: choose an image file")
                return None
            if length > max_bytes:
                self._refuse(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"file of {length / 2**20:.1f} MB is over the upload limit of "
                    f"{service.config.max_upload_mb:g} MB",
                )
                return None
            return length

        def _receive(self, length: int, dest: Path) -> None:
            """Stream ``length`` bytes of body to ``dest``, a chunk at a time, within the
            body's deadline."""
            self._expect(length)
            got = 0
            with open(dest, "wb", buffering=0) as f:  # each chunk on disk as it arrives
                while got < length:
                    # what is buffered, else one read from the socket: never waits for
                    # more than the client sent
                    chunk = self.rfile.read1(min(CHUNK, length - got))
                    if not chunk:
                        raise _ShortBodyError(
                            f"the upload ended after {got:,} of the {length:,} bytes it declared"
                        )
                    try:
                        f.write(chunk)
                    except OSError as e:
                        raise _StoreError(e.strerror or type(e).__name__) from None
                    got += len(chunk)

        def do_POST(self) -> None:  # noqa: N802
            if self._refused(post=True):
                return
            url = urlparse(self.path)
            if url.path != "/api/restore":
                self._refuse(404, "not found")
                return
            length = self._content_length()
            if length is None:
                return
            q = parse_qs(url.query)
            name = q.get("filename", [""])[0]
            degradation = q.get("degradation", ["none"])[0]
            try:
                level = float(q.get("level", ["0"])[0] or 0)
                seed = int(q.get("seed", ["0"])[0] or 0)
                check_synthetic(degradation, level)
            except ValueError as e:
                self._refuse(400, str(e))
                return
            try:
                upload = service.reserve(name)  # before a byte of the body is read
            except ServerBusyError as e:
                self._refuse(503, str(e), {"Retry-After": "60"})
                return
            with upload:  # the partial or refused file is deleted on the way out
                try:
                    self._receive(length, upload.path)
                except TimeoutError:
                    log.info("dropped a stalled upload from %s", self.address_string())
                    self._give_up(408, "the upload was too slow: the connection is closed")
                    return
                except _ShortBodyError as e:
                    self._give_up(400, str(e))
                    return
                except _StoreError as e:
                    self._refuse(500, f"the server could not store the upload: {e}")
                    return
                try:
                    job = service.submit(upload, name, degradation, level, seed)
                except ValueError as e:
                    self._json(400, {"error": str(e)})
                    return
                except ServerBusyError as e:
                    body = json.dumps({"error": str(e)}).encode()
                    self._send(503, body, "application/json", {"Retry-After": "60"})
                    return
                except Exception as e:  # never let one upload take the server down
                    log.exception("upload failed")
                    self._json(500, {"error": f"server error: {service._public(_short(e))}"})
                    return
            self._json(202, {"job": job.id})

    return BoundedHTTPServer((host, port), Handler, service.config)

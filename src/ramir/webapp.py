"""A local web app for restoring photos (``ramir serve``).

Standard library only (``http.server``): the page and its script ship inside the package,
nothing is fetched from a CDN, nothing is sent anywhere but the local server, and it binds
to 127.0.0.1 by default.

Requests queue: one worker thread runs the model, jobs wait their turn and report their
position and progress (tiled inference reports per tile). Endpoints:

* ``GET /`` the page; ``GET /api/info`` the model, its parameter count and limits;
* ``POST /api/restore?degradation=NAME&level=X&seed=N`` with the image file as the body:
  ``202 {"job": id}``, or ``400``/``413`` with ``{"error": message}`` for bad input;
* ``GET /api/jobs/<id>``: status, queue position, progress, timing, or the error;
* ``GET /api/jobs/<id>/input.png`` (the image restored, after any synthetic degradation)
  and ``/output.png`` (the restored image, in the input's mode and bit depth).

Bounds: an upload is refused from its declared size before it is decoded, one upload is
decoded at a time, at most ``max_queued`` jobs wait (then ``503`` with ``Retry-After``),
queued jobs keep their input encoded (a PNG on disk, not a decoded float image), and the
files of rejected, failed and evicted jobs are deleted at once. POSTs from another web
page (an ``Origin`` that is not this server) and requests for another host name while
bound to a loopback address are refused (``403``). Error messages never show server paths.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
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

__all__ = ["WebConfig", "RestoreService", "make_server", "SYNTHETIC"]

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


def apply_synthetic(img: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
    """Degrade ``img`` (float32 ``(H, W, 3)`` in [0, 1]) by the page's degradation ``name``
    at slider ``level``; deterministic for a given ``seed``."""
    from ramir import degradations

    spec = SYNTHETIC.get(name)
    if spec is None:
        raise ValueError(f"unknown degradation {name!r}; choose one of: {', '.join(SYNTHETIC)}")
    if not spec["min"] <= level <= spec["max"]:
        raise ValueError(
            f"{spec['label']} {spec['level']} must be in [{spec['min']}, {spec['max']}], got {level}"
        )
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
    max_queued: int = 8  # jobs waiting or running; more are refused with 503


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
"""Host names of the loopback address; bound to one, the server answers only to them."""


class ServerBusyError(RamirError, RuntimeError):
    """The job queue is full: the client should retry later."""


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
        self._tmp = tempfile.TemporaryDirectory(prefix="ramir-serve-")
        self._worker = threading.Thread(target=self._work, name="ramir-restore", daemon=True)
        self._worker.start()

    # -- public -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
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

    def submit(self, data: bytes, filename: str, degradation: str, level: float, seed: int) -> Job:
        """Decode (and optionally degrade) an uploaded image and queue it.

        Raises ``ValueError`` with a message for the page when the upload is unusable, and
        :class:`ServerBusyError` when ``max_queued`` jobs are already waiting. The files of
        a refused upload are deleted.
        """
        self._check_room()
        job_id = uuid.uuid4().hex[:12]
        workdir = Path(self._tmp.name) / job_id
        workdir.mkdir()
        try:
            with self._decode:
                job = self._prepare(job_id, workdir, data, filename, degradation, level, seed)
            with self._lock:
                self._check_room()  # re-checked: others may have queued meanwhile
                self.jobs[job_id] = job
                self._evict()
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self._queue.put(job)
        return job

    def _check_room(self) -> None:
        live = sum(j.status in ("queued", "running") for j in list(self.jobs.values()))
        if live >= self.config.max_queued:
            raise ServerBusyError(
                f"the server is busy: {live} images are waiting or being restored; "
                "try again in a minute"
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
        self,
        job_id: str,
        workdir: Path,
        data: bytes,
        filename: str,
        degradation: str,
        level: float,
        seed: int,
    ) -> Job:
        suffix = Path(filename).suffix.lower() or ".img"
        src = workdir / f"upload{suffix if len(suffix) <= 6 else '.img'}"
        src.write_bytes(data)
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
        write_image(workdir / "input.png", image.rgb, like=image)
        return Job(
            id=job_id,
            workdir=workdir,
            width=int(w),
            height=int(h),
            mode=image.mode,
            bit_depth=image.bit_depth,
        )

    def status(self, job_id: str) -> dict[str, Any] | None:
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
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None or name not in ("input.png", "output.png"):
            return None
        path = job.workdir / name
        return path if path.is_file() else None

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)
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


def make_server(
    service: RestoreService, host: str = "127.0.0.1", port: int = 7860
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) bound to ``host:port`` (port 0 = any free port)."""
    page = _page()
    max_bytes = int(service.config.max_upload_mb * 1024 * 1024)
    loopback = host in LOOPBACK_NAMES

    class Handler(BaseHTTPRequestHandler):
        server_version = "ramir"

        def log_message(self, fmt: str, *args: Any) -> None:  # quieter than stderr spam
            log.debug("%s - " + fmt, self.address_string(), *args)

        def _send(
            self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _refused(self, post: bool) -> bool:
            """403 (and True) for a request this server must not answer: another host
            name while bound to loopback (DNS rebinding), or a POST whose Origin is
            another site (a web page the user visits posting to the local server)."""
            host_header = self.headers.get("Host", "")
            name = urlparse(f"http://{host_header}").hostname or ""
            if loopback and name not in LOOPBACK_NAMES:
                self._json(403, {"error": "this server answers only on its loopback address"})
                return True
            origin = self.headers.get("Origin")
            if post and origin is not None and urlparse(origin).netloc != host_header:
                self._json(403, {"error": "uploads are accepted only from this server's page"})
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
                        self._send(
                            200,
                            f.read_bytes(),
                            "image/png",
                            {"Content-Disposition": f'inline; filename="{parts[0]}-{parts[1]}"'},
                        )
                else:
                    self._json(404, {"error": "not found"})
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            if self._refused(post=True):
                return
            url = urlparse(self.path)
            if url.path != "/api/restore":
                self._json(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                length = -1
            if length <= 0:
                self._json(400, {"error": "empty upload: choose an image file"})
                return
            if length > max_bytes:
                # Drain (bounded) so the client sees the answer rather than a reset.
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self._json(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {
                        "error": f"file of {length / 2**20:.1f} MB is over the upload limit of "
                        f"{service.config.max_upload_mb:g} MB"
                    },
                )
                return
            data = self.rfile.read(length)
            q = parse_qs(url.query)
            name = q.get("filename", [""])[0]
            degradation = q.get("degradation", ["none"])[0]
            try:
                level = float(q.get("level", ["0"])[0] or 0)
                seed = int(q.get("seed", ["0"])[0] or 0)
                job = service.submit(data, name, degradation, level, seed)
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server

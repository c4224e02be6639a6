"""The job service of the web app: its limits (:class:`WebConfig`), the room claimed for
an upload before its body is read (:class:`Upload`), and the queue of restoration jobs
run one at a time on a worker thread (:class:`RestoreService`)."""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch

from ramir.data.read import ImageReadError, ImageTooLargeError, read_image
from ramir.data.write import write_image
from ramir.degradations.levels import LEVELS, check_level, degrade_at_level
from ramir.errors import RamirError
from ramir.models import count_parameters
from ramir.models.base import RestorationModel
from ramir.options import WEB_MAX_PIXELS, WEB_MAX_UPLOAD_MB
from ramir.webapp.tempdirs import TEMP_PREFIX, claim_folder, remove_stale_folders

log = logging.getLogger(__name__)


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
    notes: list[str] = field(default_factory=list)  # what reading changed or dropped


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
        self._owner = claim_folder(Path(self._tmp.name))
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
            "degradations": LEVELS,
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
        check_level(degradation, level)
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
            out = degrade_at_level(arr, degradation, level, seed)
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
            notes=[self._public(note) for note in image.notes],
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
            "notes": list(job.notes),
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
        from ramir.inference.restore import restore

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

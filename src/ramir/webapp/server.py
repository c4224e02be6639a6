"""The web app's HTTP routes (the page, its API, uploads streamed to disk and refused
from their headers): :class:`RestoreHandler` on a :class:`RestoreServer`, a
:class:`~ramir.webapp.gate.BoundedHTTPServer` that holds the job service."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from ramir.degradations.levels import check_level
from ramir.webapp.gate import CHUNK, BoundedHandler, BoundedHTTPServer
from ramir.webapp.service import RestoreService, ServerBusyError, Upload, _short

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
"""Host names of the loopback address; bound to one, the server answers only to them."""


def _page() -> bytes:
    return resources.files("ramir").joinpath("assets/web/index.html").read_bytes()


class _ShortBodyError(ConnectionError):
    """The client ended its upload before the bytes it declared."""


class _StoreError(RuntimeError):
    """An upload could not be written to the temporary folder (disk full...)."""


class RestoreServer(BoundedHTTPServer):
    """The web app's HTTP server: :class:`RestoreHandler` answers with ``service``.

    Bound to ``host:port`` (port 0 = any free port) when built, not yet serving.
    """

    def __init__(self, service: RestoreService, host: str = "127.0.0.1", port: int = 7860) -> None:
        self.service = service
        self.page = _page()
        self.max_bytes = int(service.config.max_upload_mb * 1024 * 1024)
        self.loopback = host in LOOPBACK_NAMES
        super().__init__((host, port), RestoreHandler, service.config)


def make_server(
    service: RestoreService, host: str = "127.0.0.1", port: int = 7860
) -> RestoreServer:
    """An HTTP server (not yet serving) bound to ``host:port`` (port 0 = any free port)."""
    return RestoreServer(service, host, port)


class RestoreHandler(BoundedHandler):
    """The routes: ``GET`` the page, the model's info, a job's status and files; ``POST``
    an upload to restore (see :mod:`ramir.webapp`)."""

    server: RestoreServer
    server_version = "ramir"

    # -- answers ------------------------------------------------------------------------
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
        if self.server.loopback and name not in LOOPBACK_NAMES:
            answer(403, "this server answers only on its loopback address")
            return True
        origin = self.headers.get("Origin")
        if post and origin is not None and urlparse(origin).netloc != host_header:
            answer(403, "uploads are accepted only from this server's page")
            return True
        return False

    # -- GET ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        if self._refused(post=False):
            return
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/info":
            self._json(200, self.server.service.info())
        elif path.startswith("/api/jobs/"):
            self._get_job(path.split("/")[3:])
        else:
            self._json(404, {"error": "not found"})

    def _get_job(self, parts: list[str]) -> None:
        """``/api/jobs/<id>`` (the status) or ``/api/jobs/<id>/<file>``."""
        service = self.server.service
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

    # -- POST ---------------------------------------------------------------------------
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
        if length > self.server.max_bytes:
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"file of {length / 2**20:.1f} MB is over the upload limit of "
                f"{self.server.service.config.max_upload_mb:g} MB",
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

    def _receive_upload(self, length: int, upload: Upload) -> bool:
        """The body into ``upload``'s file; False once the client was answered."""
        try:
            self._receive(length, upload.path)
        except TimeoutError:
            log.info("dropped a stalled upload from %s", self.address_string())
            self._give_up(408, "the upload was too slow: the connection is closed")
            return False
        except _ShortBodyError as e:
            self._give_up(400, str(e))
            return False
        except _StoreError as e:
            self._refuse(500, f"the server could not store the upload: {e}")
            return False
        return True

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
            check_level(degradation, level)
        except ValueError as e:
            self._refuse(400, str(e))
            return
        service = self.server.service
        try:
            upload = service.reserve(name)  # before a byte of the body is read
        except ServerBusyError as e:
            self._refuse(503, str(e), {"Retry-After": "60"})
            return
        with upload:  # the partial or refused file is deleted on the way out
            if not self._receive_upload(length, upload):
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

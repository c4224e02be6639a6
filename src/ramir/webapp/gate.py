"""Bounded HTTP connections: a header gate (one selector thread) that holds connections
until their request line and headers are in, a cap on the requests handled at once, and
a request handler whose every read and write has a deadline. Knows nothing of the job
service: the routes are :func:`ramir.webapp.server.make_server`'s."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import selectors
import socket
import sys
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ramir.webapp.service import WebConfig

log = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes read from an upload, or sent of an answer, at a time."""

MAX_HEAD = 64 * 1024
"""Longest request line and headers, in bytes (then ``431``)."""

LINGER_S = 2.0
"""After answering a POST without reading its body, how long what the client still sends
is read and discarded, so that it sees the answer rather than a TCP reset."""


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

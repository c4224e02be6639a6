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

Layout, one job a module, each depending only on those after it: :mod:`.server` (the
routes: :class:`~ramir.webapp.server.RestoreHandler` on a
:class:`~ramir.webapp.server.RestoreServer`, :func:`make_server`), :mod:`.gate` (bounded
connections: the header gate, the request cap, deadlines on reads and writes),
:mod:`.service` (:class:`WebConfig`, the job queue), :mod:`.tempdirs` (the temporary
folders and their stale cleanup). The page's degradation sliders are
:mod:`ramir.degradations.levels`. This package exports what ``ramir serve`` and users
start a server with; every other name is imported from its module.
"""

from __future__ import annotations

from ramir.webapp.server import make_server
from ramir.webapp.service import RestoreService, WebConfig
from ramir.webapp.tempdirs import remove_stale_folders

__all__ = ["WebConfig", "RestoreService", "make_server", "remove_stale_folders"]

"""The local web app: HTTP API tests and end-to-end tests in a real headless browser."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from ramir.models import build_model
from ramir.webapp import RestoreService, WebConfig, make_server, remove_stale_folders

ARTIFACTS = Path(
    os.environ.get("RAMIR_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    model = build_model("nafnet_tiny").eval()
    config = WebConfig(max_pixels=300_000, max_upload_mb=2.0, tile=96, tile_overlap=16)
    service = RestoreService(model, config, name="tiny-nafnet")
    srv = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()
    service.close()


def _photo_png(size=(200, 160)) -> bytes:
    img = Image.fromarray(skdata.astronaut()).resize(size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _post(url: str, body: bytes, **params) -> tuple[int, dict]:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    req = urllib.request.Request(f"{url}/api/restore?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait(url: str, job: str) -> dict:
    import time

    for _ in range(400):
        with urllib.request.urlopen(f"{url}/api/jobs/{job}", timeout=10) as r:
            st = json.loads(r.read())
        if st["status"] in ("done", "error"):
            return st
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_info_and_page(server):
    with urllib.request.urlopen(f"{server}/api/info") as r:
        info = json.loads(r.read())
    assert info["model"] == "tiny-nafnet" and info["parameters"] > 0
    assert "noise" in info["degradations"]
    with urllib.request.urlopen(server + "/") as r:
        page = r.read().decode()
    assert "<title>ramir" in page
    # offline: the page loads nothing from another host
    assert "http://" not in page and "https://" not in page


def test_restore_round_trip_keeps_size(server):
    status, body = _post(server, _photo_png(), filename="a.png", degradation="noise", level=25)
    assert status == 202, body
    st = _wait(server, body["job"])
    assert st["status"] == "done", st
    with urllib.request.urlopen(f"{server}/api/jobs/{body['job']}/output.png") as r:
        out = Image.open(io.BytesIO(r.read()))
        assert out.size == (200, 160)
    with urllib.request.urlopen(f"{server}/api/jobs/{body['job']}/input.png") as r:
        noisy = np.asarray(Image.open(io.BytesIO(r.read())), dtype=np.float64)
    clean = np.asarray(Image.open(io.BytesIO(_photo_png())), dtype=np.float64)
    # the synthetic degradation was applied to the input shown
    assert 10 < np.std(noisy - clean) < 40


def test_reading_notes_are_in_the_status_and_on_the_page(server):
    """What reading changed or dropped (here: an animated WebP's later frames) is in the
    job's status, without server paths, and the page shows it as text."""
    photo = Image.open(io.BytesIO(_photo_png((96, 80))))
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:])
    status, body = _post(server, buf.getvalue(), filename="moving.webp")
    assert status == 202, body
    st = _wait(server, body["job"])
    assert st["status"] == "done", st
    assert any("animated WEBP with 2 frames" in note for note in st["notes"]), st
    assert any("only the first frame is restored" in note for note in st["notes"]), st
    text = json.dumps(st)
    assert tempfile.gettempdir() not in text and "ramir-serve-" not in text
    assert "upload" not in " ".join(st["notes"])  # nor the name of the stored file
    status, body = _post(server, _photo_png((64, 64)), filename="still.png")
    assert status == 202 and _wait(server, body["job"])["notes"] == []
    with urllib.request.urlopen(server + "/") as r:
        page = r.read().decode()
    assert 'id="notes"' in page and "s.notes" in page and "textContent" in page


def test_bad_inputs_get_messages_and_server_keeps_serving(server):
    status, body = _post(server, b"this is not an image", filename="x.jpg")
    assert status == 400 and "not a readable image" in body["error"]
    truncated = _photo_png()[:400]
    status, body = _post(server, truncated, filename="t.png")
    assert status == 400 and "not a readable image" in body["error"]
    big = Image.fromarray(np.zeros((700, 700, 3), np.uint8))
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    status, body = _post(server, buf.getvalue(), filename="big.png")
    assert status == 400 and "over the limit of 0.3 megapixels" in body["error"]
    assert "larger --max-pixels" in body["error"] and "/" not in body["error"]  # no paths
    # a 1-bit PNG of a few KB that declares 13000x13000 pixels: refused from its header
    bomb = io.BytesIO()
    Image.new("1", (13000, 13000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000
    status, body = _post(server, bomb.getvalue(), filename="bomb.png")
    assert status == 400 and "declares 13000x13000 pixels" in body["error"]
    status, body = _post(server, b"\0" * (3 * 1024 * 1024), filename="huge.png")
    assert status == 413 and "upload limit" in body["error"]
    status, body = _post(server, _photo_png(), filename="a.png", degradation="nope")
    assert status == 400 and "unknown degradation" in body["error"]
    status, body = _post(server, _photo_png((64, 64)), filename="ok.png")
    assert status == 202 and _wait(server, body["job"])["status"] == "done"


def _request(url: str, body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_other_sites_and_host_names_are_refused(server):
    """A page on another site cannot post to the local server (its browser sends its
    Origin), and a DNS-rebound host name gets nothing."""
    url = f"{server}/api/restore?filename=a.png"
    status, _, body = _request(url, _photo_png((64, 64)), {"Origin": "http://evil.example"})
    assert status == 403 and "only from this server's page" in body["error"]
    status, _, body = _request(f"{server}/api/info", headers={"Host": "evil.example:80"})
    assert status == 403
    same_origin = {"Origin": server, "Content-Type": "text/plain"}
    status, _, body = _request(url, _photo_png((64, 64)), same_origin)
    assert status == 202, body


def _job_dirs(tmp: Path) -> list[str]:
    """The job folders in a service's temporary folder (not its owner marker)."""
    return sorted(p.name for p in tmp.iterdir() if p.is_dir())


def test_queue_is_bounded_and_files_are_deleted(monkeypatch, tmp_path):
    """At most max_queued jobs wait (then 503 + Retry-After); rejected uploads leave no
    files; finished jobs over max_jobs_kept are forgotten with their files; queued jobs
    hold no decoded image."""
    gate = threading.Event()
    real_work = RestoreService._work

    def gated(self):
        gate.wait(30)
        real_work(self)

    monkeypatch.setattr(RestoreService, "_work", gated)
    model = build_model("nafnet_tiny").eval()
    config = WebConfig(max_pixels=300_000, max_upload_mb=2.0, max_queued=2, max_jobs_kept=1)
    service = RestoreService(model, config, name="gated")
    srv = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = "http://{}:{}".format(*srv.server_address[:2])
    tmp = Path(service._tmp.name)
    try:
        ids = [_post(url, _photo_png((64, 64)), filename="a.png")[1]["job"]]
        status, body = _post(url, b"not an image", filename="x.png")
        assert status == 400 and str(tmp) not in body["error"]
        assert _job_dirs(tmp) == ids  # the rejected upload left nothing
        ids.append(_post(url, _photo_png((64, 64)), filename="b.png")[1]["job"])
        assert all(not hasattr(service.jobs[i], "image") for i in ids)  # encoded on disk
        status, headers, body = _request(f"{url}/api/restore?filename=c.png", _photo_png())
        assert status == 503 and headers["Retry-After"] == "60"
        assert "the server is busy: 2 images are waiting" in body["error"]
        assert _job_dirs(tmp) == sorted(ids)
        gate.set()
        assert _wait(url, ids[1])["status"] == "done"  # jobs run in order
        assert _job_dirs(tmp) == [ids[1]]  # the oldest evicted
        assert _request(f"{url}/api/jobs/{ids[0]}")[0] == 404
    finally:
        gate.set()
        srv.shutdown()
        srv.server_close()
        service.close()
    assert not tmp.exists()


def test_sigterm_deletes_the_temporary_files(tmp_path):
    """`ramir serve` stopped by SIGTERM (not only Ctrl+C) removes its temporary folder."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ramir", "serve", "--port", "0", "--threads", "1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ramir serve:" in line
        assert any(p.name.startswith("ramir-serve-") for p in tmp_path.iterdir())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.1)
    assert not any(p.name.startswith("ramir-serve-") for p in tmp_path.iterdir())


def test_concurrent_requests_queue(server):
    results = []

    def one():
        status, body = _post(server, _photo_png((120, 100)), filename="c.png")
        results.append(_wait(server, body["job"])["status"] if status == 202 else status)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["done"] * 4


# ------------------------------------------------------------------ connection bounds


@contextlib.contextmanager
def _serving(config: WebConfig):
    """A service and its server on 127.0.0.1:any, for one test."""
    model = build_model("nafnet_tiny").eval()
    service = RestoreService(model, config, name="bounds")
    srv = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield "http://{}:{}".format(*srv.server_address[:2]), service
    finally:
        srv.shutdown()
        srv.server_close()
        service.close()


def _eventually(condition, seconds: float = 2.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _closed_by_server(sock: socket.socket, timeout: float = 2.0) -> bool:
    """Whether the server closes ``sock`` (with or without an answer) within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def _connect(url: str, data: bytes = b"") -> socket.socket:
    host, port = url.split("//")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def _head(url: str, length: int | None, extra: str = "") -> bytes:
    host = url.split("//")[1]
    cl = "" if length is None else f"Content-Length: {length}\r\n"
    return f"POST /api/restore?filename=a.png HTTP/1.1\r\nHost: {host}\r\n{cl}{extra}\r\n".encode()


def _answer(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, dict, float]:
    """The server's answer (status, JSON body; status ``None``: closed without one) and
    the seconds it took to close the connection."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    took = time.monotonic() - start
    if not data.startswith(b"HTTP/"):
        return None, {}, took
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"null"), took


def test_upload_refused_from_its_headers_without_reading_the_body():
    """413 from a Content-Length over the limit, 411 without one (or chunked), 400 for a
    bad one: answered at once, though no byte of the body was sent."""
    with _serving(WebConfig(max_upload_mb=1.0)) as (url, service):
        sock = _connect(url, _head(url, 10 * 2**30))  # 10 GB declared, nothing sent
        status, body, took = _answer(sock)
        assert status == 413 and "over the upload limit of 1 MB" in body["error"]
        assert took < 3
        status, body, _ = _answer(_connect(url, _head(url, None)))
        assert status == 411 and "Content-Length" in body["error"]
        chunked = _head(url, None, "Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\n0\r\n\r\n"
        status, body, _ = _answer(_connect(url, chunked))
        assert status == 411 and "not chunked" in body["error"]
        status, body, _ = _answer(_connect(url, _head(url, None, "Content-Length: -5\r\n")))
        assert status == 400 and "invalid Content-Length" in body["error"]
        assert _job_dirs(Path(service._tmp.name)) == []


def test_short_or_stalled_body_is_dropped_and_its_file_deleted():
    """A body shorter than its Content-Length: the client's end gives a 400, its silence
    a 408 after idle_timeout; either way the partial file is deleted."""
    config = WebConfig(idle_timeout=0.5, header_timeout=2.0)
    with _serving(config) as (url, service):
        tmp = Path(service._tmp.name)
        sock = _connect(url, _head(url, 100_000) + b"\0" * 1000)

        def arrived() -> list[int]:
            return [p.stat().st_size for p in tmp.glob("*/upload.png")]

        assert _eventually(lambda: arrived() == [1000])  # streamed to a file as it arrives
        status, body, took = _answer(sock)
        assert status == 408 and "too slow" in body["error"]
        assert took < 3
        assert _eventually(lambda: _job_dirs(tmp) == [] and service._uploads == 0)
        sock = _connect(url, _head(url, 100_000) + b"\0" * 1000)
        sock.shutdown(socket.SHUT_WR)  # the client ends its upload early
        status, body, _ = _answer(sock)
        assert status == 400 and "ended after 1,000 of the 100,000 bytes" in body["error"]
        assert _eventually(lambda: _job_dirs(tmp) == [] and service._uploads == 0)


def test_slow_sender_is_dropped_at_its_deadline():
    """Bytes that keep trickling in (never idle_timeout of silence) still have to average
    min_rate_kb: the upload's deadline is idle_timeout + size / rate."""
    import select

    config = WebConfig(idle_timeout=0.5, min_rate_kb=1.0)  # 2 KB: due in 0.5 + 2 s
    with _serving(config) as (url, service):
        sock = _connect(url, _head(url, 2048))
        start = time.monotonic()
        with contextlib.suppress(OSError):
            while time.monotonic() - start < 8:
                sock.sendall(b"\0" * 4)  # 20 bytes/s
                if select.select([sock], [], [], 0.2)[0]:
                    break  # the server answered
        took = time.monotonic() - start
        status, body, _ = _answer(sock)
        assert status in (408, None)  # None: the answer lost to a reset (bytes in flight)
        assert 2.0 < took < 5
        assert _eventually(lambda: _job_dirs(Path(service._tmp.name)) == [])


def test_slow_headers_are_closed_after_header_timeout():
    """A slowloris connection (headers that never end) is closed after header_timeout,
    however it trickles; it held no thread meanwhile."""
    with _serving(WebConfig(header_timeout=0.5)) as (url, _):
        threads = threading.active_count()
        sock = _connect(url, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        for _ in range(4):  # a line every 0.1 s: never idle, never done
            sock.sendall(b"X-Pad: x\r\n")
            time.sleep(0.1)
        assert threading.active_count() <= threads
        status, _, _ = _answer(sock)
        assert status == 408 and time.monotonic() - start < 3


def test_queue_full_is_refused_before_the_body_is_read(monkeypatch):
    """With the queue full (jobs waiting or uploads arriving), an upload's headers get
    503 + Retry-After at once; so do uploads past max_uploads."""
    gate = threading.Event()
    real_work = RestoreService._work

    def gated(self):
        gate.wait(30)
        real_work(self)

    monkeypatch.setattr(RestoreService, "_work", gated)
    config = WebConfig(max_pixels=300_000, max_queued=2, max_uploads=1, idle_timeout=5.0)
    try:
        with _serving(config) as (url, service):
            status, body = _post(url, _photo_png((64, 64)), filename="a.png")
            assert status == 202, body
            arriving = _connect(url, _head(url, 500_000) + b"\0" * 100)  # an upload arriving
            assert _eventually(lambda: service._uploads == 1)
            status, body, took = _answer(_connect(url, _head(url, 500_000)))
            assert status == 503 and took < 3  # though no byte of its body was sent
            assert "receiving other uploads" in body["error"]
            service.config.max_uploads = 2
            status, body, _ = _answer(_connect(url, _head(url, 500_000)))
            assert status == 503
            assert "2 images are waiting, arriving or being restored" in body["error"]
            arriving.close()
            gate.set()  # the worker may stop before the service closes
    finally:
        gate.set()


def test_connection_cap_holds_and_normal_requests_pass():
    """Idle sockets hold no thread, and past max_pending the oldest are closed; requests
    handled at once are capped by max_connections (more get a quick 503); a normal
    request is served while idle sockets wait, and once stalled uploads time out."""
    config = WebConfig(max_connections=2, max_pending=8, max_uploads=2, idle_timeout=3.0)
    with _serving(config) as (url, _):
        threads = threading.active_count()
        idle = [_connect(url) for _ in range(20)]  # connect and send nothing
        time.sleep(0.3)
        assert threading.active_count() <= threads
        t0 = time.monotonic()
        assert _request(f"{url}/api/info")[0] == 200 and time.monotonic() - t0 < 2
        assert all(_closed_by_server(s) for s in idle[:12])  # the oldest, past max_pending
        # two uploads stalled mid-body hold both handler threads
        stalled = [_connect(url, _head(url, 100_000) + b"\0" * 10) for _ in range(2)]
        assert _eventually(lambda: threading.active_count() == threads + 2)  # both admitted
        time.sleep(0.1)
        assert threading.active_count() <= threads + 2
        t0 = time.monotonic()
        status, headers, body = _request(f"{url}/api/info")
        assert status == 503 and headers["Retry-After"] == "5" and "too many" in body["error"]
        assert time.monotonic() - t0 < 1
        assert [_answer(s)[0] for s in stalled] == [408, 408]  # after idle_timeout
        assert _eventually(lambda: _request(f"{url}/api/info")[0] == 200)
        for sock in idle:
            sock.close()


def test_submit_from_python_takes_bytes_or_a_path(tmp_path):
    """RestoreService.submit: the image's bytes or its path (copied: the file is left
    alone)."""
    model = build_model("nafnet_tiny").eval()
    service = RestoreService(model, WebConfig(max_pixels=300_000), name="py")
    try:
        photo = tmp_path / "p.png"
        photo.write_bytes(_photo_png((64, 64)))
        jobs = [service.submit(photo.read_bytes(), "a.png"), service.submit(photo, "p.png")]
        assert photo.is_file()
        for job in jobs:
            for _ in range(400):
                if job.status in ("done", "error"):
                    break
                time.sleep(0.05)
            assert job.status == "done", job.error
        with pytest.raises(ValueError, match="not a readable image"):
            service.submit(b"nope", "x.png")
        assert service._uploads == 0
    finally:
        service.close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temp_folders_are_deleted_at_start_up(monkeypatch, tmp_path):
    """Folders of earlier runs whose process is gone are deleted when a service starts;
    a live process's folder, an unmarked young folder and other files are kept."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def folder(name: str, owner: dict | None) -> Path:
        d = tmp_path / f"ramir-serve-{name}"
        (d / "0123456789ab").mkdir(parents=True)
        (d / "0123456789ab" / "input.png").write_bytes(b"x" * 1000)
        if owner is not None:
            (d / "owner").write_text(json.dumps(owner))
        return d

    dead = folder("dead", {"pid": _dead_pid(), "started": None})
    live = folder("live", {"pid": os.getpid()})
    young = folder("young", None)
    old = folder("old", None)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    reused = None
    if Path("/proc/self/stat").exists():  # a live pid that another process started
        reused = folder("reused", {"pid": os.getpid(), "started": "1"})
    (tmp_path / "ramir-serve-file").write_text("not a folder")
    service = RestoreService(build_model("nafnet_tiny").eval(), WebConfig(), name="t")
    try:
        mine = Path(service._tmp.name)
        assert mine.parent == tmp_path and mine.name.startswith("ramir-serve-")
        assert json.loads((mine / "owner").read_text())["pid"] == os.getpid()
        assert not dead.exists() and not old.exists()
        assert reused is None or not reused.exists()
        assert live.is_dir() and young.is_dir() and (tmp_path / "ramir-serve-file").is_file()
        assert remove_stale_folders(tmp_path) == []  # the running service's own is kept
    finally:
        service.close()
    assert not mine.exists()


def test_a_killed_servers_files_are_deleted_by_the_next_start(monkeypatch, tmp_path):
    """`ramir serve` killed with SIGKILL leaves its folder; the next start deletes it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ramir", "serve", "--port", "0", "--threads", "1"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "ramir serve:" in proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    left = [p for p in tmp_path.iterdir() if p.name.startswith("ramir-serve-")]
    assert len(left) == 1 and (left[0] / "owner").is_file()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    service = RestoreService(build_model("nafnet_tiny").eval(), WebConfig(), name="next")
    try:
        assert not left[0].exists()
        left = [p.name for p in tmp_path.iterdir() if p.name.startswith("ramir-serve-")]
        assert left == [Path(service._tmp.name).name]
    finally:
        service.close()


def test_serve_flags_state_webconfigs_defaults():
    """`ramir serve --help` names WebConfig's limits (the parser does not import the
    web app, so the numbers are written twice), and unset flags leave them alone."""
    import argparse

    from ramir.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["serve"].format_help().split())
    config = WebConfig()
    for flag, value in [
        ("--max-connections", config.max_connections),
        ("--max-uploads", config.max_uploads),
        ("--header-timeout", config.header_timeout),
        ("--idle-timeout", config.idle_timeout),
    ]:
        help_text = text.split(flag, 2)[-1]
        assert f"(default {value:g})" in help_text.split(" --")[0], flag
    args = parser.parse_args(["serve"])
    assert args.max_connections is None and args.idle_timeout is None


def test_serve_refuses_a_bad_tile_at_start_up(tmp_path, capsys):
    """`ramir serve --tile 16 --tile-overlap 32` stops before loading a model (the model
    file does not exist: the tile error comes first), not in every request."""
    from ramir.cli import main

    missing = tmp_path / "no-such-model.safetensors"
    argv = ["serve", "--tile", "16", "--tile-overlap", "32", "--port", "0", "--device", "cpu"]
    assert main([*argv, "--model", str(missing)]) != 0
    err = capsys.readouterr().err
    assert "--tile 16 must be larger than --tile-overlap 32" in err
    assert "not found" not in err and str(missing) not in err


# ----------------------------------------------------------------------------- browser


def _browser():
    pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium browser on this machine (apt-get install chromium)")
    return pw, exe


@pytest.fixture(scope="module")
def page(server):
    pw, exe = _browser()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=exe,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        pg = browser.new_page(viewport={"width": 1280, "height": 820})
        yield pg
        browser.close()


def test_browser_upload_restore_and_compare(server, page, tmp_path):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(_photo_png((240, 180)))
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('parameters')")
    page.set_input_files("#file", str(photo))
    page.select_option("#degradation", "noise")
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    page.wait_for_function(
        "document.getElementById('after').complete && document.getElementById('after').naturalWidth > 0"
    )
    size = page.evaluate(
        "[document.getElementById('after').naturalWidth, document.getElementById('after').naturalHeight]"
    )
    assert size == [240, 180]
    assert "restored in" in page.text_content("#timing")
    page.fill("#slider", "30")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webapp.png"), full_page=True)
    assert (ARTIFACTS / "webapp.png").stat().st_size > 10_000


def test_browser_broken_file_shows_error_and_server_stays_up(server, page, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    page.goto(server + "/")
    page.set_input_files("#file", str(broken))
    page.click("#go")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "not a readable image" in page.text_content("#error")
    # the server still restores the next image
    good = tmp_path / "good.png"
    good.write_bytes(_photo_png((96, 80)))
    page.set_input_files("#file", str(good))
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.text_content("#error") == ""


def test_a_released_gray_swinir_serves_rgb_uploads(tmp_path):
    """``ramir serve --model <release .pth>``: a gray SwinIR release (BasicSR file)
    restores an RGB upload (as gray, same size)."""
    from ramir import load_model

    torch.manual_seed(0)
    net = build_model("swinir", in_chans=1, img_size=16, embed_dim=8, depths=[1],
                      num_heads=[2], window_size=8)  # fmt: skip
    release = tmp_path / "004_grayDN_test.pth"
    torch.save({"params": net.state_dict()}, release)
    model = load_model(release)
    service = RestoreService(model, WebConfig(max_pixels=300_000, tile=96), name="gray")
    srv = make_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    url = "http://{}:{}".format(*srv.server_address[:2])
    try:
        status, body = _post(url, _photo_png((120, 90)), filename="a.png")
        assert status == 202, body
        assert _wait(url, body["job"])["status"] == "done"
        with urllib.request.urlopen(f"{url}/api/jobs/{body['job']}/output.png") as r:
            out = np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"), dtype=np.int16)
        assert out.shape == (90, 120, 3)
        assert np.abs(out[..., 0] - out[..., 1]).max() <= 1  # gray result
    finally:
        srv.shutdown()
        srv.server_close()
        service.close()


# ----------------------------------------------------------- RAM++ RestormerRFR with --dino


def test_serve_with_dino_restores_as_ramir_restore(tmp_path, tiny_rfr_release, tiny_dino_dir):
    """``ramir serve --model RestormerRFR.pth --dino DIR``: an upload is restored with the
    DINOv2's features, as ``ramir.restore`` restores it (to 8-bit rounding)."""
    import signal

    import ramir
    from ramir.data.read import read_image

    photo = tmp_path / "a.png"
    photo.write_bytes(_photo_png((52, 40)))
    argv = ["serve", "--model", str(tiny_rfr_release), "--dino", str(tiny_dino_dir)]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ramir", *argv, "--port", "0", "--threads", "1", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "ramir serve: RestormerRFR.pth on http://" in line, line
        url = line.split(" on ")[1].split()[0].rstrip("/")
        status, body = _post(url, photo.read_bytes(), filename="a.png")
        assert status == 202, body
        assert _wait(url, body["job"])["status"] == "done"
        with urllib.request.urlopen(f"{url}/api/jobs/{body['job']}/output.png") as r:
            got = np.asarray(Image.open(io.BytesIO(r.read())), dtype=np.float64) / 255
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    model = ramir.load_model(tiny_rfr_release, dino=str(tiny_dino_dir))
    expected = ramir.restore(model, read_image(photo).rgb).permute(1, 2, 0).numpy()
    assert got.shape == (40, 52, 3)
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6


def test_serve_refuses_an_rfr_without_dino_at_start_up(tiny_rfr_release, capsys):
    from ramir.cli import main

    argv = ["serve", "--model", str(tiny_rfr_release), "--port", "0", "--device", "cpu"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "restores with DINOv2 features" in err and "--dino DIR" in err

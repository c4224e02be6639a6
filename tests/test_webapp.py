"""The local web app: HTTP API tests and end-to-end tests in a real headless browser."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from ramir.models import build_model
from ramir.webapp import RestoreService, WebConfig, make_server

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
        assert [p.name for p in tmp.iterdir()] == ids  # the rejected upload left nothing
        ids.append(_post(url, _photo_png((64, 64)), filename="b.png")[1]["job"])
        assert all(not hasattr(service.jobs[i], "image") for i in ids)  # encoded on disk
        status, headers, body = _request(f"{url}/api/restore?filename=c.png", _photo_png())
        assert status == 503 and headers["Retry-After"] == "60"
        assert "the server is busy: 2 images are waiting" in body["error"]
        assert sorted(p.name for p in tmp.iterdir()) == sorted(ids)
        gate.set()
        assert _wait(url, ids[1])["status"] == "done"  # jobs run in order
        assert sorted(p.name for p in tmp.iterdir()) == [ids[1]]  # the oldest evicted
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

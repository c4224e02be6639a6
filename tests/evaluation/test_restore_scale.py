"""Restoring folders at scale in one process: groups of same-size images, balance by
size, --skip-existing, reader/writer threads, and a kill in the middle of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ramir
from ramir.cli import main
from ramir.data.read import read_image
from ramir.data.write import remove_stale_temp_files, write_image
from ramir.inference.batch import restore_files
from ramir.inference.sharding import Writer, balance, group_same_size, prefetch

WORKER = Path(__file__).parent / "inference_worker.py"


def _smooth(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")[0].clamp(0, 1)


def write_mixed_folder(folder: Path) -> list[str]:
    """Eight images of five sizes (three alike), gray, 16-bit, alpha, JPEG; one broken."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        write_image(folder / f"same{i}.png", _smooth(40, 48, i))
    write_image(folder / "gray.png", _smooth(40, 48, 3), mode="gray")  # a 4th 40x48
    write_image(folder / "deep.png", _smooth(33, 47, 4), bit_depth=16)
    write_image(folder / "alpha.png", _smooth(36, 30, 5), alpha=torch.rand(1, 36, 30))
    write_image(folder / "wide.jpg", _smooth(40, 120, 6))  # tiled with --tile 48
    write_image(folder / "large.png", _smooth(90, 100, 7))  # the largest: tiled
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    return sorted(p.name for p in folder.iterdir() if p.name != "broken.png")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_groups_hold_same_size_whole_images_and_balance_splits_the_large_ones():
    sizes = [(40, 48), (40, 48), (33, 47), (40, 48), None, (40, 48), (900, 900)]
    whole = [True, True, True, True, True, True, False]
    assert group_same_size(sizes, whole, 3) == [[0, 1, 3], [2], [4], [5], [6]]
    assert group_same_size(sizes, whole, 1) == [[i] for i in range(7)]
    # two large images and many small ones: each rank gets one large one
    costs = [100.0, 1, 1, 1, 1, 100.0, 1, 1]
    shares = balance(costs, 2)
    assert [len({0, 5} & set(s)) for s in shares] == [1, 1]  # one large image each
    assert [sum(costs[i] for i in s) for s in shares] == [103.0, 103.0]
    assert shares == balance(costs, 2)  # deterministic
    assert balance(costs, 1) == [list(range(8))]
    shares = balance([float(c) for c in range(1, 30)], 4)
    loads = [sum(range(1, 30)[i] for i in s) for s in shares]
    assert max(loads) - min(loads) <= 2 and sorted(sum(shares, [])) == list(range(29))


def test_reader_and_writer_threads_keep_order_errors_and_bounds():
    live: list[int] = []

    def read(i: int) -> int:
        live.append(i)
        if i == 3:
            raise ValueError("cannot read 3")
        return i * 10

    got = []
    for item, value, error in prefetch(read, list(range(6)), ahead=1):
        assert len(live) - len(got) <= 2  # the one in use and one read ahead
        got.append((item, value, None if error is None else str(error)))
    assert got == [(0, 0, None), (1, 10, None), (2, 20, None), (3, None, "cannot read 3"),
                   (4, 40, None), (5, 50, None)]  # fmt: skip
    assert list(prefetch(read, [1], ahead=0)) == [(1, 10, None)]
    out: list[int] = []
    writer: Writer[None] = Writer(threaded=True, pending=1)
    futures = [writer.submit(out.append, i) for i in range(5)]
    failing = writer.submit(lambda: 1 / 0)
    writer.close()
    assert out == list(range(5)) and all(f.done() for f in futures)
    with pytest.raises(ZeroDivisionError):
        failing.result()


def test_batched_threaded_restore_matches_one_image_at_a_time(tmp_path, tiny_swinir, capsys):
    src = tmp_path / "in"
    names = write_mixed_folder(src)
    kw = dict(tile=48, tile_overlap=8, progress=False)
    one = restore_files(tiny_swinir, [src], tmp_path / "one", batch_size=1, **kw)
    many = restore_files(tiny_swinir, [src], tmp_path / "many", batch_size=4, overlap_io=True, **kw)
    assert [j.dst.name for j in one.written] == [j.dst.name for j in many.written] == [
        n for n in ["alpha.png", "deep.png", "gray.png", "large.png", "same0.png", "same1.png",
                    "same2.png", "wide.jpg"]]  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == names
    assert [s for s, _ in one.failed] == [s for s, _ in many.failed] == [str(src / "broken.png")]
    for name in names:
        a, b = read_image(tmp_path / "one" / name), read_image(tmp_path / "many" / name)
        assert (a.mode, a.bit_depth, a.size) == (b.mode, b.bit_depth, b.size)
        levels = 65535 if a.bit_depth == 16 else 255
        assert float((a.rgb - b.rgb).abs().max()) <= 1.01 / levels, name  # float rounding


def test_skip_existing_restores_only_what_is_missing(tmp_path, tiny_swinir_ckpt, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_mixed_folder(src)
    args = ["restore", str(src), "-o", str(out), "--model", str(tiny_swinir_ckpt), "-q"]
    args += ["--tile", "48", "--tile-overlap", "8", "--batch-size", "2", "--threads", "1"]
    assert main(args) == 1
    assert "restored 8 of 9 image(s)" in capsys.readouterr().out
    reference = _files(out)
    (out / "same1.png").unlink()  # grouped with same0 (kept) and computed with it again
    (out / "large.png").unlink()
    (out / ".wide.jpg.999.tmp.jpg").write_bytes(b"half of a jpeg")  # a killed write
    stamp = (out / "same0.png").stat().st_mtime_ns
    assert main([*args, "--skip-existing"]) == 1
    captured = capsys.readouterr()
    assert "restored 2 of 3 image(s) into" in captured.out
    assert "(6 already there, kept)" in captured.out and "broken.png" in captured.err
    assert _files(out) == reference  # the same bytes, and the stale temporary file gone
    assert (out / "same0.png").stat().st_mtime_ns == stamp  # not rewritten


def test_stale_temporary_files_are_found_by_name(tmp_path):
    target = tmp_path / "a [1].png"
    mine = tmp_path / ".a [1].png.123.tmp.png"
    other = tmp_path / ".a [1].png.x.png"  # not a temporary file of write_image
    for f in (mine, other):
        f.write_bytes(b"x")
    assert remove_stale_temp_files(target) == [mine]
    assert not mine.exists() and other.exists()


def _worker(args: list[str], fault: list[str] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        env.pop(k, None)
    cmd = [sys.executable, str(WORKER), *fault, "--", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_a_kill_in_the_middle_of_a_write_leaves_no_half_file(tmp_path, tiny_swinir_ckpt):
    """SIGKILL while the 3rd image is half encoded: the outputs that exist are whole
    (the half-written bytes are in a hidden temporary file); --skip-existing ends with
    the outputs of an uninterrupted run, and no temporary file."""
    src, whole, killed = tmp_path / "in", tmp_path / "whole", tmp_path / "killed"
    write_mixed_folder(src)
    args = [str(src), "--model", str(tiny_swinir_ckpt), "-q", "--tile", "48"]
    args += ["--tile-overlap", "8", "--threads", "1"]
    assert main(["restore", *args, "-o", str(whole)]) == 1
    reference = _files(whole)
    died = _worker(["restore", *args, "-o", str(killed)], ["--die-at", "3", "--half-written"])
    assert died.returncode == -signal.SIGKILL, died.stderr
    visible = {n: b for n, b in _files(killed).items() if not n.startswith(".")}
    hidden = [n for n in _files(killed) if n.startswith(".")]
    assert len(visible) == 2 and all(reference[n] == b for n, b in visible.items())
    assert len(hidden) == 1 and ".tmp." in hidden[0]  # the half-written image
    assert main(["restore", *args, "-o", str(killed), "--skip-existing"]) == 1
    assert _files(killed) == reference


def test_sigterm_stops_a_restore_with_a_message(tmp_path, tiny_swinir_ckpt):
    src = tmp_path / "in"
    for i in range(60):
        write_image(src / f"{i:02d}.png", _smooth(96, 96, i))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "ramir", "restore", str(src), "-o", str(tmp_path / "o"), "-q"]
    proc = subprocess.Popen([*cmd, "--model", str(tiny_swinir_ckpt), "--threads", "1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(600):  # until the first outputs exist
            if (tmp_path / "o").is_dir() and len(list((tmp_path / "o").glob("*.png"))) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"finished before it could be stopped: {proc.communicate()}")
            import time

            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err  # 128 + SIGTERM
    assert "ramir restore: error: stopped by SIGTERM" in err
    assert "rerun the same command with --skip-existing" in err
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


def test_the_python_api_takes_a_batch_size(tiny_swinir):
    x = _smooth(40, 56, 9)
    a = ramir.restore(tiny_swinir, x, tile=24, tile_overlap=6)
    b = ramir.restore(tiny_swinir, x, tile=24, tile_overlap=6, batch_size=6)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

"""The shared image store: exact pixels, bounded, picklable, removed with its owner."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ramir.data.store import PixelStore


def _images() -> dict[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        Path("a.png"): rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
        Path("b.png"): rng.integers(0, 65536, (3, 4, 3), dtype=np.uint16),
        Path("c.png"): rng.integers(0, 256, (9, 2, 1), dtype=np.uint8),
    }


def test_the_store_returns_the_exact_pixels_read_only_and_after_pickling(tmp_path):
    images = _images()
    store = PixelStore.build(list(images) + [Path("a.png")], images.__getitem__,
                             max_bytes=10**6, directory=tmp_path)  # fmt: skip
    assert len(store) == 3 and Path("a.png") in store and store.get(Path("zz")) is None
    for path, pixels in images.items():
        got = store[path]
        assert got.dtype == pixels.dtype and np.array_equal(got, pixels)
        assert not got.flags.writeable
    copy = pickle.loads(pickle.dumps(store))
    assert len(pickle.dumps(store)) < 1000  # the index, not the pixels
    assert all(np.array_equal(copy[p], images[p]) for p in images)
    copy.close()  # a copy never deletes the file
    assert store.file is not None and store.file.is_file()
    store.close()
    assert not store.file.exists()


def test_images_past_the_bound_are_left_out(tmp_path):
    images = _images()
    # a: 105 bytes, padded to 128 (64-byte alignment); b: 72 bytes would pass the bound
    store = PixelStore.build(list(images), images.__getitem__, max_bytes=128 + 18,
                             directory=tmp_path)  # fmt: skip
    assert set(store) == {Path("a.png"), Path("c.png")}
    assert store.nbytes == 105 + 18
    store.close()


def test_a_read_error_leaves_no_file_behind(tmp_path):
    def read(path: Path) -> np.ndarray:
        raise OSError(f"cannot read {path}")

    with pytest.raises(OSError, match="cannot read"):
        PixelStore.build([Path("x.png")], read, max_bytes=100, directory=tmp_path)
    assert not list(tmp_path.iterdir())


def test_folders_of_killed_processes_are_removed_by_the_next_store(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"ramir-pixels-{proc.stdout.strip()}-abc"
    dead.mkdir()
    alive = tmp_path / f"ramir-pixels-{os.getppid()}-abc"
    alive.mkdir()
    images = _images()
    store = PixelStore.build([Path("a.png")], images.__getitem__, max_bytes=10**6,
                             directory=tmp_path)  # fmt: skip
    assert not dead.exists() and alive.exists()
    store.close()

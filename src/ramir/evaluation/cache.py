"""The per-image results of ``ramir evaluate``, kept so that a stopped run resumes.

One file per row and test set, ``<run>/per_image/<row>/<set>.jsonl``: a header line with
what the values depend on (the checkpoint's SHA-256 or the classical method and its
settings, the inference settings, the conventions, the test-set definition, the data
seed), then one line per image::

    {"header": {...}}
    {"key": "0001", "index": 0, "ram": {"psnr": 31.2, "ssim": 0.91}, ..., "seconds": 0.4}

A file whose header differs from the run's is an error, not a mix of results
(``restart`` recomputes). While several ranks run, each appends to its own file in
``<set>.parts/``, which rank 0 merges into ``<set>.jsonl`` at the end.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ramir.distributed import DistInfo

__all__ = ["CACHE_VERSION", "ResultCache", "finite", "load_float", "read_cache", "safe_name"]

CACHE_VERSION = 1


def safe_name(name: str) -> str:
    """``name`` as a file or folder name: characters other than letters, digits and
    ``-_.+`` become ``_``."""
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)


def finite(x: float) -> float | str:
    """A metric value as a record keeps it: ``inf``/``nan`` as strings (JSON has none)."""
    return x if math.isfinite(x) else str(x)


def load_float(x: Any) -> float:
    """A metric value of a record as a float (the inverse of :func:`finite`)."""
    return float(x)  # "inf" strings round-trip through float()


def read_cache(path: Path, header: dict[str, Any], restart: bool) -> dict[str, dict[str, Any]]:
    """Per-image records of a set's cache file, keyed by image key.

    Empty when ``restart`` is set or the file is missing or empty; a line cut short by
    an interruption is skipped. Raises ``ValueError`` if the file's header is not
    ``header`` (results of another checkpoint, setting or test set).
    """
    if restart or not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return {}
    try:
        old = json.loads(lines[0]).get("header")
    except json.JSONDecodeError:
        old = None
    if old != header:
        raise ValueError(
            f"{path} holds results computed with a different checkpoint, inference setting or "
            "test set; use another run name/output_dir, delete that folder, or pass --restart "
            "to recompute"
        )
    records = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        records[rec["key"]] = rec
    return records


class ResultCache:
    """The per-image results of one row on one set: ``<set>.jsonl`` (a header line,
    then one line per image), and while several ranks run, one file per rank in
    ``<set>.parts/`` that rank 0 merges into it at the end."""

    def __init__(self, folder: Path, set_name: str, header: dict[str, Any], info: DistInfo):
        self.main = folder / f"{safe_name(set_name)}.jsonl"
        self.parts = folder / f"{safe_name(set_name)}.parts"
        self.header = header
        self.info = info
        self.had_parts = False

    def own(self) -> Path:
        """This rank's file in ``<set>.parts/``."""
        return self.parts / f"rank{self.info.rank}.jsonl"

    def read(self, restart: bool) -> dict[str, dict[str, Any]]:
        """What earlier runs measured: the main file and any rank files."""
        records = read_cache(self.main, self.header, restart)
        if self.parts.is_dir():
            for part in sorted(self.parts.glob("rank*.jsonl")):
                self.had_parts = True
                for key, rec in read_cache(part, self.header, restart).items():
                    records.setdefault(key, rec)
        return records

    def start(self, restart: bool, known: int) -> None:
        """Rank 0 (or the single process) prepares the main file (before any rank
        writes: the caller puts a barrier after this)."""
        if not self.info.is_main:
            return
        if restart:
            for part in self.parts.glob("rank*.jsonl") if self.parts.is_dir() else []:
                part.unlink(missing_ok=True)
        if restart or not self.main.exists() or (not known and not self.had_parts):
            self.main.write_text(json.dumps({"header": self.header}) + "\n", encoding="utf-8")

    def open(self) -> IO[str]:
        """The file this process appends its results to."""
        if not self.info.distributed:
            return open(self.main, "a", encoding="utf-8")
        self.parts.mkdir(parents=True, exist_ok=True)
        path = self.own()
        fresh = not path.exists() or path.stat().st_size == 0
        fh = open(path, "a", encoding="utf-8")
        if fresh:
            fh.write(json.dumps({"header": self.header}) + "\n")
            fh.flush()
        return fh

    def merge(self, records: dict[str, dict[str, Any]]) -> None:
        """Rank 0 writes every record into the main file (atomically), if ranks wrote
        files of their own (now or in an interrupted run)."""
        if not self.info.is_main or not (self.info.distributed or self.had_parts):
            return
        lines = [json.dumps({"header": self.header})]
        lines += [json.dumps(r) for r in sorted(records.values(), key=lambda r: r["index"])]
        tmp = self.main.with_name(self.main.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(self.main)

    def drop_own(self) -> None:
        """After the merge, on every rank of a distributed run: delete this rank's file
        (the caller puts a barrier between this and :meth:`clean`)."""
        if self.info.distributed and self.parts.is_dir():
            self.own().unlink(missing_ok=True)

    def clean(self) -> None:
        """After every rank dropped its own file: rank 0 deletes the files of ranks that
        are not in this run (a single process: all of them), then the empty folder."""
        if not self.info.is_main or not self.parts.is_dir():
            return
        for part in self.parts.glob("rank*.jsonl"):
            rank = part.stem.removeprefix("rank")
            if not rank.isdigit() or int(rank) >= self.info.world_size:
                part.unlink(missing_ok=True)
            elif not self.info.distributed:
                part.unlink(missing_ok=True)
        try:
            self.parts.rmdir()
        except OSError:
            pass  # not empty: a file that is no rank's results (left as it is)

"""Image files in folders: which names are images, in a stable order."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "list_images"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) that :func:`list_images` picks up and
:func:`ramir.data.write.write_image` writes."""


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix, case-insensitive; hidden files skipped).

    Sorted in natural order (``2.png`` before ``10.png``), so the order is stable across
    machines. ``recursive=True`` also walks sub-folders.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            found.extend(Path(dirpath) / f for f in filenames if _is_image_name(f))
    else:
        with os.scandir(folder) as it:
            found.extend(Path(e.path) for e in it if _is_image_name(e.name) and _not_dir(e))
    return sorted(found, key=_natural_key)


def _not_dir(entry: os.DirEntry[str]) -> bool:
    """Whether a folder entry is listed: anything but a folder. Broken links and link
    loops are listed too, so that reading them reports the problem (they are not
    skipped silently)."""
    try:
        return not entry.is_dir()
    except OSError:
        return True


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS

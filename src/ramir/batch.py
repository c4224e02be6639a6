"""Batch restoration of image files: inputs expanded from files, folders and globs,
output paths planned (never over an input, no collisions), each image read, restored and
written back in its own format, mode and bit depth; a bad file is reported and skipped.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ramir.restore import Ensemble, ensemble_passes, restore

__all__ = [
    "AUTO_TILE",
    "AUTO_TILE_PIXELS",
    "RestoreJob",
    "RestoreReport",
    "check_writable",
    "collect_inputs",
    "plan_outputs",
    "restore_files",
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


@dataclasses.dataclass
class RestoreReport:
    """What :func:`restore_files` did: files written and inputs that failed (with why)."""

    written: list[RestoreJob] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]], *, recursive: bool = False
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Expand files, folders and glob patterns into ``(file, relative output name)`` pairs.

    Folders contribute their images (see :func:`ramir.data.io.list_images`; with
    ``recursive`` their sub-folders too, keeping the relative layout); an existing file is
    taken as it is, whatever its suffix; anything else is read as a glob pattern
    (``**`` allowed). Files are de-duplicated.

    Returns:
        ``(found, problems)``: found files with the relative path their result gets, and
        ``(input, reason)`` for inputs that matched nothing.
    """
    from ramir.data.io import list_images

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
    from ramir.data.io import IMAGE_EXTENSIONS

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


def restore_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "",
    recursive: bool = False,
    tile: int | Literal["auto"] | None = "auto",
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool = True,
    ensemble: Ensemble = "none",
    global_context: bool = True,
    max_pixels: int | None = None,
) -> RestoreReport:
    """Restore image files, folders and glob matches into ``out_dir``.

    Each result keeps its input's size, colour mode (gray stays gray), alpha channel,
    bit depth (16-bit stays 16-bit), colour profile and file format; what reading had to
    change (a CMYK input made RGB, the frames of an animation after the first dropped, an
    unusable colour profile) is in the written job's ``note``. Unreadable inputs are
    skipped and listed in the report; the others are still restored. Inputs are never
    overwritten.

    Args:
        model: the restoration model (see :func:`restore`).
        inputs: files, folders and glob patterns.
        out_dir: output folder (created).
        suffix: added to each output's stem (``photo.jpg`` -> ``photo_restored.jpg``).
        recursive: walk sub-folders of folder inputs (the layout is kept).
        tile: tile size; ``"auto"`` tiles with :data:`AUTO_TILE` images larger than
            :data:`AUTO_TILE_PIXELS`; ``None`` or 0 never tiles.
        tile_overlap, device, half, ensemble, global_context: see :func:`restore`.
        progress: tqdm bar over files (and over tiles for a single large image).
        max_pixels: images declaring more pixels are refused before decoding (``None``:
            :data:`ramir.data.io.DEFAULT_MAX_PIXELS`). An image that runs out of memory
            is reported like an unreadable one and the batch goes on.

    Raises:
        ValueError: an output path would overwrite an input, or two collide.
    """
    from ramir.data.io import DEFAULT_MAX_PIXELS, ImageReadError, read_image, write_image

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels

    ensemble_passes(ensemble)  # a bad name fails before any file is read
    found, problems = collect_inputs(inputs, recursive=recursive)
    jobs = plan_outputs(found, out_dir, suffix)
    if jobs:
        check_writable(out_dir)
    report = RestoreReport(failed=list(problems))
    bar = None
    if progress and len(jobs) > 1:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="restoring", unit="img")
    try:
        for job in jobs:
            try:
                image = read_image(job.src, max_pixels=limit)
            except (ImageReadError, OSError) as e:
                report.failed.append((str(job.src), str(e)))
            except MemoryError:
                report.failed.append((str(job.src), "out of memory while decoding it"))
            else:
                h, w = image.size
                this_tile = tile
                if tile == "auto":
                    this_tile = AUTO_TILE if h * w > AUTO_TILE_PIXELS else None
                try:
                    result = restore(
                        model,
                        image,
                        tile=this_tile or None,
                        tile_overlap=tile_overlap,
                        device=device,
                        half=half,
                        progress=progress and bar is None,
                        ensemble=ensemble,
                        global_context=global_context,
                    )
                except (ValueError, RuntimeError) as e:  # too small for the model, OOM...
                    report.failed.append((str(job.src), f"cannot restore: {e}"))
                except MemoryError:
                    report.failed.append(
                        (str(job.src), "cannot restore: out of memory (try --tile 512)")
                    )
                else:
                    try:
                        write_image(job.dst, result.rgb, like=result)
                    except (OSError, ValueError) as e:
                        report.failed.append((str(job.src), f"cannot write {job.dst}: {e}"))
                    else:  # what reading changed (CMYK made RGB, frames dropped...)
                        notes = [n for n in (job.note, *result.notes) if n]
                        report.written.append(dataclasses.replace(job, note="; ".join(notes)))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return report

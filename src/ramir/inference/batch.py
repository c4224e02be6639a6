"""Batch restoration of image files: inputs expanded from files, folders and globs,
output paths planned (never over an input, no collisions), each image read, restored and
written back in its own format, mode and bit depth; a bad file is reported and skipped.

At scale (:func:`restore_files` with ``dist``, i.e. ``torchrun ... -m ramir restore``):
rank 0 plans the outputs, every rank restores its share of the images (balanced by
pixels, :mod:`ramir.inference.sharding`) and writes them, and the outcomes are gathered so that
every rank returns the report one process would. Outputs are written atomically;
``skip_existing`` resumes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ramir.inference.restore import (
    Ensemble,
    check_dino,
    ensemble_passes,
    restore,
    restore_tensor,
)
from ramir.inference.sharding import Writer, balance, group_same_size, prefetch
from ramir.inference.tiling import MAX_AUTO_BATCH, BatchSize, check_batch_size

if TYPE_CHECKING:
    from ramir.data.io import LoadedImage
    from ramir.distributed import DistInfo

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
    """What :func:`restore_files` did: files written, inputs that failed (with why), and
    outputs that were there already (``skip_existing``)."""

    written: list[RestoreJob] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    skipped: list[RestoreJob] = dataclasses.field(default_factory=list)

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


def _whole(size: tuple[int, int] | None, tile: int | Literal["auto"] | None) -> int | None:
    """The tile :func:`restore_files` uses for an image of ``size`` (``None``: whole)."""
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
    from ramir.inference.tiling import CONTEXT_PIXELS, count_tiles

    n = count_tiles(h, w, tile, min(overlap, tile - 1))
    return float(n * min(tile, h) * min(tile, w) + min(h * w, CONTEXT_PIXELS))


@dataclasses.dataclass
class _Plan:
    """What rank 0 plans and every rank follows (picklable)."""

    jobs: list[RestoreJob]
    problems: list[tuple[str, str]]
    sizes: list[tuple[int, int] | None]
    units: list[list[int]]
    costs: list[float]


def _make_plan(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: Path,
    suffix: str,
    recursive: bool,
    tile: int | Literal["auto"] | None,
    tile_overlap: int,
    cap: int,
    max_pixels: int,
) -> _Plan:
    from ramir.data.io import ImageReadError, image_size

    found, problems = collect_inputs(inputs, recursive=recursive)
    jobs = plan_outputs(found, out_dir, suffix)
    sizes: list[tuple[int, int] | None] = []
    for job in jobs:
        try:
            size = image_size(job.src)
        except (ImageReadError, OSError):
            size = None  # reported when it is read
        if size is not None and size[0] * size[1] > max_pixels:
            size = None  # refused when it is read: it costs nothing
        sizes.append(size)
    tiles = [_whole(size, tile) for size in sizes]
    whole = [
        t is None or (s is not None and max(s) <= t) for s, t in zip(sizes, tiles, strict=True)
    ]
    # a tile as large as the image is the whole image (tiled_apply's single tile)
    units = group_same_size(sizes, whole, cap)
    costs = [sum(_cost(sizes[j], tiles[j], tile_overlap) for j in unit) for unit in units]
    return _Plan(jobs, problems, sizes, units, costs)


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
    batch_size: BatchSize = "auto",
    skip_existing: bool = False,
    overlap_io: bool | None = None,
    dist: DistInfo | None = None,
) -> RestoreReport:
    """Restore image files, folders and glob matches into ``out_dir``.

    Each result keeps its input's size, colour mode (gray stays gray), alpha channel,
    bit depth (16-bit stays 16-bit), colour profile and file format; what reading had to
    change (a CMYK input made RGB, the frames of an animation after the first dropped, an
    unusable colour profile) is in the written job's ``note``. Unreadable inputs are
    skipped and listed in the report; the others are still restored. Inputs are never
    overwritten. Every output is written under a temporary name and renamed when
    complete, so an interrupted run never leaves a file that looks whole.

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
        batch_size: tiles of one image, or whole images of one size, per network call
            (see :func:`ramir.inference.tiling.apply_in_batches`); ``"auto"``: measured from GPU
            memory, 1 on a CPU. Results equal one at a time to float rounding; the
            groups of images depend only on the inputs, so a run split over ranks
            computes the same as one process with the same ``batch_size``.
        skip_existing: leave outputs that already exist alone and restore only the
            others (resuming an interrupted run); they are listed in ``skipped``.
        overlap_io: decode the next images in a reader thread and encode results in a
            writer thread while the network runs (default: on CUDA only).
        dist: this process's place in a ``torchrun`` job
            (:func:`ramir.distributed.init_distributed`): rank 0 plans, every rank
            restores its share of the images (balanced by pixels) and writes its
            outputs, and every rank returns the whole run's report. ``None``: one
            process.

    Raises:
        ValueError: an output path would overwrite an input, or two collide.
        DistributedError: another process of the run stopped.
    """
    from ramir.data.io import DEFAULT_MAX_PIXELS, remove_stale_temp_files
    from ramir.distributed import SINGLE, agree, all_gather_objects, broadcast_object

    info = dist or SINGLE
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    ensemble_passes(ensemble)  # a bad name fails before any file is read
    check_dino(model)  # so does a RAM++ RestormerRFR without its DINOv2
    batch_size = check_batch_size(batch_size, "batch_size")
    if device is not None:
        dev = torch.device(device)
    else:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    if batch_size == "auto":
        cap = MAX_AUTO_BATCH if dev.type == "cuda" else 1
    else:
        cap = batch_size
    if overlap_io is None:
        overlap_io = dev.type == "cuda"

    # 1. rank 0 plans (files, outputs, sizes, groups); every rank follows that plan
    planned: _Plan | BaseException | None = None
    if info.is_main:
        try:
            planned = _make_plan(
                inputs, Path(out_dir), suffix, recursive, tile, tile_overlap, cap, limit
            )
        except Exception as e:  # noqa: BLE001 - raised on every rank below
            planned = e
    planned = broadcast_object(planned, info)
    if isinstance(planned, BaseException):
        raise planned
    assert planned is not None
    plan = planned
    jobs = plan.jobs
    if jobs:
        agree(lambda: check_writable(out_dir), info)

    # 2. what is there already (each rank looks: the folder may be per machine)
    existing: set[int] = set()
    if skip_existing:
        seen = [j for j, job in enumerate(jobs) if job.dst.is_file()]
        existing = set().union(*map(set, all_gather_objects(seen, info)))
    todo = [k for k, unit in enumerate(plan.units) if any(j not in existing for j in unit)]
    shares = balance([plan.costs[k] for k in todo], info.world_size)
    mine = [todo[i] for i in shares[info.rank]]
    # what an interrupted run left: each rank cleans the outputs it writes, rank 0 those
    # that nobody writes (they exist), so no rank deletes another's file in progress
    for k in mine:
        for j in plan.units[k]:
            if j not in existing:
                remove_stale_temp_files(jobs[j].dst)
    if info.is_main:
        for j in sorted(existing):
            remove_stale_temp_files(jobs[j].dst)

    # 3. restore this rank's groups
    outcomes: dict[int, tuple[str, str]] = {}  # job -> ("written" | "failed", note/reason)
    my_jobs = sum(len([j for j in plan.units[k] if j not in existing]) for k in mine)
    bar = None
    if progress and info.is_main and (my_jobs > 1 or info.distributed):
        from tqdm import tqdm

        desc = "restoring" if not info.distributed else f"restoring (rank 0 of {info.world_size})"
        bar = tqdm(total=my_jobs, desc=desc, unit="img")
    tile_bar = progress and bar is None and info.is_main

    def read(k: int) -> list[Any]:
        return [_read(jobs[j].src, limit) for j in plan.units[k]]

    writer: Writer[None] = Writer(threaded=overlap_io)
    pending: list[tuple[int, Any]] = []

    def written(j: int, result: LoadedImage) -> None:
        job = jobs[j]
        notes = [n for n in (job.note, *result.notes) if n]
        outcomes[j] = ("written", "; ".join(notes))

    def write(j: int, result: LoadedImage) -> None:
        from ramir.data.io import write_image

        try:
            write_image(jobs[j].dst, result.rgb, like=result)
        except (OSError, ValueError) as e:
            outcomes[j] = ("failed", f"cannot write {jobs[j].dst}: {e}")
        else:
            written(j, result)

    ok = False
    try:
        for k, images, error in prefetch(read, mine, ahead=1 if overlap_io else 0):
            unit = plan.units[k]
            assert images is not None, error  # _read catches what reading raises
            loaded: dict[int, LoadedImage] = {}
            for j, image in zip(unit, images, strict=True):
                if isinstance(image, str):
                    outcomes[j] = ("failed", image)
                else:
                    loaded[j] = image
            for j, result in _restore_group(
                model,
                loaded,
                plan.sizes,
                tile=tile,
                tile_overlap=tile_overlap,
                device=device,
                half=half,
                progress=tile_bar,
                ensemble=ensemble,
                global_context=global_context,
                batch_size=batch_size,
            ):
                if j in existing:
                    continue  # restored with its group only; the file is there already
                if isinstance(result, str):
                    outcomes[j] = ("failed", result)
                else:
                    pending.append((j, writer.submit(write, j, result)))
            if bar is not None:
                bar.update(len([j for j in unit if j not in existing]))
        ok = True
    finally:
        writer.close(cancel=not ok)
        if bar is not None:
            bar.close()
    for _, future in pending:
        future.result()  # write() records its own failures; anything else is a bug

    # 4. every rank gets every outcome; the report follows the order of the inputs
    merged: dict[int, tuple[str, str]] = {}
    for part in all_gather_objects(outcomes, info):
        merged.update(part)
    report = RestoreReport(failed=list(plan.problems))
    for j, job in enumerate(jobs):
        if j in existing:
            report.skipped.append(job)
            continue
        kind, text = merged[j]
        if kind == "written":
            report.written.append(dataclasses.replace(job, note=text))
        else:
            report.failed.append((str(job.src), text))
    return report


def _read(path: Path, limit: int) -> LoadedImage | str:
    """The decoded image, or why it cannot be read (a message for the report)."""
    from ramir.data.io import ImageReadError, read_image

    try:
        return read_image(path, max_pixels=limit)
    except (ImageReadError, OSError) as e:
        return str(e)
    except MemoryError:
        return "out of memory while decoding it"


def _restore_group(
    model: nn.Module,
    loaded: dict[int, LoadedImage],
    sizes: list[tuple[int, int] | None],
    *,
    tile: int | Literal["auto"] | None,
    batch_size: BatchSize,
    progress: bool,
    **kwargs: Any,
) -> Iterator[tuple[int, LoadedImage | str]]:
    """Restore the decoded images of one group: those of the same size at once (EXIF
    orientation can make a planned size wrong), the others one by one; a failed batch is
    retried image by image so that only the bad image fails."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for j, image in loaded.items():
        by_shape.setdefault(tuple(image.rgb.shape), []).append(j)
    for members in by_shape.values():
        h, w = loaded[members[0]].size
        this_tile = _whole((h, w), tile)
        if this_tile is not None and h <= this_tile and w <= this_tile:
            this_tile = None  # one tile is the whole image
        if len(members) > 1:
            x = torch.stack([loaded[j].rgb for j in members])
            try:
                out = restore_tensor(
                    model, x, tile=this_tile, batch_size=batch_size, progress=False, **kwargs
                )
            except (ValueError, RuntimeError, MemoryError):
                pass  # one by one below: the error is reported for the image it concerns
            else:
                for i, j in enumerate(members):
                    yield j, dataclasses.replace(loaded[j], rgb=out[i])
                continue
        for j in members:
            yield (
                j,
                _restore_one(
                    model, loaded[j], this_tile, batch_size, progress and len(loaded) == 1, kwargs
                ),
            )


def _restore_one(
    model: nn.Module,
    image: LoadedImage,
    tile: int | None,
    batch_size: BatchSize,
    progress: bool,
    kwargs: dict[str, Any],
) -> LoadedImage | str:
    try:
        return restore(model, image, tile=tile, batch_size=batch_size, progress=progress, **kwargs)
    except (ValueError, RuntimeError) as e:  # too small for the model, OOM...
        return f"cannot restore: {e}"
    except MemoryError:
        return "cannot restore: out of memory (try --tile 512)"

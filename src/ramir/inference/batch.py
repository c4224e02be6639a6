"""Batch restoration of image files: the files planned (:mod:`ramir.inference.plan`),
each image read, restored and written back in its own format, mode and bit depth; a bad
file is reported and skipped.

At scale (:func:`restore_files` with ``dist``, i.e. ``torchrun ... -m ramir restore``):
rank 0 plans the outputs, every rank restores its share of the images (balanced by
pixels, :mod:`ramir.inference.sharding`) and writes them, and the outcomes are gathered so that
every rank returns the report one process would. Outputs are written atomically;
``skip_existing`` resumes an interrupted run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ramir.inference.batching import MAX_AUTO_BATCH, BatchSize, check_batch_size
from ramir.inference.plan import (
    Plan,
    RestoreJob,
    check_writable,
    make_plan,
    tile_for,
)
from ramir.inference.restore import (
    Ensemble,
    check_dino,
    ensemble_passes,
    restore,
    restore_tensor,
)
from ramir.inference.sharding import Writer, balance, prefetch

if TYPE_CHECKING:
    from ramir.data.read import LoadedImage
    from ramir.distributed import DistInfo

__all__ = ["RestoreReport", "restore_files"]


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
    out_file: str | os.PathLike[str] | None = None,
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
        tile: tile size; ``"auto"`` tiles with :data:`~ramir.inference.plan.AUTO_TILE`
            images larger than :data:`~ramir.inference.plan.AUTO_TILE_PIXELS`; ``None`` or
            0 never tiles.
        tile_overlap, device, half, ensemble, global_context: see :func:`restore`.
        progress: tqdm bar over files (and over tiles for a single large image).
        max_pixels: images declaring more pixels are refused before decoding (``None``:
            :data:`ramir.data.read.DEFAULT_MAX_PIXELS`). An image that runs out of memory
            is reported like an unreadable one and the batch goes on.
        batch_size: tiles of one image, or whole images of one size, per network call
            (see :func:`ramir.inference.batching.apply_in_batches`); ``"auto"``: measured from GPU
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
        out_file: with exactly one input image, write its result to this file (its
            suffix sets the format; ``out_dir`` and ``suffix`` are then not used).

    Raises:
        ValueError: an output path would overwrite an input, or two collide.
        DistributedError: another process of the run stopped.
    """
    from ramir.data.read import DEFAULT_MAX_PIXELS
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
    planned: Plan | BaseException | None = None
    if info.is_main:
        try:
            planned = make_plan(
                inputs,
                Path(out_dir),
                suffix,
                recursive,
                tile,
                tile_overlap,
                cap,
                limit,
                out_file=None if out_file is None else Path(out_file),
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
        folder = jobs[0].dst.parent if out_file is not None else out_dir
        agree(lambda: check_writable(folder), info)

    # 2. what is there already, and this rank's share of the rest
    existing, mine = _share(plan, skip_existing, info)

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
        from ramir.data.write import write_image

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
    return _report(plan, existing, merged)


def _share(plan: Plan, skip_existing: bool, info: DistInfo) -> tuple[set[int], list[int]]:
    """``(existing, mine)``: the jobs whose output is there already (``skip_existing``;
    each rank looks, the folder may be per machine) and this rank's groups of the rest,
    balanced by cost; the temporary files an interrupted run left are deleted."""
    from ramir.data.write import remove_stale_temp_files
    from ramir.distributed import all_gather_objects

    jobs = plan.jobs
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
    return existing, mine


def _report(plan: Plan, existing: set[int], outcomes: dict[int, tuple[str, str]]) -> RestoreReport:
    """The run's report, in the order of the inputs, from every job's outcome
    (``("written", note)`` or ``("failed", reason)``)."""
    report = RestoreReport(failed=list(plan.problems))
    for j, job in enumerate(plan.jobs):
        if j in existing:
            report.skipped.append(job)
            continue
        kind, text = outcomes[j]
        if kind == "written":
            report.written.append(dataclasses.replace(job, note=text))
        else:
            report.failed.append((str(job.src), text))
    return report


def _read(path: Path, limit: int) -> LoadedImage | str:
    """The decoded image, or why it cannot be read (a message for the report)."""
    from ramir.data.read import ImageReadError, read_image

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
        this_tile = tile_for((h, w), tile)
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

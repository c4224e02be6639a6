"""``ramir restore INPUT... [-o OUTDIR]``: restore image files, folders and glob matches.

Without ``-o`` the results go to ``./restored/`` (so ``ramir restore photo.jpg`` writes
``restored/photo.jpg`` with the shipped default model). Under ``torchrun`` (``torchrun
--nproc-per-node N -m ramir restore ...``) the images are shared among the processes,
one device each; rank 0 prints the report.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from ramir.commands._common import (
    add_common,
    add_out_argument,
    check_tile_options,
    model_load_kwargs,
    model_path,
)
from ramir.options import DEFAULT_MAX_PIXELS, ENSEMBLES


def _tile(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixels or 'auto', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError("tile must be >= 0 (0 = whole image)")
    return value


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (or 'auto'), got {value}")
    return value


@contextlib.contextmanager
def _resume_hint(hint: str, kind: type[Exception]) -> Iterator[None]:
    """Add ``hint`` to the message of a ``kind`` error raised inside."""
    try:
        yield
    except kind as e:
        raise kind(f"{e}; {hint}") from e


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore",
        help="restore images with a model",
        description="Restore image files, folders and glob patterns into OUTDIR (default: "
        "./restored), or one image into the file -o NAME.png. Results keep "
        "their input's size, format, gray/RGB mode, alpha channel and bit depth. Unreadable "
        "files are reported and skipped (exit status 1); inputs are never overwritten.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    add_out_argument(
        p,
        "output folder, created if needed (default: ./restored); with one input image, "
        "a file name with an image suffix (e.g. -o photo_restored.png) writes that file",
        metavar="OUTDIR",
        default=Path("restored"),
        legacy_output=True,
    )
    add_common(p, model=True, dino=True)
    p.add_argument(
        "--tile",
        type=_tile,
        default="auto",
        metavar="N",
        help="restore in N x N tiles to bound memory; 0 = whole image; "
        "'auto' (default) tiles images over 1 megapixel with 512",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        default=32,
        metavar="N",
        help="pixels neighbouring tiles share, blended smoothly; smaller than --tile and at "
        "most 3/4 of it (default 32)",
    )
    p.add_argument(
        "--no-global-context",
        dest="global_context",
        action="store_false",
        help="tiles: let each tile's own statistics drive the model's global pooling instead "
        "of the whole image's (the default; a tile of shadows alone can look like a "
        "low-light photo)",
    )
    p.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    p.add_argument(
        "--ensemble",
        choices=tuple(ENSEMBLES),
        default="none",
        help="test-time self-ensemble: average the outputs for the mirrored image (flip, "
        "2x the time) or all 8 flips and rotations (x8, 8x the time); default none",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="refuse images declaring more than N pixels (width x height), before decoding "
        f"them (default {DEFAULT_MAX_PIXELS:,})",
    )
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default="auto",
        metavar="N",
        help="tiles of an image (or whole images of one size) per network call; 'auto' "
        "(default) = from the GPU's free memory, 1 on a CPU (where batches are no faster); "
        "results equal one at a time to float rounding",
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep outputs that already exist and restore only the others: resumes an "
        "interrupted run (outputs are written under a temporary name, then renamed, so an "
        "existing output is complete)",
    )
    p.add_argument("--suffix", default="", help="added to output file stems, e.g. _restored")
    p.add_argument("-r", "--recursive", action="store_true", help="walk sub-folders of folders")
    p.set_defaults(func=run)


def _output_file(args: argparse.Namespace) -> Path | None:
    """``-o`` as an output file: one input file and a name with an image suffix that is
    not an existing folder (``None``: ``-o`` is the output folder)."""
    from ramir.data.listing import IMAGE_EXTENSIONS
    from ramir.errors import UsageError

    out: Path = args.out
    if out.is_dir() or out.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    if len(args.inputs) != 1 or not Path(args.inputs[0]).is_file():
        raise UsageError(
            f"-o {out.name} names a file, which takes exactly one input image; for several "
            "images give -o a folder"
        )
    if args.suffix:
        raise UsageError("--suffix applies to an output folder, not to the file -o names")
    return out


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoint import load_model
    from ramir.distributed import (
        INFERENCE_TIMEOUT_S,
        DistributedError,
        cleanup_distributed,
        init_distributed,
        sigterm_raises,
    )
    from ramir.errors import UsageError
    from ramir.inference.batch import restore_files

    check_tile_options(args.tile, args.tile_overlap)
    out_file = _output_file(args)
    info = init_distributed(args.device, INFERENCE_TIMEOUT_S, backend="gloo")
    try:
        device = str(info.device)
        if args.half and not device.startswith("cuda"):
            raise UsageError("--half needs a CUDA device (--device cuda)")
        where = f" on rank {info.rank} of {info.world_size}" if info.distributed else ""
        resume = (
            "the images written so far are complete (each is written under a temporary "
            "name, then renamed): rerun the same command with --skip-existing to restore "
            "only the others"
        )
        with (
            _resume_hint(resume, DistributedError),
            sigterm_raises(
                f"stopped by SIGTERM{where} (torchrun stops every process of a run when one "
                f"fails, or the run was interrupted); {resume}"
            ),
        ):
            model = load_model(
                model_path(args.model),
                arch=args.arch,
                map_location=device,
                **model_load_kwargs(args),
            )
            report = restore_files(
                model,
                args.inputs,
                args.out,
                suffix=args.suffix,
                recursive=args.recursive,
                tile=args.tile,
                tile_overlap=args.tile_overlap,
                device=device,
                half=args.half,
                progress=not args.quiet,
                ensemble=args.ensemble,
                global_context=args.global_context,
                max_pixels=args.max_pixels,
                batch_size=args.batch_size,
                skip_existing=args.skip_existing,
                dist=info,
                out_file=out_file,
            )
    finally:
        cleanup_distributed()
    if info.is_main:
        for job in report.written:
            if job.note:
                print(f"note: {job.src}: {job.note}", file=sys.stderr)
        for src, reason in report.failed:
            print(f"skipped {src}: {reason}", file=sys.stderr)
        total = len(report.written) + len(report.failed)
        kept = f" ({len(report.skipped)} already there, kept)" if report.skipped else ""
        print(f"restored {len(report.written)} of {total} image(s) into {args.out}{kept}")
    # Every rank exits with the same status (each has the whole report): on several
    # machines, a torchrun agent whose processes succeeded waits minutes at its exit
    # barrier for an agent whose processes failed.
    return 0 if report.ok else 1

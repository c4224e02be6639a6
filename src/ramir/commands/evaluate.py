"""``ramir evaluate -c CONFIG``: checkpoints x test sets -> PSNR/SSIM tables.

Under ``torchrun`` (``torchrun --nproc-per-node N -m ramir evaluate -c CONFIG``) the
images are shared among the processes, one device each; rank 0 writes the tables and
prints them.
"""

from __future__ import annotations

import argparse

from ramir.commands._common import add_common, add_out_argument, device_override


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="benchmark checkpoints on test sets",
        description="Restore every test set of CONFIG with every model and write a table "
        "per metric convention (rows = models, columns = test sets, PSNR/SSIM and their "
        "average, seconds per image) as Markdown, CSV and JSON, with per-image results, "
        "optionally the restored images, and the paper's published rows beside ours. A row "
        "can be a classical restorer instead of a checkpoint ({name, classical: bm3d | "
        "bm3d_est | nlm | wavelet | tv | unsharp | wiener, settings: tuned}; BM3D, NLM and "
        "wavelet need pip install 'ramir[classical]', else their rows are skipped with a "
        "note). Resumable: images already measured in the run folder are not recomputed. "
        "Recipes: configs/eval/*.yaml (photos_test_classical.yaml: the default model beside "
        "every classical baseline).",
    )
    add_common(
        p,
        config="evaluation YAML, e.g. configs/eval/synthetic7.yaml",
        overrides="max_images=5 data.root_dir=/datasets",
        device="device",
    )
    add_out_argument(
        p,
        "folder of the run folders (overrides output_dir; default: the config's, runs/eval "
        "unless it says otherwise)",
    )
    p.add_argument("--restart", action="store_true", help="recompute cached per-image results")
    p.add_argument(
        "--batch-size",
        default=None,
        metavar="N",
        help="tiles of an image (or whole images of one size) per network call (overrides "
        "batch_size; default: the config's, auto = from the GPU's free memory, 1 on a CPU)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.distributed import (
        INFERENCE_TIMEOUT_S,
        DistributedError,
        cleanup_distributed,
        init_distributed,
        sigterm_raises,
    )
    from ramir.evaluation.config import load_eval_config
    from ramir.evaluation.runner import evaluate

    overrides = list(args.overrides) + device_override(args, "device")
    if args.out is not None:
        overrides.append(f"output_dir={args.out}")
    if args.batch_size is not None:
        overrides.append(f"batch_size={args.batch_size}")
    cfg = load_eval_config(args.config, overrides)
    info = init_distributed(cfg.device, INFERENCE_TIMEOUT_S, backend="gloo")
    resume = (
        f"the images measured so far are kept in {cfg.run_dir() / 'per_image'}: rerun the "
        "same command to measure only the others"
    )
    where = f" on rank {info.rank} of {info.world_size}" if info.distributed else ""
    try:
        with sigterm_raises(
            f"stopped by SIGTERM{where} (torchrun stops every process of a run when one "
            f"fails, or the run was interrupted); {resume}"
        ):
            try:
                result = evaluate(cfg, progress=not args.quiet, restart=args.restart, dist=info)
            except DistributedError as e:
                raise DistributedError(f"{e}; {resume}") from e
    finally:
        cleanup_distributed()
    if not info.is_main:
        return 0
    print(result.paths["markdown"].read_text(encoding="utf-8"))
    if "sets_markdown" in result.paths:
        print(result.paths["sets_markdown"].read_text(encoding="utf-8"))
    print(
        f"{result.computed} image(s) restored, {result.reused} taken from earlier runs; "
        f"wrote {result.paths['markdown']}, {result.paths['csv'].name}, "
        f"{result.paths['json'].name} and {result.paths['per_image'].name} in {result.run_dir}"
    )
    return 0

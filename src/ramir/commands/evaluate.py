"""``ramir evaluate -c CONFIG``: checkpoints x test sets -> PSNR/SSIM tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from ramir.commands import add_overrides_argument, add_threads_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="benchmark checkpoints on test sets",
        description="Restore every test set of CONFIG with every model and write a table "
        "per metric convention (rows = models, columns = test sets, PSNR/SSIM and their "
        "average) as Markdown, CSV and JSON, with per-image results, optionally the restored "
        "images, and the paper's published rows beside ours. Resumable: images already "
        "measured in the run folder are not recomputed. Recipes: configs/eval/*.yaml.",
    )
    p.add_argument("-c", "--config", type=Path, required=True, help="evaluation YAML")
    add_overrides_argument(p, "device=cpu max_images=5 data.root_dir=/datasets")
    p.add_argument("--restart", action="store_true", help="recompute cached per-image results")
    add_threads_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.evaluation.config import load_eval_config
    from ramir.evaluation.runner import evaluate

    cfg = load_eval_config(args.config, args.overrides)
    result = evaluate(cfg, progress=not args.quiet, restart=args.restart)
    print(result.paths["markdown"].read_text(encoding="utf-8"))
    if "sets_markdown" in result.paths:
        print(result.paths["sets_markdown"].read_text(encoding="utf-8"))
    print(
        f"{result.computed} image(s) restored, {result.reused} taken from earlier runs; "
        f"wrote {result.paths['markdown']}, {result.paths['csv'].name}, "
        f"{result.paths['json'].name} and {result.paths['per_image'].name} in {result.run_dir}"
    )
    return 0

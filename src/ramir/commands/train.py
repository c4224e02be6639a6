"""``ramir train -c CONFIG``: plain paired training on whole images (the baseline).

The shared command-line plumbing of ``ramir pretrain``, ``ramir train`` and ``ramir
finetune`` lives here: ``-c CONFIG``, ``--set KEY=VALUE``, ``--out DIR``, ``--resume`` /
``--no-resume``, ``--device`` and ``-q``. Launch any of them on several GPUs with
``torchrun --nproc_per_node N -m ramir COMMAND ...``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ramir.commands import add_overrides_argument, add_threads_argument

if TYPE_CHECKING:
    from ramir.training.config import TrainingConfig
    from ramir.training.loop import TrainResult

STAGE_INPUTS = {
    "pretrain": ("masked", "masked_gt"),
    "train": ("whole",),
    "finetune": ("whole",),
}


def add_training_arguments(p: argparse.ArgumentParser, example: str) -> None:
    """The arguments every training command takes."""
    p.add_argument(
        "-c", "--config", type=Path, required=True, help=f"training config, e.g. {example}"
    )
    add_overrides_argument(p, "train.total_iter=200 train.batch_size=4")
    p.add_argument(
        "--out",
        type=Path,
        help="run folder for checkpoints, logs and final weights (default: runs/<config name>)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="resume from the newest checkpoint in --out (or from CHECKPOINT); by default a "
        "run resumes when --out already holds a checkpoint",
    )
    g.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start a new run; refuse if --out already holds checkpoints",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where to train (overrides train.device; auto = CUDA when available)",
    )
    add_threads_argument(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def prepare(
    args: argparse.Namespace, stage: str, schema: type[TrainingConfig] | None = None
) -> tuple[TrainingConfig, Path]:
    """Load the config with the command-line overrides; check it suits ``stage``.

    ``schema`` is the config class (default :class:`~ramir.training.config.TrainingConfig`).
    """
    from ramir.training.config import TrainingConfig, load_training_config

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.quiet:
        overrides.append("logging.progress=false")
    cfg = load_training_config(args.config, overrides, schema=schema or TrainingConfig)
    allowed = STAGE_INPUTS[stage]
    if cfg.train.input not in allowed:
        other = "pretrain" if stage != "pretrain" else "train"
        raise ValueError(
            f"`ramir {stage}` needs train.input {' or '.join(allowed)}, but {args.config} sets "
            f"{cfg.train.input!r}; use `ramir {other}` or --set train.input={allowed[0]}"
        )
    out = args.out if args.out is not None else Path("runs") / args.config.stem
    return cfg, out


def report(result: TrainResult) -> int:
    """Print the outcome (main process only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        ema = " and model_ema.safetensors" if result.ema_model is not None else ""
        loss = f", last loss {result.loss:.4g}" if result.loss is not None else ""
        print(
            f"{result.iteration} iterations{loss}; weights: {result.out_dir / 'model.safetensors'}"
            f"{ema}; log: {result.out_dir / 'log.jsonl'}"
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="paired training on whole images (the baseline)",
        description="Train a backbone on whole degraded images with an L1 loss (no masking): "
        "the baseline every comparison needs. Writes checkpoints, log.jsonl, TensorBoard "
        "events, training_curve.png and the final weights into --out; resumes when --out "
        "holds a checkpoint.",
    )
    add_training_arguments(p, "configs/cpu/train.yaml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.training.loop import train

    cfg, out = prepare(args, "train")
    return report(train(cfg, out, resume=args.resume))

"""What ``ramir pretrain``, ``ramir train`` and ``ramir finetune`` share.

Their parsers are built by one function, :func:`register_training_command`: ``-c/--config``,
``--set KEY=VALUE``, ``-o/--out DIR``, ``--resume`` / ``--no-resume``, ``--device``,
``--threads`` and ``-q/--quiet``. Launch any of them on several GPUs with
``torchrun --nproc_per_node N -m ramir COMMAND ...``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ramir.commands._common import add_common, add_out_argument, device_override

if TYPE_CHECKING:
    from ramir.training.config import TrainingConfig
    from ramir.training.loop import TrainResult

STAGE_INPUTS = {
    "pretrain": ("masked", "masked_gt", "adaptive"),
    "train": ("whole",),
    "finetune": ("whole",),
}


def register_training_command(
    sub: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    *,
    help: str,
    description: str,
) -> argparse.ArgumentParser:
    """Add the parser of training command ``name`` (its example config is
    ``configs/cpu/<name>.yaml``) with the arguments every training command takes."""
    p = sub.add_parser(name, help=help, description=description)
    add_training_arguments(p, f"configs/cpu/{name}.yaml")
    p.set_defaults(func=run)
    return p


def add_training_arguments(p: argparse.ArgumentParser, example: str) -> None:
    """The arguments every training command takes."""
    add_common(
        p,
        config=f"training config, e.g. {example}",
        overrides="train.total_iter=200 train.batch_size=4",
        device="train.device",
    )
    add_out_argument(
        p, "run folder for checkpoints, logs and final weights (default: runs/<config name>)"
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


def prepare(
    args: argparse.Namespace, stage: str, schema: type[TrainingConfig] | None = None
) -> tuple[TrainingConfig, Path]:
    """Load the config with the command-line overrides; check it suits ``stage``.

    ``schema`` is the config class (default :class:`~ramir.training.config.TrainingConfig`).
    """
    from ramir.errors import UsageError
    from ramir.training.config import TrainingConfig, load_training_config

    overrides = list(args.overrides) + device_override(args, "train.device")
    if args.quiet:
        overrides.append("logging.progress=false")
    cfg = load_training_config(args.config, overrides, schema=schema or TrainingConfig)
    allowed = STAGE_INPUTS[stage]
    if cfg.train.input not in allowed:
        other = "pretrain" if stage != "pretrain" else "train"
        raise UsageError(
            f"`ramir {stage}` needs train.input {' or '.join(allowed)}, but {args.config} sets "
            f"{cfg.train.input!r}; use `ramir {other}` or --set train.input={allowed[0]}"
        )
    out = args.out if args.out is not None else Path("runs") / args.config.stem
    return cfg, out


def is_main_process() -> bool:
    """Whether this is the process that prints (rank 0 under torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def report(result: TrainResult) -> int:
    """Print the outcome (main process only)."""
    if is_main_process():
        ema = " and model_ema.safetensors" if result.ema_model is not None else ""
        if result.mask_generator is not None:  # RAM++ pretraining: the generator too
            ema += ", mask_generator.safetensors" + (
                " and mask_generator_ema.safetensors" if result.mask_generator_ema else ""
            )
        loss = f", last loss {result.loss:.4g}" if result.loss is not None else ""
        print(
            f"{result.iteration} iterations{loss}; weights: {result.out_dir / 'model.safetensors'}"
            f"{ema}; log: {result.out_dir / 'log.jsonl'}"
        )
    return 0

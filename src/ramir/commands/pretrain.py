"""``ramir pretrain -c CONFIG``: masked image pretraining (RAM stage 1, docs/method.md#masking)."""

from __future__ import annotations

import argparse

from ramir.commands._training import prepare, register_training_command, report


def register(sub: argparse._SubParsersAction) -> None:
    register_training_command(
        sub,
        "pretrain",
        run,
        help="masked image pretraining (RAM stage 1)",
        description="Pretrain a backbone to restore masked degraded images: half of the "
        "pixels (train.mask) are hidden by the mask token and the L1 loss counts hidden "
        "pixels only. Writes checkpoints, log.jsonl, TensorBoard events, training_curve.png "
        "and the final weights into --out; resumes when --out holds a checkpoint.",
    )


def run(args: argparse.Namespace) -> int:
    from ramir.training.loop import train

    cfg, out = prepare(args, "pretrain")
    return report(train(cfg, out, resume=args.resume))

"""``ramir pretrain -c CONFIG``: masked image pretraining (RAM stage 1, DESIGN §1.1)."""

from __future__ import annotations

import argparse

from ramir.commands.train import add_training_arguments, prepare, report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="masked image pretraining (RAM stage 1)",
        description="Pretrain a backbone to restore masked degraded images: half of the "
        "pixels (train.mask) are hidden by the mask token and the L1 loss counts hidden "
        "pixels only. Writes checkpoints, log.jsonl, TensorBoard events, training_curve.png "
        "and the final weights into --out; resumes when --out holds a checkpoint.",
    )
    add_training_arguments(p, "configs/cpu/pretrain.yaml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.training.loop import train

    cfg, out = prepare(args, "pretrain")
    return report(train(cfg, out, resume=args.resume))

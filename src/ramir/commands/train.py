"""``ramir train -c CONFIG``: plain paired training on whole images (the baseline).

The arguments it shares with ``ramir pretrain`` and ``ramir finetune`` are built in
:mod:`ramir.commands._training`.
"""

from __future__ import annotations

import argparse

from ramir.commands._training import prepare, register_training_command, report


def register(sub: argparse._SubParsersAction) -> None:
    register_training_command(
        sub,
        "train",
        run,
        help="paired training on whole images (the baseline)",
        description="Train a backbone on whole degraded images with an L1 loss (no masking): "
        "the baseline every comparison needs. Writes checkpoints, log.jsonl, TensorBoard "
        "events, training_curve.png and the final weights into --out; resumes when --out "
        "holds a checkpoint.",
    )


def run(args: argparse.Namespace) -> int:
    from ramir.training.loop import train

    cfg, out = prepare(args, "train")
    return report(train(cfg, out, resume=args.resume))

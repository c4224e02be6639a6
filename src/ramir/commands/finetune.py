"""``ramir finetune -c CONFIG``: fine-tune the MAC-selected layers (RAM stage 2, DESIGN §1.3)."""

from __future__ import annotations

import argparse
import os

from ramir.commands.train import add_training_arguments, prepare, report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune the layers a MAC analysis selects (RAM stage 2)",
        description="Start from pretrained weights (model.init), freeze every layer except "
        "those select: picks (the top select.ratio of a mac.json from `ramir analyze`, or "
        "explicit select.layers; none = all layers) and train on whole images with L1. "
        "Writes the same outputs as `ramir train` into --out.",
    )
    add_training_arguments(p, "configs/cpu/finetune.yaml")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.training.config import FinetuneConfig
    from ramir.training.finetune import layer_selection, selected_layers
    from ramir.training.loop import train

    cfg, out = prepare(args, "finetune", schema=FinetuneConfig)
    assert isinstance(cfg, FinetuneConfig)
    if not cfg.model.init:
        raise ValueError(
            "fine-tuning starts from pretrained weights: set model.init (a run folder of "
            "`ramir pretrain`, or a weights file)"
        )
    layers = selected_layers(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        what = "every layer" if layers is None else f"{len(layers)} layer(s)"
        print(f"fine-tuning {what} from {cfg.model.init}")
    return report(train(cfg, out, trainable=layer_selection(layers), resume=args.resume))

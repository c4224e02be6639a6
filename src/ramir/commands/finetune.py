"""``ramir finetune -c CONFIG``: fine-tune the MAC-selected layers (RAM stage 2).

See docs/method.md#fine-tuning.

The command loads the config and calls :func:`ramir.training.finetune.finetune`, which
selects the layers and trains them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ramir.commands._training import (
    is_main_process,
    prepare,
    register_training_command,
    report,
)

if TYPE_CHECKING:
    from ramir.training.config import FinetuneConfig


def register(sub: argparse._SubParsersAction) -> None:
    register_training_command(
        sub,
        "finetune",
        run,
        help="fine-tune the layers a MAC analysis selects (RAM stage 2)",
        description="Start from pretrained weights (model.init), freeze every layer except "
        "those select: picks (the top select.ratio of a mac.json from `ramir analyze`, or "
        "explicit select.layers; none = all layers) and train on whole images with L1. "
        "RAM++'s restormer_rfr also takes the features of a frozen DINOv2 (model.dino: a "
        "Hugging Face folder). Writes the same outputs as `ramir train` into --out.",
    )


def describe_selection(cfg: FinetuneConfig) -> str:
    """Which layers ``cfg.select`` trains, in words (without reading ``mac.json``)."""
    sel = cfg.select
    if sel.layers:
        return f"{len(sel.layers)} layer(s)"
    if not sel.mac:
        return "every layer"
    share = f"{sel.ratio:g} of the {'parameters' if sel.by == 'params' else 'layers'}"
    return f"the top-ranked {share} in {sel.mac}"


def run(args: argparse.Namespace) -> int:
    from ramir.errors import UsageError
    from ramir.training.config import FinetuneConfig
    from ramir.training.finetune import finetune

    cfg, out = prepare(args, "finetune", schema=FinetuneConfig)
    assert isinstance(cfg, FinetuneConfig)
    if not cfg.model.init:
        raise UsageError(
            "fine-tuning starts from pretrained weights: set model.init (a run folder of "
            "`ramir pretrain`, or a weights file)"
        )
    if is_main_process():
        print(f"fine-tuning {describe_selection(cfg)} from {cfg.model.init}", flush=True)
    result = finetune(cfg, out, resume=args.resume)
    if is_main_process():
        print(f"trained {result.n_trainable:,} of {result.n_params:,} parameters")
    return report(result)

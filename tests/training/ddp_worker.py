"""Run by test_train_distributed.py, alone or under ``torchrun``: a short masked
pretraining of a tiny NAFNet on a toy dataset (or another model, whole inputs, a layer
selection); every rank saves its final weights."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from training_helpers import ToyPairs, make_config  # noqa: E402

from ramir.training import train  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--crash-at", type=int, default=0)
    p.add_argument("--shared", choices=["no", "per_rank", "same"], default="no")
    p.add_argument("--model", default="nafnet_tiny")
    p.add_argument("--args", default="{}", help="the model's arguments, JSON")
    p.add_argument("--input", default="masked", choices=["masked", "whole"])
    p.add_argument("--select", default="", help="comma-separated layers to train (all)")
    p.add_argument("--ckpt-every", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = make_config(
        model={"name": args.model, "args": json.loads(args.args)},
        train={
            "total_iter": args.iters,
            "batch_size": args.batch,
            "input": args.input,
            "mask": {"shared": args.shared != "no", "per_rank": args.shared == "per_rank"},
            "grad_clip": 0.5,
            "dist_timeout_s": 60.0,
        },
        ema={"decay": 0.9},
        checkpoint={"every": args.ckpt_every, "keep_last": 3},
    )

    def crash(iteration: int) -> None:
        if iteration == args.crash_at:
            os._exit(3)  # like a kill: no clean-up, no final checkpoint

    rank = int(os.environ.get("RANK", "0"))
    if args.shared != "no":  # record the masks this rank trains with
        import ramir.training.loop as loop

        real = loop.make_input_maker
        masks: list[torch.Tensor] = []

        def recording(tc, r=0):
            maker = real(tc, r)

            def make(lq, gt, iteration, keys=None):
                inp, target, mask = maker(lq, gt, iteration, keys)
                masks.append(mask.detach().cpu().to(torch.uint8))
                return inp, target, mask

            return make

        loop.make_input_maker = recording
    trainable = None
    if args.select:
        from ramir.training.finetune import layer_selection

        trainable = layer_selection(args.select.split(","))
    result = train(cfg, args.out, dataset=ToyPairs(n=16), on_step=crash, trainable=trainable)
    if args.shared != "no":
        save_file({"masks": torch.stack(masks)}, str(args.out / f"masks{rank}.safetensors"))
    weights = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(weights, str(args.out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()

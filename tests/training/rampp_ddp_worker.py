"""Run by test_rampp_training.py under ``torchrun``: a short RAM++ pretraining of tiny
networks on a toy dataset; every rank saves both networks' final weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from training_helpers import ToyPairs, make_config  # noqa: E402

from ramir.training import train  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    cfg = make_config(
        model={"name": "adasam_restormer_woskip",
               "args": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
                        "heads": [1, 1, 1, 1]}},
        train={"total_iter": 3, "batch_size": 2, "input": "adaptive", "dist_timeout_s": 60.0},
        mask_generator={"args": {"img_size": 16, "patch_size": 4, "embed_dim": 16},
                        "optim": {"lr": 1e-3}},
        checkpoint={"every": 100},
    )  # fmt: skip
    result = train(cfg, out, dataset=ToyPairs(n=8))
    rank = os.environ.get("RANK", "0")
    weights = {f"net.{k}": v.detach().contiguous() for k, v in result.model.state_dict().items()}
    assert result.mask_generator is not None
    weights |= {
        f"gen.{k}": v.detach().contiguous() for k, v in result.mask_generator.state_dict().items()
    }
    save_file(weights, str(out / f"rank{rank}.safetensors"))


if __name__ == "__main__":
    main()

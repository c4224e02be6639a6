"""The training step on CUDA waits for the host nowhere between logging steps (marked
``gpu``; run with ``python -m pytest -m gpu tests/training/test_train_cuda.py``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from training_helpers import ToyPairs, make_config

from ramir.training import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("masked", [True, False])
def test_no_host_sync_inside_training_steps(tmp_path, precision, masked):
    cfg = make_config(
        train={"total_iter": 12, "device": "cuda", "precision": precision, "num_workers": 2,
               "input": "masked" if masked else "whole", "grad_clip": 1.0},
        ema={"decay": 0.9},
        logging={"log_every": 6},
        checkpoint={"every": 100},
    )  # fmt: skip
    seen: list[tuple[int, str]] = []
    where = {"iter": 0}

    def on_step(iteration: int) -> None:  # steps 7 to 11 run checked; 12 logs and saves
        where["iter"] = iteration + 1
        torch.cuda.set_sync_debug_mode("warn" if 6 <= iteration < 11 else 0)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: seen.append((where["iter"], str(m)))
        try:
            train(cfg, tmp_path, dataset=ToyPairs(n=64), on_step=on_step)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [(i, m.splitlines()[0]) for i, m in seen if "synchroniz" in m]
    assert not syncs, syncs

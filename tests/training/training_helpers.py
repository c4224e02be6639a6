"""Helpers for the training tests: a tiny paired dataset and a fast config."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from ramir.config import from_dict
from ramir.training.config import TrainingConfig


class ToyPairs(Dataset):
    """``n`` smooth random 16x16 images (``gt``) and noisy copies (``lq``), in [0, 1].

    Each item is a pure function of ``(seed, index)``; ``set_epoch`` is recorded so tests
    can check the loop calls it.
    """

    def __init__(self, n: int = 32, size: int = 16, seed: int = 0, noise: float = 0.1) -> None:
        self.n, self.size, self.seed, self.noise = n, size, seed, noise
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        coarse = torch.rand(1, 3, 4, 4, generator=g)
        gt = torch.nn.functional.interpolate(
            coarse, size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        lq = (gt + self.noise * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        return {"lq": lq, "gt": gt, "task": "noise", "index": index}


def make_config(**sections: dict[str, Any]) -> TrainingConfig:
    """A fast CPU config (tiny NAFNet, fp32, no TensorBoard/progress/plot) with overrides."""
    base: dict[str, Any] = {
        "model": {"name": "nafnet_tiny", "args": {}, "init": None},
        "train": {"total_iter": 6, "batch_size": 4, "device": "cpu", "seed": 0},
        "optim": {"type": "Adam", "lr": 2e-3, "betas": [0.9, 0.99]},
        "schedule": {"warmup_iter": 0, "eta_min": 1e-4},
        "logging": {"log_every": 1, "tensorboard": False, "progress": False, "plot": False},
        "checkpoint": {"every": 3, "keep_last": 2},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return from_dict(TrainingConfig, base, "<test>")

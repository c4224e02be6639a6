"""Validation during training: PSNR on the held-out sets, logged by rank 0.

``val.every`` iterations apart, the EMA network (``val.use_ema``) or the trained one
restores the first ``val.max_images`` images of each ``data.test`` set (``val.sets``),
centre-cropped to ``val.crop``; the mean PSNR per set and over the sets go to the log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.utils.data import Dataset

from ramir.data import build_test_set
from ramir.data.transforms import center_crop
from ramir.evaluation.metrics import psnr
from ramir.models.base import RestorationModel
from ramir.training.config import TrainingConfig
from ramir.training.model import ForwardArgs
from ramir.training.runlog import RunLogger

__all__ = ["build_val_sets", "log_validation", "validate"]


def build_val_sets(cfg: TrainingConfig) -> dict[str, Dataset]:
    """The held-out sets validation uses: ``data.test`` (only ``val.sets`` when given)."""
    specs = [t for t in cfg.data.test if not cfg.val.sets or t.name in cfg.val.sets]
    if not specs:
        raise ValueError("val.every > 0 needs held-out sets: add them to data.test")
    return {spec.name: build_test_set(spec, cfg.data) for spec in specs}


def log_validation(
    log: RunLogger,
    iteration: int,
    model: RestorationModel,
    val_sets: Mapping[str, Dataset],
    cfg: TrainingConfig,
    dev: torch.device,
    args: ForwardArgs | None = None,
) -> None:
    """Validate on every held-out set and log the PSNRs (rank 0)."""
    scores = {
        name: validate(model, ds, cfg.val.max_images, cfg.val.crop, dev, args)
        for name, ds in val_sets.items()
    }
    mean = sum(scores.values()) / len(scores)
    per_set = {f"psnr/{k}": v for k, v in scores.items()}
    log.log({"kind": "val", "iter": iteration, "psnr": mean, **per_set})
    log.write(f"iter {iteration}: validation PSNR {mean:.2f} dB")


@torch.no_grad()
def validate(
    model: RestorationModel,
    dataset: Dataset,
    max_images: int,
    crop: int | None,
    dev: torch.device,
    args: ForwardArgs | None = None,
) -> float:
    """Mean PSNR (RAM convention: uint8, RGB, 4-pixel border crop) of the first images.

    Items are ``{"lq", "gt"}`` ``(3, H, W)`` in [0, 1]; ``args`` makes the network's
    inputs as in testing (RestormerRFR: its DINOv2 features), ``None``: ``model(lq)``.
    """
    was_training = model.training
    model.eval()
    values = []
    for i in range(min(max_images, len(dataset))):  # type: ignore[arg-type]
        item = dataset[i]
        lq, gt = center_crop(item["lq"], crop), center_crop(item["gt"], crop)
        x = model.normalization.normalize(lq.unsqueeze(0).to(dev))
        out = model(*args.testing(x)) if args is not None else model(x)
        pred = model.normalization.denormalize(out).clamp(0, 1)
        values.append(float(psnr(pred[0].float().cpu(), gt.cpu())))
    model.train(was_training)
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("inf")

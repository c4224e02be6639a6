"""RAM++ pretraining inside the training loop: the AdaSAM generator beside the network.

With ``train.input: adaptive`` the loop (:mod:`ramir.training.loop`) hands the forward
of each step to :class:`AdaptiveMasking`, which owns everything the release's
``RAMPlusPretrainModel`` adds to masked pretraining (docs/rampp.md):

* the generator network (``mask_generator.name``/``args``, optionally ``init``), its own
  optimiser (``mask_generator.optim``: Adam lr 1e-6 in the release) and learning-rate
  schedule (the run's ``schedule`` from the generator's ``lr``: warm-up, then the cosine
  to ``eta_min``, which at the release's 1e-6 = lr holds it constant) and its EMA (the
  run's ``ema.decay``);
* the forward (:func:`ramir.rampp.pretrain_forward`): the generator draws the mask, the
  network restores the masked image, ``loss = l_pix + l_prob``; the loop runs one
  backward and steps the network's optimiser, then :meth:`AdaptiveMasking.step` steps
  the generator's (gradient clipping, when on, clips each network on its own);
* checkpoints: ``mask_generator.safetensors`` / ``mask_generator_ema.safetensors``
  beside the network's weights in every checkpoint folder and in the run folder at the
  end; the optimiser and schedule in ``state.pt`` under ``"mask_generator"``; a run
  resumes exactly.

Masks are drawn from a ``torch.Generator`` seeded by ``(train.seed, iteration, rank)``:
a resumed run draws the same masks, and each process of a torchrun job its own (the
release draws from each process's global generator). Dropout in the generator (0.1,
training mode) uses the global generator, whose state checkpoints keep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ramir.checkpoint import (
    load_model,
    load_weights,
    resolve_weights_path,
    save_model,
)
from ramir.models import build_model
from ramir.models.adasam import AdaptiveMaskPixGenerator
from ramir.rampp import pretrain_forward
from ramir.training import distributed as ddp
from ramir.training.config import TrainingConfig
from ramir.training.ema import EMA
from ramir.training.inputs import mix_seed
from ramir.training.optim import LRSchedule, build_optimizer

__all__ = ["AdaptiveMasking", "GENERATOR_FILE", "GENERATOR_EMA_FILE"]

GENERATOR_FILE = "mask_generator.safetensors"
GENERATOR_EMA_FILE = "mask_generator_ema.safetensors"
# Seed streams kept apart from every other use of train.seed.
_INIT_STREAM = 0x5EED_ADA5
_MASK_STREAM = 0xADA5_3A5C


class AdaptiveMasking:
    """The RAM++ side of a pretraining run (built by the loop on every process).

    Args:
        cfg: the run's config (``train.input: adaptive``).
        info: the process group facts (device, rank, world size).
        ckpt, state: the checkpoint folder and its ``state.pt`` the run resumes from, or
            ``None`` for a fresh run (then ``mask_generator.init`` is loaded, if set).

    Attributes:
        model: the bare generator (on the training device).
        ema: its EMA, or ``None``.
        optimizer, schedule: its optimiser and learning-rate schedule.
    """

    def __init__(
        self,
        cfg: TrainingConfig,
        info: ddp.DistInfo,
        ckpt: Path | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        mg = cfg.mask_generator
        if mg is None:  # pragma: no cover - TrainingConfig fills it in for adaptive inputs
            raise ValueError("RAM++ pretraining needs a mask_generator section")
        tc = cfg.train
        self.seed, self.rank = tc.seed, info.rank
        self.pixel_weight, self.prob_weight = mg.pixel_weight, mg.prob_weight
        # Its own seed stream: adding the generator does not move the network's draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(tc.seed, _INIT_STREAM))
            if mg.init and not mg.args and ckpt is None:
                model = load_model(resolve_weights_path(mg.init, mg.init_weights), arch=mg.name)
            else:
                model = build_model(mg.name, **mg.args)
                if mg.init and ckpt is None:
                    load_weights(model, resolve_weights_path(mg.init, mg.init_weights))
        if not isinstance(model, AdaptiveMaskPixGenerator):
            raise ValueError(
                f"mask_generator.name {mg.name!r} is a {type(model).__name__}, not a mask "
                "generator (use adasam)"
            )
        model.to(info.device).train(tc.model_mode == "train")
        self.model: AdaptiveMaskPixGenerator = model
        self.ema = EMA(model, cfg.ema.decay) if cfg.ema.decay > 0 else None
        params = [p for p in model.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = build_optimizer(params, mg.optim)
        self.schedule = LRSchedule(self.optimizer, mg.optim.lr, cfg.schedule, tc.total_iter)
        if ckpt is not None and state is not None:
            self._restore(ckpt, state)
        # The release's own mask_token parameter is never used: DDP must be told.
        self.net: nn.Module = model
        if info.distributed:
            dev = info.device
            self.net = DistributedDataParallel(
                model,
                device_ids=[dev.index] if dev.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self._sums = torch.zeros(2, device=info.device)  # l_pix, l_prob since the last log
        self._steps = 0
        self.lr = mg.optim.lr

    # -- the step ---------------------------------------------------------------------
    def mask_rng(self, iteration: int, device: torch.device) -> torch.Generator:
        """The RNG of iteration ``iteration``'s mask draw on this process."""
        g = torch.Generator(device=device)
        return g.manual_seed(mix_seed(self.seed, _MASK_STREAM, iteration, self.rank))

    def forward(
        self, net: nn.Module, lq: torch.Tensor, gt: torch.Tensor, iteration: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The step's forward: ``(pred (B, 3, S, S), mask (B, S, S), loss)``.

        ``lq``, ``gt`` ``(B, 3, S, S)`` normalised, ``S`` the generator's ``img_size``;
        ``loss = l_pix + l_prob`` (float32). Also sets the generator's learning rate of
        ``iteration``.
        """
        size = self.model.img_size
        if tuple(lq.shape[-2:]) != (size, size):
            raise ValueError(
                f"the mask generator works at {size}x{size} only, but the training crops "
                f"are {lq.shape[-2]}x{lq.shape[-1]}: set mask_generator.args.img_size="
                f"{lq.shape[-2]} or data.patch_size={size}"
            )
        self.lr = self.schedule.step(iteration)
        out = pretrain_forward(
            net,
            self.net,
            lq,
            gt,
            rng=self.mask_rng(iteration, lq.device),
            pixel_weight=self.pixel_weight,
            prob_weight=self.prob_weight,
            check_finite=False,  # the loop checked the batch on the CPU
        )
        self._sums += torch.stack([out.l_pix.detach(), out.l_prob.detach()])
        self._steps += 1
        return out.pred, out.mask[:, 0], out.l_pix + out.l_prob

    def step(self, scaler: torch.amp.GradScaler, grad_clip: float) -> None:
        """After the backward: clip (``grad_clip > 0``) and step the generator's optimiser
        (before the loop's ``scaler.update()``), clear its gradients, update its EMA."""
        if grad_clip > 0:
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, grad_clip)
        scaler.step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)

    def flush(self, info: ddp.DistInfo) -> dict[str, float]:
        """Mean ``l_pix``, ``l_prob`` over every process since the last call, and the
        generator's learning rate, for the log record."""
        l_pix, l_prob = ddp.all_reduce_sum(self._sums.clone(), info).tolist()
        n = max(self._steps, 1) * info.world_size
        self._sums.zero_()
        self._steps = 0
        return {"l_pix": l_pix / n, "l_prob": l_prob / n, "lr_mask": self.lr}

    # -- saving and resuming ------------------------------------------------------------
    def checkpoint_models(self) -> dict[str, nn.Module]:
        """``{file name: model}`` to write into a checkpoint folder."""
        models: dict[str, nn.Module] = {GENERATOR_FILE: self.model}
        if self.ema is not None:
            models[GENERATOR_EMA_FILE] = self.ema.module
        return models

    def state_dict(self) -> dict[str, Any]:
        """What ``state.pt`` keeps under ``"mask_generator"``."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def _restore(self, ckpt: Path, state: dict[str, Any]) -> None:
        saved = state.get("mask_generator")
        if saved is None or not (ckpt / GENERATOR_FILE).is_file():
            raise ValueError(
                f"cannot resume {ckpt} as RAM++ pretraining: it holds no mask generator "
                f"({GENERATOR_FILE}); it was written by another kind of run"
            )
        load_weights(self.model, ckpt / GENERATOR_FILE)
        if self.ema is not None:
            ema_file = ckpt / GENERATOR_EMA_FILE
            load_weights(self.ema.module, ema_file if ema_file.is_file() else ckpt / GENERATOR_FILE)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])

    def save_final(self, out: Path, extra: dict[str, Any]) -> None:
        """Write the final generator weights (and EMA) into the run folder ``out``."""
        save_model(self.model, out / GENERATOR_FILE, extra={**extra, "kind": "mask_generator"})
        if self.ema is not None:
            save_model(
                self.ema.module,
                out / GENERATOR_EMA_FILE,
                extra={**extra, "kind": "mask_generator_ema"},
            )

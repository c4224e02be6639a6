"""Strict training configs: one dataclass per YAML section.

A training config is a YAML file with the sections below (every key optional unless said;
unknown keys and wrong types are errors naming the key and the file)::

    model:      name, args, init, init_weights, dino, dino_dtype
    data:       the data package's DataConfig (training mixture ``datasets`` and the
                held-out ``test`` sets that validation uses)
    train:      total_iter, batch_size, input, mask, loss, seed, grad_clip, precision,
                device, model_mode, num_workers, prefetch_factor, find_unused_parameters,
                dist_timeout_s, tf32, compile
    optim:      type (Adam | AdamW), lr, betas, weight_decay, eps, impl
    schedule:   type (cosine | constant), warmup_iter, eta_min, period
    ema:        decay (0 = off; the reference uses 0.995)
    logging:    log_every, image_every, n_images, tensorboard, progress, plot
    checkpoint: every, keep_last
    val:        every, sets, max_images, crop, use_ema
    mask_generator: (RAM++ pretraining, ``train.input: adaptive``) name, args, init,
                init_weights, optim, pixel_weight, prob_weight
    select:     (fine-tuning only, :class:`FinetuneConfig`) mac, ratio, by, layers

Load one with :func:`load_training_config` (``base:`` includes and ``--set`` overrides
work as in :mod:`ramir.config`; ``data_config: FILE`` takes ``data:`` from a data recipe).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramir.config import ConfigError, from_dict
from ramir.data.config import DataConfig, load_with_data_config

__all__ = [
    "ConfigError",
    "ModelSection",
    "MaskSection",
    "TrainSection",
    "OptimSection",
    "ScheduleSection",
    "EMASection",
    "LoggingSection",
    "CheckpointSection",
    "ValSection",
    "MaskGeneratorSection",
    "TrainingConfig",
    "SelectSection",
    "FinetuneConfig",
    "load_training_config",
]

InputKind = Literal["masked", "whole", "masked_gt", "adaptive"]


def _check(cond: bool, key: str, msg: str, value: Any) -> None:
    """Raise naming ``key`` unless ``cond``; a float ``value`` (or one in a tuple) must
    also be finite (``lr: .inf`` passes ``lr > 0``; YAML files are refused earlier, by
    :mod:`ramir.config`, this covers configs built in Python)."""
    numbers = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
        raise ValueError(f"key '{key}' must be a finite number, got {value!r}")
    if not cond:
        raise ValueError(f"key '{key}' {msg}, got {value!r}")


@dataclass
class ModelSection:
    """Which network to train and where its starting weights come from.

    Attributes:
        name: a backbone name of :func:`ramir.models.build_model`.
        args: its constructor keyword arguments (official names, e.g. ``embed_dim``).
        init: optional starting weights: one of our ``.safetensors`` files, an official
            BasicSR ``.pth``, a checkpoint folder or a run folder (its final weights, or
            else its latest checkpoint). Fine-tuning starts from a pretraining run here.
        init_weights: take the ``ema`` weights or the raw ``model`` weights of a run or
            checkpoint folder (``ema`` falls back to ``model`` when a run had no EMA).
        dino: RAM++'s RestormerRFR (``restormer_rfr``) only, and needed there: a Hugging
            Face DINOv2 folder (``facebook/dinov2-giant`` at the release's sizes), loaded
            with ``transformers`` (``pip install 'ramir[rampp]'``), never downloaded. It
            stays frozen, outside the trained network and its files
            (docs/rampp.md#finetune).
        dino_dtype: the DINOv2's dtype: ``float16`` (the release), ``float32`` (CPU
            runs) or ``bfloat16``.
    """

    name: str = "nafnet"
    args: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    init_weights: Literal["ema", "model"] = "ema"
    dino: str | None = None
    dino_dtype: Literal["float16", "float32", "bfloat16"] = "float16"


@dataclass
class MaskSection:
    """The pretraining mask: 1 = hidden, replaced by the model's mask token.

    See docs/method.md#masking.

    Attributes:
        ratio: fraction of hidden cells, exactly ``ceil(ratio * cells)``; in [0, 1).
        patch_size: mask cell side in pixels (1 = per pixel; 4, 8, 16 for the ablation).
        shared: one mask for the whole batch (the reference) or one per sample.
        per_rank: with ``shared`` masks and several processes, each process draws its own
            mask (as the release, whose ranks seed their masks apart); ``false``: every
            process hides the same pixels. One process draws the same masks either way.
    """

    ratio: float = 0.5
    patch_size: int = 1
    shared: bool = True
    per_rank: bool = True

    def __post_init__(self) -> None:
        _check(0.0 <= self.ratio < 1.0, "train.mask.ratio", "must be in [0, 1)", self.ratio)
        _check(self.patch_size >= 1, "train.mask.patch_size", "must be >= 1", self.patch_size)


@dataclass
class TrainSection:
    """The loop itself.

    Attributes:
        total_iter: number of optimiser steps of the whole run (BasicSR's name).
        batch_size: images per step *per process* (the global batch is
            ``batch_size * world_size``).
        input: how the network input is made: ``masked`` (pretraining: masked ``lq``,
            target ``gt``), ``whole`` (fine-tuning and plain paired training: ``lq`` as
            it is), ``masked_gt`` (the paper's Table 4 ablation: pretrain on masked
            clean images, target ``gt``) or ``adaptive`` (RAM++ pretraining: the mask
            comes from the AdaSAM generator of the ``mask_generator`` section, trained
            with the network; ``mask`` is then unused; docs/rampp.md).
        mask: mask options for ``masked`` / ``masked_gt``.
        loss: ``auto`` (masked L1 for masked inputs, L1 for whole ones; with
            ``adaptive`` inputs RAM++'s masked L1 plus probability loss), ``masked_l1``
            (hidden pixels only; needs a masked input), ``l1`` (every pixel) or ``psnr``
            (minus each image's PSNR, averaged: NAFNet's loss, which weights every image
            by how small its error already is; whole inputs only).
        seed: seeds weights, data order, masks and every other random draw.
        grad_clip: max global gradient L2 norm; 0 turns clipping off.
        precision: ``fp32``; ``bf16`` autocast (GPU, or CPU); ``fp16`` autocast with a
            gradient scaler (GPU only); ``auto``: bf16 on a GPU that has it, else fp32
            (the GPU recipes' choice).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        model_mode: ``train`` or ``eval`` (fine-tuning keeps the network in eval mode: no
            stochastic depth or dropout, docs/method.md#fine-tuning).
        num_workers: data loader worker processes per training process; they start once
            per run and decode, crop, degrade and check the batches.
        prefetch_factor: batches each worker prepares ahead (with ``num_workers > 0``).
        find_unused_parameters: DistributedDataParallel's search for parameters the
            forward did not use, at every step. ``false`` (default): several processes
            first run one forward and backward of a copy of the model on a small input
            and turn the search on only when a trainable parameter got no gradient
            (PromptIR's convolutions that its forward never calls, RAM-SwinIR's
            learnable mask token on whole inputs); ``true``: always search.
        dist_timeout_s: seconds a collective waits for the other processes before the
            run fails (instead of hanging when one process dies).
        tf32: let CUDA matrix products and convolutions use TensorFloat-32 (Ampere and
            later: several times faster in fp32, about 3 significant digits per
            product); no effect on a CPU.
        compile: ``torch.compile`` the network for training (first steps slower while
            it compiles; ``benchmarks/bench_loop.py --compile-vs-eager`` measures the gain).
    """

    total_iter: int = 1000
    batch_size: int = 8
    input: InputKind = "whole"
    mask: MaskSection = field(default_factory=MaskSection)
    loss: Literal["auto", "masked_l1", "l1", "psnr"] = "auto"
    seed: int = 0
    grad_clip: float = 0.0
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model_mode: Literal["train", "eval"] = "train"
    num_workers: int = 0
    prefetch_factor: int = 2
    find_unused_parameters: bool = False
    dist_timeout_s: float = 1800.0
    tf32: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        _check(self.total_iter >= 1, "train.total_iter", "must be >= 1", self.total_iter)
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1", self.batch_size)
        _check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0 (0 = off)", self.grad_clip)
        _check(self.num_workers >= 0, "train.num_workers", "must be >= 0", self.num_workers)
        _check(self.prefetch_factor >= 1, "train.prefetch_factor", "must be >= 1",
               self.prefetch_factor)  # fmt: skip
        _check(self.seed >= 0, "train.seed", "must be >= 0", self.seed)
        _check(self.dist_timeout_s > 0, "train.dist_timeout_s", "must be > 0", self.dist_timeout_s)
        if self.loss == "masked_l1" and self.input == "whole":
            raise ValueError(
                "key 'train.loss' is 'masked_l1' but 'train.input' is 'whole': a masked loss "
                "needs a masked input (set train.input=masked or train.loss=l1)"
            )
        if self.loss == "psnr" and self.input != "whole":
            raise ValueError(
                f"key 'train.loss' is 'psnr' but 'train.input' is {self.input!r}: the PSNR "
                "loss compares whole images (set train.input=whole, or train.loss=auto for "
                "the masked L1 of pretraining)"
            )
        if self.input == "adaptive" and self.loss != "auto":
            raise ValueError(
                f"key 'train.loss' is {self.loss!r} but 'train.input' is 'adaptive': RAM++ "
                "pretraining has its own losses (mask_generator.pixel_weight, prob_weight); "
                "leave train.loss at auto"
            )

    @property
    def masked(self) -> bool:
        """Whether the input is masked (pretraining)."""
        return self.input != "whole"


@dataclass
class OptimSection:
    """Adam / AdamW (the reference: Adam, betas (0.9, 0.99), no weight decay).

    ``impl`` picks PyTorch's implementation of the same update: ``fused`` (one kernel
    for all parameters, on CUDA and, with PyTorch >= 2.4, on a CPU: 4x faster than
    ``for_loop`` for the demo's NAFNet on 2 CPU cores), ``foreach`` (grouped tensor
    operations) or ``for_loop`` (one parameter at a time); ``auto`` takes ``fused``
    where this PyTorch has it, else PyTorch's default. They agree to float rounding.
    """

    type: Literal["Adam", "AdamW"] = "Adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    eps: float = 1e-8
    impl: Literal["auto", "fused", "foreach", "for_loop"] = "auto"

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "must be > 0", self.lr)
        _check(all(0 <= b < 1 for b in self.betas), "optim.betas", "must be in [0, 1)", self.betas)
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _check(self.eps > 0, "optim.eps", "must be > 0", self.eps)


@dataclass
class ScheduleSection:
    """Learning rate: linear warmup, then cosine from ``optim.lr`` to ``eta_min``.

    Follows BasicSR (``CosineAnnealingRestartLR`` with one period plus its linear warmup):
    at 1-based iteration ``t`` the rate is ``lr * t / warmup_iter`` while
    ``t < warmup_iter``, else ``eta_min + (lr - eta_min) * (1 + cos(pi * (t - 1) / period)) / 2``.

    Attributes:
        type: ``cosine`` or ``constant`` (warmup still applies).
        warmup_iter: iterations of linear warmup (0 = none).
        eta_min: the final learning rate of the cosine.
        period: cosine length in iterations; ``None`` = ``train.total_iter``.
    """

    type: Literal["cosine", "constant"] = "cosine"
    warmup_iter: int = 0
    eta_min: float = 0.0
    period: int | None = None

    def __post_init__(self) -> None:
        _check(self.warmup_iter >= 0, "schedule.warmup_iter", "must be >= 0", self.warmup_iter)
        _check(self.eta_min >= 0, "schedule.eta_min", "must be >= 0", self.eta_min)
        _check(
            self.period is None or self.period >= 1, "schedule.period", "must be >= 1", self.period
        )


@dataclass
class EMASection:
    """Exponential moving average of the weights, updated after every optimiser step.

    ``ema = decay * ema + (1 - decay) * weights`` from the first step (as the reference),
    starting from a copy of the initial weights. ``decay: 0`` turns it off.
    """

    decay: float = 0.0

    def __post_init__(self) -> None:
        _check(0.0 <= self.decay < 1.0, "ema.decay", "must be in [0, 1) (0 = off)", self.decay)


@dataclass
class LoggingSection:
    """What the main process reports.

    Attributes:
        log_every: iterations between log records (JSONL, TensorBoard, progress bar). The
            NaN/Inf guard checks the loss at these steps and before every checkpoint.
        image_every: iterations between lq / pred / gt image triplets in TensorBoard
            (0 = never).
        n_images: images per triplet log.
        tensorboard: write TensorBoard event files under ``OUT/tb``.
        progress: show a tqdm progress bar.
        plot: write ``OUT/training_curve.png`` at the end.
    """

    log_every: int = 10
    image_every: int = 0
    n_images: int = 2
    tensorboard: bool = True
    progress: bool = True
    plot: bool = True

    def __post_init__(self) -> None:
        _check(self.log_every >= 1, "logging.log_every", "must be >= 1", self.log_every)
        _check(self.image_every >= 0, "logging.image_every", "must be >= 0", self.image_every)
        _check(self.n_images >= 1, "logging.n_images", "must be >= 1", self.n_images)


@dataclass
class CheckpointSection:
    """Training-state checkpoints under ``OUT/checkpoints/iter_XXXXXXXX``.

    Attributes:
        every: iterations between checkpoints (one is always written at the end).
        keep_last: how many of the newest checkpoints to keep (older ones are deleted).
    """

    every: int = 1000
    keep_last: int = 3

    def __post_init__(self) -> None:
        _check(self.every >= 1, "checkpoint.every", "must be >= 1", self.every)
        _check(self.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", self.keep_last)


@dataclass
class ValSection:
    """Optional periodic validation: PSNR (RAM convention) on the held-out ``data.test`` sets.

    Attributes:
        every: iterations between validations (0 = off); rank 0 validates.
        sets: names of ``data.test`` sets to use (empty = all of them).
        max_images: images per set (the first ones).
        crop: centre-crop images to this size before inference (``None`` = whole
            images); keeps CPU validation quick.
        use_ema: validate the EMA weights when EMA is on.
    """

    every: int = 0
    sets: list[str] = field(default_factory=list)
    max_images: int = 4
    crop: int | None = None
    use_ema: bool = True

    def __post_init__(self) -> None:
        _check(self.every >= 0, "val.every", "must be >= 0 (0 = off)", self.every)
        _check(self.max_images >= 1, "val.max_images", "must be >= 1", self.max_images)
        _check(self.crop is None or self.crop >= 1, "val.crop", "must be >= 1", self.crop)


@dataclass
class MaskGeneratorSection:
    """RAM++ pretraining (``train.input: adaptive``; docs/rampp.md): the mask generator
    trained beside the network, against it.

    Attributes:
        name: the generator's model name (``adasam``, or a named size of it).
        args: its constructor arguments; ``img_size`` must equal the training crop
            (``data.patch_size``): the generator works at that one size.
        init: optional starting weights (a file of ours, a release ``net_mask_*.pth``, a
            checkpoint or run folder of a RAM++ run); ``None``: a fresh generator.
        init_weights: ``ema`` or ``model`` weights of a folder given as ``init``.
        optim: the generator's own optimiser; the release: Adam, lr 1e-6, betas
            (0.9, 0.99). The run's ``schedule`` (warm-up, cosine to ``eta_min``) sets
            its rate too, from its own ``lr``, as the release's scheduler does for both.
        pixel_weight: weight of the masked L1 loss (trains the network; 1).
        prob_weight: weight of the probability loss (trains the generator; 1e-4).

    ``ema`` applies to the generator as well (its EMA weights are saved beside the
    network's).
    """

    name: str = "adasam"
    args: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    init_weights: Literal["ema", "model"] = "ema"
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=1e-6))
    pixel_weight: float = 1.0
    prob_weight: float = 1e-4

    def __post_init__(self) -> None:
        _check(self.pixel_weight >= 0, "mask_generator.pixel_weight", "must be >= 0",
               self.pixel_weight)  # fmt: skip
        _check(self.prob_weight >= 0, "mask_generator.prob_weight", "must be >= 0",
               self.prob_weight)  # fmt: skip


@dataclass
class TrainingConfig:
    """A whole training run (pretraining, fine-tuning or plain paired training)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    ema: EMASection = field(default_factory=EMASection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    val: ValSection = field(default_factory=ValSection)
    mask_generator: MaskGeneratorSection | None = None

    def __post_init__(self) -> None:
        if self.train.input == "adaptive" and self.mask_generator is None:
            self.mask_generator = MaskGeneratorSection()  # the release's generator
        elif self.train.input != "adaptive" and self.mask_generator is not None:
            raise ValueError(
                "key 'mask_generator' is set but 'train.input' is "
                f"{self.train.input!r}: the mask generator trains only in RAM++ pretraining "
                "(train.input=adaptive)"
            )
        known = [t.name for t in self.data.test]
        unknown = [n for n in self.val.sets if n not in known]
        if unknown:
            raise ValueError(
                f"key 'val.sets' names {unknown[0]!r}, which is not a data.test set; "
                f"choose from: {', '.join(known) or '(data.test is empty)'}"
            )


@dataclass
class SelectSection:
    """Which layers fine-tuning trains (docs/method.md#selection); everything else is frozen.

    Attributes:
        mac: a ``mac.json`` from ``ramir analyze``: its highest-scored layers are trained.
        ratio: fraction of layers (or of parameters, ``by: params``) taken from ``mac``;
            the reference uses 0.1 for RAM-SwinIR and 0.3 for RAM-PromptIR.
        by: count the ratio in ``layers`` (default, as the paper) or ``params``.
        layers: explicit layer names instead of ``mac``.

    With neither ``mac`` nor ``layers`` every layer trains (the "full fine-tune" of the
    paper's Table 6).
    """

    mac: str | None = None
    ratio: float = 0.1
    by: Literal["layers", "params"] = "layers"
    layers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check(0.0 < self.ratio <= 1.0, "select.ratio", "must be in (0, 1]", self.ratio)
        if self.mac and self.layers:
            raise ValueError("keys 'select.mac' and 'select.layers' exclude each other; set one")


@dataclass
class FinetuneConfig(TrainingConfig):
    """A fine-tuning run: a :class:`TrainingConfig` plus the layer selection."""

    select: SelectSection = field(default_factory=SelectSection)


def load_training_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    schema: type[TrainingConfig] = TrainingConfig,
) -> TrainingConfig:
    """Read a training config YAML (with ``base:`` includes) and ``key.sub=value`` overrides.

    As in evaluation configs, a top-level ``data_config: FILE`` takes the ``data:``
    section from a data recipe (e.g. ``../data/synthetic7.yaml``; relative to the config
    file, else to the current directory); keys under ``data:`` in the file (and
    ``data.*`` overrides) are merged on top.

    Args:
        path: the YAML file (``None``: defaults).
        overrides: ``key.sub=value`` strings.
        schema: :class:`TrainingConfig` or :class:`FinetuneConfig`.

    Raises:
        ConfigError: naming the offending key and the file.
    """
    raw, source = load_with_data_config(path, overrides)
    return from_dict(schema, raw, source)

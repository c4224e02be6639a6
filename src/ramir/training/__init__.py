"""Training: masked pretraining, fine-tuning and plain paired training in one loop.

>>> from ramir.training import load_training_config, train
>>> cfg = load_training_config("configs/cpu/pretrain.yaml", ["train.total_iter=50"])  # doctest: +SKIP
>>> result = train(cfg, "runs/pretrain")  # doctest: +SKIP

Fine-tuning a selected set of layers (docs/method.md#fine-tuning) passes a parameter selection::

    from ramir.attribution import freeze_except
    train(cfg, "runs/finetune", trainable=lambda m: freeze_except(m, layers))

or, from a config with a ``select:`` section (``mac: mac.json``, ``ratio``, ``by``)::

    cfg = load_training_config("configs/cpu/finetune.yaml", schema=FinetuneConfig)
    finetune(cfg, "runs/finetune")

RAM++'s RestormerRFR fine-tunes the same way with ``model.dino`` (a DINOv2 folder) in its
config (``configs/cpu/rampp_finetune.yaml``, docs/rampp.md#finetune). The loop
(:mod:`ramir.training.loop`) is short; its parts have a module each: ``step``, ``model``,
``data``, ``checkpoint``, ``validate``, ``runlog``.
"""

from ramir.training.config import FinetuneConfig, TrainingConfig, load_training_config
from ramir.training.ema import EMA
from ramir.training.finetune import finetune, layer_selection, selected_layers
from ramir.training.inputs import MaskedInput, WholeInput, make_input_maker
from ramir.training.loop import TrainResult, train
from ramir.training.losses import l1_loss, masked_l1_loss
from ramir.training.optim import LRSchedule, build_optimizer, lr_at
from ramir.training.runlog import NonFiniteLossError
from ramir.training.step import ParameterSelection

__all__ = [
    "TrainingConfig",
    "FinetuneConfig",
    "load_training_config",
    "finetune",
    "selected_layers",
    "layer_selection",
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "ParameterSelection",
    "EMA",
    "MaskedInput",
    "WholeInput",
    "make_input_maker",
    "l1_loss",
    "masked_l1_loss",
    "LRSchedule",
    "build_optimizer",
    "lr_at",
]

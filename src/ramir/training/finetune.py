"""Fine-tuning (docs/method.md#fine-tuning): the training loop with a layer selection injected.

>>> cfg = load_training_config("configs/cpu/finetune.yaml", schema=FinetuneConfig)  # doctest: +SKIP
>>> result = finetune(cfg, "runs/finetune")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ramir import rampp
from ramir.attribution import freeze_except, list_layers, load_mac
from ramir.attribution.io import MacResult
from ramir.attribution.selection import select_for_finetuning
from ramir.checkpoint import file_sha256, resolve_weights_path
from ramir.models import build_model, resolve_model
from ramir.training.config import FinetuneConfig
from ramir.training.loop import TrainResult, train
from ramir.training.model import RFR
from ramir.training.step import ParameterSelection

PRETRAIN_NET = "adasam_restormer_woskip"
"""RAM++'s pretraining network, whose MAC ranking selects RestormerRFR's layers."""

__all__ = ["finetune", "selected_layers", "layer_selection", "rfr_names"]

logger = logging.getLogger(__name__)


def selected_layers(cfg: FinetuneConfig) -> list[str] | None:
    """The layer names ``cfg.select`` picks, highest MAC score first (``None`` = all).

    Checks that ``mac.json`` was computed for the same architecture and warns when it
    analysed other weights than the ones fine-tuning starts from.
    """
    sel = cfg.select
    if sel.layers:
        return list(sel.layers)
    if not sel.mac:
        return None
    mac = load_mac(sel.mac)
    arch = mac.model.get("arch")
    base = resolve_model(cfg.model.name)[0]  # a named size: its base
    if base == RFR and _ranks_the_pretraining_network(arch, mac):
        return _rfr_layers(cfg, mac)
    if arch and arch != base:
        raise ValueError(
            f"select.mac {sel.mac} ranks layers of a {arch!r} model, but model.name is "
            f"{cfg.model.name!r}"
        )
    _check_analysed_weights(cfg, mac)
    n_params = {k: v for k, v in mac.n_params.items() if v is not None}
    complete = len(n_params) == len(mac.scores)
    if sel.by == "params" and not complete:
        raise ValueError(f"{sel.mac} has no parameter counts; use select.by=layers")
    return select_for_finetuning(
        mac.scores, sel.ratio, by=sel.by, n_params=n_params if complete else None
    )


def _check_analysed_weights(cfg: FinetuneConfig, mac: MacResult) -> None:
    """Warn when ``mac.json`` analysed other weights than fine-tuning starts from."""
    analysed = (mac.checkpoint or {}).get("sha256")
    if analysed and cfg.model.init:
        start = resolve_weights_path(cfg.model.init, cfg.model.init_weights)
        if file_sha256(start) != analysed:
            logger.warning(
                "%s analysed other weights than %s (model.init); the layer ranking may not "
                "fit them",
                cfg.select.mac, start,
            )  # fmt: skip


def _ranks_the_pretraining_network(arch: str | None, mac: MacResult) -> bool:
    """Whether ``mac`` ranks RAM++'s pretraining network: its arch says so, or, without
    one (a release folder imported without ``--arch``), no DINO-side layer is ranked."""
    from ramir.models.restormer_rfr import DINO_SIDE

    if arch is not None:
        return arch == PRETRAIN_NET
    return not any(name.startswith(DINO_SIDE) for name in mac.scores)


def _rfr_layers(cfg: FinetuneConfig, mac: MacResult) -> list[str]:
    """RAM++: a RestormerRFR fine-tuned from a MAC analysis of its pretraining network:
    the first ``select.ratio`` of the RFR list (its DINO-side layers, then the MAC
    ranking; :func:`rfr_names`), as the release selects from
    ``filter_name_RFR.txt``."""
    sel = cfg.select
    if sel.by != "layers":
        raise ValueError(
            "select.by=params is not defined for restormer_rfr's list (its DINO-side layers, "
            "then the MAC ranking); use select.by=layers"
        )
    _check_analysed_weights(cfg, mac)
    with torch.device("meta"):  # the layer names only
        model = build_model(cfg.model.name, **cfg.model.args)
    chosen = rampp.rfr_selection(rfr_names(model, mac.ranking()), sel.ratio)
    if not chosen:
        raise ValueError(f"select.ratio {sel.ratio} selects no layer; raise select.ratio")
    return chosen


def rfr_names(model: nn.Module, ranking: Sequence[str]) -> list[str]:
    """The RFR list of a RestormerRFR, as the release's ``filter_name_RFR.txt`` is made:
    the network's DINO-side layers (every module of the fusion, adaptation and
    upsampling path that owns parameters, the bare ``dino_fusion_X`` for its temperature;
    33 at any size) in registration order, then ``ranking``, the pretraining network's
    layers by MAC score, first-ranked first (``load_mac(...).ranking()``).

    The release lists its 33 DINO-side names in an order of its own; any ratio that keeps
    all of them (``ratio >= 33 / len``) selects the same set.

    Raises:
        ValueError: a ``ranking`` name is not a layer of the network's Restormer part.
    """
    from ramir.models.restormer_rfr import DINO_SIDE

    layers = list_layers(getattr(model, "module", model))  # the network inside DDP
    side = [n for n in layers if n.startswith(DINO_SIDE)]
    rest = set(layers) - set(side)
    unknown = [n for n in ranking if n not in rest]
    if unknown:
        raise ValueError(
            f"{len(unknown)} ranked name(s) are not layers of this RestormerRFR's Restormer "
            f"part (e.g. {unknown[0]!r}): was the MAC analysis run on a pretraining network "
            "of another size?"
        )
    return side + list(ranking)


def layer_selection(layers: list[str] | None) -> ParameterSelection | None:
    """A parameter selection training exactly the parameters ``layers`` own (``None`` = all)."""
    if layers is None:
        return None

    def select(model: nn.Module) -> None:
        freeze_except(model, layers)

    return select


def finetune(cfg: FinetuneConfig, out_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Fine-tune the layers ``cfg.select`` picks (see :func:`ramir.training.train`)."""
    if cfg.train.input != "whole":
        raise ValueError(
            f"fine-tuning trains on whole images; train.input is {cfg.train.input!r} (set it to whole)"
        )
    return train(cfg, out_dir, trainable=layer_selection(selected_layers(cfg)), **kwargs)

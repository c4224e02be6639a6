"""The network a run trains: where its weights start, and what its forward takes.

* :func:`initial_model`: the network of ``model.name``/``model.args`` with the starting
  weights of ``model.init`` (a resumed run replaces them). RAM++'s RestormerRFR starts
  from a pretraining network's file (``adasam_restormer_woskip``, the release's
  ``RestormerWoSkip.pth``) as the release does: the Restormer part from the file, the
  DINO-side modules at their initialisation (:func:`ramir.rampp.init_from_pretraining`).
* :class:`ForwardArgs`: what the network is called with, in a training step
  (``net(*args.training(inp, mask))``) and in validation (``model(*args.testing(x))``):
  ``(inp, mask)`` and ``(x,)`` for every backbone;
* :class:`DinoForwardArgs`: RestormerRFR's ``(lq, features)``: the six DINOv2 features of
  the input, computed by a frozen DINOv2 (``model.dino``: a Hugging Face folder, in
  ``model.dino_dtype``) held here, outside the trained network: not among its
  parameters, not in its EMA copy, its checkpoints or DistributedDataParallel's
  buckets. The features are computed without gradient and without autocast (the DINO
  runs in its own dtype; the features are float32), on the training device. Training
  steps take the six distinct hidden states (7/15, 20/22, 33/39), or, for a network
  built with ``train_features='release'``, hidden state 33 in all six slots as the
  release's fine-tuning step does (docs/rampp.md#bugs); validation always the six.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ramir.checkpoint import load_model, load_weights, read_state_dict, resolve_weights_path
from ramir.errors import ResourceError, UsageError
from ramir.models import build_model, resolve_model
from ramir.models.base import RestorationModel
from ramir.training.config import TrainingConfig

__all__ = ["initial_model", "ForwardArgs", "DinoForwardArgs", "forward_args", "RFR"]

RFR = "restormer_rfr"
"""The architecture that trains with DINOv2 features."""
_RFR_KEY = "dino_fusion_shallow.gate_network.0.weight"  # only an RFR file holds the DINO side


def initial_model(cfg: TrainingConfig, load_init: bool) -> RestorationModel:
    """The network of ``model.name``/``model.args``, with ``model.init``'s weights when
    ``load_init`` (a resumed run replaces them anyway).

    With ``model.init`` and no ``model.args`` the file decides the network: the
    arguments it records (ramir) or its weights imply (a release: sizes, input
    convention), so a released checkpoint fine-tunes with ``model: {name, init}``; it
    is then read once, by :func:`ramir.checkpoint.load_model`. A RestormerRFR is built
    from ``model.args`` (the release's sizes by default) and takes either a whole RFR
    file or the Restormer part of a pretraining network's file.
    """
    mc = cfg.model
    for key in ("dino", "dino_dtype"):
        if key in mc.args:
            raise UsageError(
                f"key 'model.args.{key}': the DINOv2 of a training run is set with "
                f"model.{key}, not among the network's arguments"
            )
    rfr = resolve_model(mc.name)[0] == RFR
    if mc.init and not mc.args and not rfr:
        path = resolve_weights_path(mc.init, mc.init_weights)
        return load_model(path, arch=mc.name)
    model = build_model(mc.name, **mc.args)
    if mc.init and load_init:
        path = resolve_weights_path(mc.init, mc.init_weights)
        if rfr:
            _load_rfr_start(model, path)
        else:
            load_weights(model, path)
    return model


def _load_rfr_start(model: RestorationModel, path: Path) -> None:
    """A RestormerRFR file loads whole; a pretraining network's file loads into the
    Restormer part (every key with its shape), leaving the DINO side initialised."""
    from ramir import rampp

    state = read_state_dict(path)
    if _RFR_KEY in state:
        load_weights(model, path)
        return
    try:
        rampp.init_from_pretraining(model, state)
    except ValueError as e:
        raise UsageError(f"model.init {path.name}: {e}") from None


class ForwardArgs:
    """The arguments of the network's forward: ``(inp, mask)`` in training (``mask``
    ``None`` for whole inputs), ``(x,)`` in validation."""

    def training(self, inp: torch.Tensor, mask: torch.Tensor | None) -> tuple[Any, ...]:
        """Arguments of a training step's forward; ``inp`` ``(B, C, H, W)`` normalised."""
        return (inp, mask)

    def testing(self, x: torch.Tensor) -> tuple[Any, ...]:
        """Arguments of an inference forward (validation); ``x`` ``(B, C, H, W)`` normalised."""
        return (x,)


class DinoForwardArgs(ForwardArgs):
    """RestormerRFR's ``(lq, features)``, the features from ``extractor``.

    Args:
        extractor: a :class:`ramir.models.rampp_dino.DinoExtractor` on the training device.
        model: the RestormerRFR (its normalisation, ``token_grid`` and ``train_features``).
    """

    def __init__(self, extractor: Any, model: RestorationModel) -> None:
        from ramir.models.rampp_dino import RELEASE_TRAIN_LAYERS

        self.extractor = extractor
        self.normalization = model.normalization
        self.grid: str = getattr(model, "token_grid", "exact")
        release = getattr(model, "train_features", "distinct") == "release"
        self.train_layers = RELEASE_TRAIN_LAYERS if release else None

    def features(
        self, lq: torch.Tensor, layers: tuple[int, ...] | None = None
    ) -> Mapping[str, torch.Tensor]:
        """The six feature maps ``(B, dino_dim, H_pad / 8, W_pad / 8)`` float32 of ``lq``
        ``(B, 3, H, W)`` (normalised): no gradient, no autocast, the DINO's dtype."""
        with torch.no_grad(), torch.autocast(lq.device.type, enabled=False):
            return self.extractor.features(lq, self.normalization, grid=self.grid, layers=layers)

    def training(self, inp: torch.Tensor, mask: torch.Tensor | None) -> tuple[Any, ...]:
        if mask is not None:
            raise UsageError("restormer_rfr trains on whole images: set train.input=whole")
        return (inp, self.features(inp, self.train_layers))

    def testing(self, x: torch.Tensor) -> tuple[Any, ...]:
        return (x, self.features(x))


def forward_args(cfg: TrainingConfig, model: RestorationModel, device: torch.device) -> ForwardArgs:
    """The :class:`ForwardArgs` of ``model``: for a RestormerRFR, the DINOv2 of
    ``model.dino`` loaded (in ``model.dino_dtype``) onto ``device``.

    Raises:
        UsageError: ``model.dino`` missing for a RestormerRFR, set for another network, or
            not a DINOv2 folder of the network's ``dino_dim``; a masked input.
        ResourceError: ``transformers`` is not installed.
    """
    mc = cfg.model
    if getattr(model, "arch_name", None) != RFR:
        if mc.dino is not None:
            raise UsageError(
                f"key 'model.dino' is set, but {mc.name!r} takes no DINOv2 features (only "
                f"{RFR} does); remove model.dino"
            )
        return ForwardArgs()
    if mc.dino is None:
        raise UsageError(
            f"{RFR} trains with DINOv2 features: set model.dino to a Hugging Face DINOv2 "
            "folder (facebook/dinov2-giant at the release's sizes; ramir.rampp."
            "save_tiny_dino makes a tiny one for tests)"
        )
    if cfg.train.input != "whole":
        raise UsageError(
            f"{RFR} trains on whole images with its DINOv2 features, but train.input is "
            f"{cfg.train.input!r}; set train.input=whole (RAM++ pretrains "
            "adasam_restormer_woskip)"
        )
    extractor = load_dino(mc.dino, mc.dino_dtype)
    dim = int(getattr(model, "dino_dim", extractor.hidden_size))
    if extractor.hidden_size != dim:
        raise UsageError(
            f"model.dino gives {extractor.hidden_size}-channel features, but the network "
            f"takes dino_dim={dim}; set model.args.dino_dim={extractor.hidden_size} or "
            "give the DINOv2 it was built for"
        )
    extractor.to(device)
    return DinoForwardArgs(extractor, model)


def load_dino(folder: str | Path, dtype: str = "float16") -> Any:
    """A frozen :class:`~ramir.models.rampp_dino.DinoExtractor` from a Hugging Face
    DINOv2 folder (nothing is downloaded), on the CPU in ``dtype``.

    Loading does not move PyTorch's global random stream (the run's draws stay where a
    run without a DINO has them).

    Raises:
        UsageError: ``folder`` is not a DINOv2 folder.
        ResourceError: ``transformers`` is not installed.
    """
    from ramir.models.rampp_dino import DinoExtractor

    # DinoExtractor.from_pretrained checks the library and the folder; its errors are
    # said here in the terms of the training config
    with torch.random.fork_rng(devices=[]):
        try:
            extractor = DinoExtractor.from_pretrained(Path(folder), dtype=dtype)
        except ImportError:
            raise ResourceError(
                "model.dino needs transformers to load the DINOv2: pip install 'ramir[rampp]'"
            ) from None
        except FileNotFoundError:
            raise UsageError(
                f"model.dino {folder}: not a Hugging Face model folder (no config.json); give "
                "the folder of facebook/dinov2-giant (or one ramir.rampp.save_tiny_dino wrote)"
            ) from None
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"model.dino {folder}: cannot load a DINOv2 from it ({e})") from None
    if getattr(extractor.model.config, "model_type", "dinov2") != "dinov2":
        raise UsageError(
            f"model.dino {folder} holds a {extractor.model.config.model_type!r} model, not a DINOv2"
        )
    return extractor

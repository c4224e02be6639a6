"""Backbones: a plain registry of restoration networks by name.

>>> from ramir.models import build_model, list_models
>>> model = build_model("ram_swinir", embed_dim=24, depths=[2, 2], num_heads=[2, 2])
"""

from __future__ import annotations

import typing
from typing import Any

from torch import nn

from ramir.models.base import RestorationModel
from ramir.models.nafnet import NAFNet
from ramir.models.promptir import PromptIR
from ramir.models.ram_promptir import RAMPromptIR
from ramir.models.ram_swinir import RAMSwinIR
from ramir.models.restormer import Restormer
from ramir.models.swinir import SwinIR
from ramir.registry import Registry

__all__ = [
    "MODELS",
    "RestorationModel",
    "build_model",
    "list_models",
    "model_kwargs",
    "count_parameters",
]

MODELS: Registry[type[RestorationModel]] = Registry("model")
MODELS.add("ram_swinir", RAMSwinIR)
MODELS.add("ram_promptir", RAMPromptIR)
MODELS.add("nafnet", NAFNet)
# The field's released models (their own input conventions; see ramir.checkpoint).
MODELS.add("swinir", SwinIR)
MODELS.add("restormer", Restormer)
MODELS.add("promptir", PromptIR)


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return MODELS.names()


def model_kwargs(name: str) -> dict[str, Any]:
    """The constructor keyword arguments of model ``name`` with their defaults."""
    return MODELS.kwargs_of(name)


def build_model(name: str, **kwargs: Any) -> RestorationModel:
    """Build backbone ``name`` with constructor keyword arguments ``kwargs``.

    Keyword names are the official ones (``embed_dim``, ``depths``, ``num_heads``,
    ``window_size``, ``img_size``... for ``ram_swinir``; ``dim``, ``num_blocks``,
    ``num_refinement_blocks``, ``heads``... for ``ram_promptir``). Unknown names raise a
    ``KeyError`` and unknown keywords a ``TypeError``, both listing the choices.
    """
    cls = MODELS.get(name)
    MODELS.check_kwargs(name, kwargs)
    _check_argument_types(name, cls, kwargs)
    model = cls(**kwargs)
    model.arch_name = name
    # Recorded so that a checkpoint can rebuild the model with no config.
    model.arch_kwargs = dict(kwargs)
    return model


def _check_argument_types(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """``TypeError`` naming the argument when a value does not fit the constructor's
    annotation (``embed_dim='abc'`` would otherwise fail deep inside the model)."""
    from ramir.config import ConfigError, _convert
    from ramir.errors import InvalidArgumentError

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that cannot be resolved: the constructor judges
        return
    for key, value in kwargs.items():
        if key not in hints:
            continue
        try:
            _convert(hints[key], value, key, f"model {name!r}")
        except ConfigError as e:
            raise InvalidArgumentError(str(e)) from None
        except TypeError:  # an annotation the config checker does not know
            continue


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Backbones: a plain registry of restoration networks by name, and named sizes of them.

>>> from ramir.models import build_model, list_models, list_variants
>>> model = build_model("ram_swinir", embed_dim=24, depths=[2, 2], num_heads=[2, 2])
>>> tiny = build_model("ram_swinir_tiny", img_size=48)  # a named size, one argument changed
>>> tiny.arch_name, tiny.arch_kwargs["img_size"]
('ram_swinir', 48)

Named sizes (like timm's named variants) are names :func:`build_model` accepts besides
the base names: ``build_model("ram_swinir_tiny")`` is ``build_model("ram_swinir",
img_size=32, embed_dim=24, ...)``, and keywords still override the named size
(``build_model("ram_swinir_tiny", img_size=48)``). The model built records its base name
(``model.arch_name == "ram_swinir"``) and every constructor argument given, the named
size's included (``model.arch_kwargs``), so a checkpoint saved from it names the base
architecture and rebuilds without knowing the size's name.

* :func:`list_models` lists the base names (the registered classes);
* :func:`list_variants` maps every named size to ``(base name, its arguments)``;
* :func:`resolve_model` turns any accepted name into ``(base name, arguments)``.

The named sizes (:func:`add_variant` adds more):

* ``ram_swinir_tiny``: ram_swinir with img_size 32, embed_dim 24, depths [2, 2],
  num_heads [2, 2], window_size 8, mlp_ratio 2 (the tiny reference network of
  ``tests/data/backbone_manifest.json``);
* ``ram_promptir_tiny``: ram_promptir with num_blocks [1, 1, 1, 1] and
  num_refinement_blocks 1 (dim 48 and heads [1, 2, 4, 8], as the paper's size; also the
  manifest's tiny reference);
* ``nafnet_tiny``: nafnet with width 8, middle_blk_num 1, enc_blk_nums [1, 1],
  dec_blk_nums [1, 1];
* ``nafnet_w16``: nafnet with width 16, middle_blk_num 2, enc_blk_nums [1, 1, 2, 4],
  dec_blk_nums [1, 1, 1, 1] (the size of the default model that ships with ramir).

The paper's sizes are the base names' defaults (``build_model("ram_swinir")``).

A backbone is one module: its class, and beside it ``detect(state_dict, hint=None)`` and
``kwargs_from_state_dict(state_dict)`` (:mod:`ramir.models.detection`), with which
``ramir.load_model`` recognises its weights in files without ramir metadata.
:func:`add_model` registers the three; :func:`detectors` lists the detection order
(more specific layouts first; docs/adding-a-backbone.md).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any, NamedTuple

from torch import nn

from ramir.errors import UnknownNameError
from ramir.models import (
    adasam,
    adasam_restormer,
    nafnet,
    promptir,
    ram_promptir,
    ram_swinir,
    restormer,
    restormer_rfr,
    swinir,
)
from ramir.models.adasam import AdaptiveMaskPixGenerator
from ramir.models.adasam_restormer import AdaSAMRestormerWoskip
from ramir.models.base import RestorationModel
from ramir.models.detection import Detect, KwargsFromStateDict
from ramir.models.nafnet import NAFNet
from ramir.models.promptir import PromptIR
from ramir.models.ram_promptir import RAMPromptIR
from ramir.models.ram_swinir import RAMSwinIR
from ramir.models.restormer import Restormer
from ramir.models.restormer_rfr import RestormerRFR
from ramir.models.swinir import SwinIR
from ramir.registry import Registry, keyword_sources

__all__ = [
    "MODELS",
    "RestorationModel",
    "Detector",
    "add_model",
    "remove_model",
    "detectors",
    "add_variant",
    "build_model",
    "list_models",
    "list_variants",
    "model_kwargs",
    "resolve_model",
    "count_parameters",
]

MODELS: Registry[type[RestorationModel]] = Registry("model")


class Detector(NamedTuple):
    """A registered backbone's checkpoint detection (see :mod:`ramir.models.detection`)."""

    name: str
    detect: Detect
    kwargs_from_state_dict: KwargsFromStateDict


# The detection order: ramir.checkpoint.infer_arch asks each detect in turn.
_DETECTORS: list[Detector] = []


def add_model(
    name: str,
    cls: type[RestorationModel],
    *,
    detect: Detect | None = None,
    kwargs_from_state_dict: KwargsFromStateDict | None = None,
    before: str | Iterable[str] = (),
) -> None:
    """Register backbone class ``cls`` as ``name`` (``build_model(name, ...)``), and with
    ``detect`` and ``kwargs_from_state_dict`` (both or neither) its checkpoint detection:
    ``ramir.load_model`` then recognises its state dicts in files without ramir metadata.

    A detector joins the end of the detection order (:func:`detectors`), or just before
    the first of the registered names in ``before``: a layout that extends another's
    must be asked first (RAM-SwinIR before SwinIR).

    Raises:
        KeyError: ``name`` is already registered, or a name in ``before`` is not.
        ValueError: only one of ``detect`` and ``kwargs_from_state_dict`` was given.
    """
    if (detect is None) != (kwargs_from_state_dict is None):
        raise ValueError(f"model {name!r}: give both detect and kwargs_from_state_dict, or neither")
    names = [before] if isinstance(before, str) else list(before)
    order = [d.name for d in _DETECTORS]
    missing = [n for n in names if n not in order]
    if missing:
        raise UnknownNameError(
            f"cannot detect model {name!r} before {', '.join(missing)}: no such detector; "
            f"the detection order is: {', '.join(order)}"
        )
    MODELS.add(name, cls)
    if detect is not None and kwargs_from_state_dict is not None:
        at = min((order.index(n) for n in names), default=len(order))
        _DETECTORS.insert(at, Detector(name, detect, kwargs_from_state_dict))


def remove_model(name: str) -> None:
    """Unregister model ``name``, its detector and its named sizes (a plugin's tests
    clean up with it)."""
    MODELS.remove(name)
    _DETECTORS[:] = [d for d in _DETECTORS if d.name != name]
    for variant in [v for v, (base, _) in _VARIANTS.items() if base == name]:
        del _VARIANTS[variant]


def detectors() -> list[Detector]:
    """The registered detectors in detection order (a copy): the first whose ``detect``
    says yes names the architecture of a file without ramir metadata."""
    return list(_DETECTORS)


# Each backbone module defines its class, ``detect`` and ``kwargs_from_state_dict``.
# Registered in detection order, more specific layouts first:
# * RAM++'s networks: the AdaSAM generator (its own keys); RestormerRFR (a Restormer with
#   DINO fusion gates) before its pretraining network, whose keys equal a plain
#   Restormer's and which is recognised only from a hint (``woskip`` in the file name
#   or the architecture asked for);
# * RAM-SwinIR (a mask token or a 1x1 ``conv_first``) before classic SwinIR;
# * RAM-PromptIR and the original PromptIR (prompt blocks) before Restormer;
# * NAFNet (its own keys).
for _name, _cls, _module in (
    ("adasam", AdaptiveMaskPixGenerator, adasam),  # draws masks rather than restoring
    ("restormer_rfr", RestormerRFR, restormer_rfr),  # RAM++ fine-tuning (DINOv2 apart)
    ("adasam_restormer_woskip", AdaSAMRestormerWoskip, adasam_restormer),  # RAM++ pretraining
    ("ram_swinir", RAMSwinIR, ram_swinir),
    ("swinir", SwinIR, swinir),  # the field's releases keep their own input conventions
    ("ram_promptir", RAMPromptIR, ram_promptir),
    ("promptir", PromptIR, promptir),
    ("restormer", Restormer, restormer),
    ("nafnet", NAFNet, nafnet),
):
    add_model(
        _name, _cls, detect=_module.detect, kwargs_from_state_dict=_module.kwargs_from_state_dict
    )
del _name, _cls, _module


# Named sizes: name -> (base name, constructor arguments). See the module docstring.
_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {}


def add_variant(name: str, base: str, **kwargs: Any) -> None:
    """Register ``name`` as model ``base`` with constructor arguments ``kwargs``."""
    if name in MODELS or name in _VARIANTS:
        raise KeyError(f"model {name!r} is already registered")
    MODELS.check_kwargs(base, kwargs)  # also checks that ``base`` exists
    _VARIANTS[name] = (base, dict(kwargs))


add_variant(
    "ram_swinir_tiny",
    "ram_swinir",
    img_size=32,
    embed_dim=24,
    depths=[2, 2],
    num_heads=[2, 2],
    window_size=8,
    mlp_ratio=2,
)
add_variant("ram_promptir_tiny", "ram_promptir", num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
add_variant(
    "nafnet_tiny", "nafnet", width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]
)
add_variant(
    "nafnet_w16",
    "nafnet",
    width=16,
    middle_blk_num=2,
    enc_blk_nums=[1, 1, 2, 4],
    dec_blk_nums=[1, 1, 1, 1],
)


def list_models(*, restoring: bool = False) -> list[str]:
    """Base names accepted by :func:`build_model` (named sizes: :func:`list_variants`);
    ``restoring=True``: only the networks that restore images (not RAM++'s mask
    generator)."""
    names = MODELS.names()
    if restoring:
        names = [n for n in names if getattr(MODELS.get(n), "restores_images", True)]
    return names


def list_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Named sizes, sorted: ``{name: (base name, constructor arguments)}`` (copies)."""
    return {n: (b, _copy(kw)) for n, (b, kw) in sorted(_VARIANTS.items())}


def resolve_model(name: str) -> tuple[str, dict[str, Any]]:
    """``(base name, constructor arguments)`` of a base name or a named size.

    A base name gives itself and ``{}``; an unknown name raises an
    :class:`~ramir.errors.UnknownNameError` that lists the base names and the named sizes.
    """
    if name in _VARIANTS:
        base, kwargs = _VARIANTS[name]
        return base, _copy(kwargs)
    if name in MODELS:
        return name, {}
    raise UnknownNameError(
        f"unknown model {name!r}; choose one of: {', '.join(MODELS.names())}; "
        f"or a named size: {', '.join(sorted(_VARIANTS))}"
    )


def model_kwargs(name: str) -> dict[str, Any]:
    """The constructor keyword arguments of model ``name`` with their defaults.

    For a named size, its own arguments replace the base model's defaults.
    """
    base, preset = resolve_model(name)
    return {**MODELS.kwargs_of(base), **preset}


def build_model(name: str, **kwargs: Any) -> RestorationModel:
    """Build backbone ``name`` with constructor keyword arguments ``kwargs``.

    ``name`` is a base name (:func:`list_models`) or a named size (:func:`list_variants`),
    whose arguments ``kwargs`` override. Keyword names are the official ones
    (``embed_dim``, ``depths``, ``num_heads``, ``window_size``, ``img_size``... for
    ``ram_swinir``; ``dim``, ``num_blocks``, ``num_refinement_blocks``, ``heads``... for
    ``ram_promptir``). Unknown names raise a ``KeyError`` and unknown keywords a
    ``TypeError``, both listing the choices. The model records its base name
    (``arch_name``) and all of its arguments (``arch_kwargs``).
    """
    base, preset = resolve_model(name)
    cls = MODELS.get(base)
    kwargs = {**preset, **kwargs}
    MODELS.check_kwargs(base, kwargs)
    _check_argument_types(base, cls, kwargs)
    model = cls(**kwargs)
    model.arch_name = base
    # Recorded so that a checkpoint can rebuild the model with no config.
    model.arch_kwargs = dict(kwargs)
    return model


def _copy(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A copy whose list values are new lists (a caller may change what it gets)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def _check_argument_types(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """``TypeError`` naming the argument when a value does not fit the constructor's
    annotation (``embed_dim='abc'`` would otherwise fail deep inside the model)."""
    from ramir.config import ConfigError, convert_value
    from ramir.errors import InvalidArgumentError

    hints: dict[str, Any] = {}
    try:  # the base's constructor first: a subclass's annotation of a name wins
        for source in reversed(keyword_sources(cls)):
            hints.update(typing.get_type_hints(source))
    except Exception:  # annotations that cannot be resolved: the constructor judges
        return
    for key, value in kwargs.items():
        if key not in hints:
            continue
        try:
            convert_value(hints[key], value, key, f"model {name!r}")
        except ConfigError as e:
            raise InvalidArgumentError(str(e)) from None
        except TypeError:  # an annotation the config checker does not know
            continue


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Layers: how they are enumerated and named, how the top ones are selected and frozen.

A *layer* (docs/method.md#layers) is a module that directly owns at least one parameter, named by
its dotted module path (``layers.0.residual_group.blocks.0.mlp.fc2``), in the order of
``model.named_parameters()`` de-duplicated consecutively. Containers with raw parameters
count (SwinIR's ``WindowAttention`` owns ``relative_position_bias_table``; PromptIR's
``PromptGenBlock`` owns ``prompt_param``).

The root module is never a layer: parameters owned by the model itself (RAM-SwinIR's
``mask_token``) are only used when the model is called with a mask, so they play no part
in whole-image inference, and the authors' code skips them too (263 layers for the full
RAM-SwinIR). :func:`freeze_except` therefore always freezes them.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import nn

from ramir.attribution.io import ranked as ranked_layers
from ramir.errors import UnknownNameError

__all__ = [
    "forward_order",
    "list_layers",
    "layer_param_counts",
    "select_layers",
    "select_for_finetuning",
    "freeze_except",
    "trainable_parameters",
    "check_layer_names",
]


@torch.no_grad()
def forward_order(model: nn.Module, layers: list[str], example: torch.Tensor) -> list[str]:
    """``layers`` in the order a forward pass of ``example`` first runs them.

    Registration order is not execution order (NAFNet registers its last convolution,
    ``ending``, second); plots "along depth" need the order the data flows. Layers the
    pass never runs keep their relative order at the end.

    Args:
        model: the network; ``example``: one input it accepts, ``(1, C, H, W)``.
    """
    seen: list[str] = []
    handles = []
    for name in layers:
        module = model.get_submodule(name)

        def hook(mod: nn.Module, args: object, name: str = name) -> None:
            if name not in done:
                done.add(name)
                seen.append(name)

        handles.append(module.register_forward_pre_hook(hook))
    done: set[str] = set()
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen + [n for n in layers if n not in done]


def list_layers(model: nn.Module) -> list[str]:
    """Names of ``model``'s layers, in ``named_parameters()`` order (root excluded)."""
    names: list[str] = []
    for pname, _ in model.named_parameters():
        owner = pname.rpartition(".")[0]
        if owner == "":
            continue  # owned by the model itself (e.g. mask_token): not a layer
        if not names or names[-1] != owner:
            names.append(owner)
    return names


def layer_param_counts(model: nn.Module) -> dict[str, int]:
    """Number of parameter elements each layer owns directly, in layer order."""
    return {
        name: sum(p.numel() for p in model.get_submodule(name).parameters(recurse=False))
        for name in list_layers(model)
    }


def check_layer_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    """Return ``names`` as a list, raising ``KeyError`` on any that is not a layer.

    The message lists close matches, so a typo or a renamed module is easy to fix.
    """
    names = list(names)
    valid = list_layers(model)
    valid_set = set(valid)
    unknown = [n for n in names if n not in valid_set]
    if unknown:
        parts = []
        for n in unknown[:5]:
            close = difflib.get_close_matches(n, valid, n=3, cutoff=0.6)
            hint = f" (did you mean: {', '.join(close)}?)" if close else ""
            parts.append(f"{n!r}{hint}")
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise UnknownNameError(
            f"{len(unknown)} unknown layer name(s) for this {type(model).__name__}: "
            f"{'; '.join(parts)}{more}. A layer is a module that directly owns parameters "
            f"(the model has {len(valid)}; see ramir.attribution.list_layers(model)); was the "
            "analysis run on another architecture or size?"
        )
    return names


def select_for_finetuning(
    scores: Mapping[str, float],
    ratio: float,
    by: Literal["layers", "params"] = "layers",
    n_params: Mapping[str, int] | None = None,
    setting: str = "select.ratio",
) -> list[str]:
    """:func:`select_layers` for fine-tuning, which needs at least one layer.

    Raises:
        ValueError: the ratio selects no layer; the message names ``setting``.
    """
    layers = select_layers(scores, ratio, by=by, n_params=n_params)
    if not layers:
        raise ValueError(f"{setting} {ratio} of {len(scores)} layers selects none; raise {setting}")
    return layers


def select_layers(
    scores: Mapping[str, float],
    ratio: float,
    by: Literal["layers", "params"] = "layers",
    model: nn.Module | None = None,
    n_params: Mapping[str, int] | None = None,
) -> list[str]:
    """The layers to fine-tune, first-ranked first.

    The order is :func:`ramir.attribution.ranked`'s (docs/method.md#selection): descending
    score, equal scores keeping the order of ``scores`` (a ``mac.json``'s depth order);
    or, when ``scores`` carries an explicit rank (:class:`~ramir.attribution.io.LayerScores`,
    as a ``mac.json`` imported from the official release loads), that rank alone, so the
    first ``k`` are exactly the release's first ``k`` lines of ``filter_name.txt``.

    Args:
        scores: layer name -> score (e.g. from :func:`mask_attribution_conductance`, or
            ``load_mac(...).scores``).
        ratio: fraction in ``[0, 1]``.
        by: ``"layers"``: the first ``floor(ratio * n_layers)`` layers (docs/method.md#selection;
            26 of 263 for RAM-SwinIR at 0.1). ``"params"``: layers are taken in order
            until their cumulative parameter count reaches ``ratio`` times the total
            parameter count of the scored layers (the layer that crosses it is included).
        model: needed for ``by="params"`` unless ``n_params`` is given.
        n_params: layer name -> parameter count (as in ``mac.json``).

    Returns:
        Selected layer names, first-ranked first.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"selection ratio must be in [0, 1], got {ratio}")
    ranked = ranked_layers(scores)
    if by == "layers":
        # The tolerance keeps e.g. 0.29 * 100 = 28.999999999999996 from losing a layer.
        k = math.floor(ratio * len(ranked) + 1e-9)
        return ranked[:k]
    if by == "params":
        if n_params is None:
            if model is None:
                raise ValueError("select_layers(by='params') needs model= or n_params=")
            n_params = layer_param_counts(model)
        missing = [n for n in ranked if n not in n_params]
        if missing:
            raise KeyError(f"no parameter count for layer(s): {', '.join(missing[:5])}")
        total = sum(int(n_params[n]) for n in ranked)
        goal = ratio * total
        chosen: list[str] = []
        cum = 0
        for name in ranked:
            if cum >= goal - 1e-9 * max(total, 1):
                break
            chosen.append(name)
            cum += int(n_params[name])
        return chosen
    raise ValueError(f"select_layers: by must be 'layers' or 'params', got {by!r}")


def freeze_except(model: nn.Module, layers: Iterable[str]) -> tuple[int, int]:
    """Make exactly the parameters owned by ``layers`` trainable; freeze all others.

    Args:
        model: the network.
        layers: layer names (see :func:`list_layers`); an unknown name raises ``KeyError``
            listing close matches. Root-owned parameters (``mask_token``) stay frozen.

    Returns:
        ``(trainable, total)`` parameter element counts.
    """
    names = check_layer_names(model, layers)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        for p in model.get_submodule(name).parameters(recurse=False):
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad``, in ``named_parameters()`` order (for the optimiser)."""
    return [p for p in model.parameters() if p.requires_grad]

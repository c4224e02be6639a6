"""What a backbone's checkpoint detection is made of (docs/adding-a-backbone.md).

A file without ramir's metadata (a release, a plain state dict) does not say which
network it holds. Each backbone module answers for its own layout with two functions
beside its class, which :func:`ramir.models.add_model` records:

* ``detect(state_dict, hint=None) -> bool``: is this state dict one of mine? It looks
  at names (and, where names are shared with another backbone, at shapes); ``hint`` is
  the file name or the architecture the caller asked for, which only a backbone whose
  keys equal another's needs (RAM++'s ``adasam_restormer_woskip``);
* ``kwargs_from_state_dict(state_dict) -> dict``: the constructor arguments that rebuild
  the network the weights came from, read from tensor shapes and block counts, with the
  input convention of the release (``normalization="none"`` for the field's models).

:func:`ramir.checkpoint.infer_arch` asks the registered ``detect`` functions in the
registry's detection order (:func:`ramir.models.detectors`) and takes the first yes.
The helpers below are what several backbones read sizes with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from ramir.errors import CheckpointError

__all__ = ["Detect", "KwargsFromStateDict", "count_children", "ffn_expansion_factor"]

StateDict = Mapping[str, torch.Tensor]
Detect = Callable[[StateDict, "str | None"], bool]
"""``detect(state_dict, hint)``: whether ``state_dict`` is this backbone's."""
KwargsFromStateDict = Callable[[StateDict], dict[str, Any]]
"""``kwargs_from_state_dict(state_dict)``: the constructor arguments of those weights."""


def count_children(keys: Iterable[str], prefix: str) -> int:
    """Number of numbered children ``prefix.<i>.`` among ``keys`` (blocks of a stage).

    >>> count_children(["enc.0.w", "enc.0.b", "enc.1.w", "enc_x.2.w"], "enc")
    2
    """
    found = set()
    for k in keys:
        if k.startswith(prefix + "."):
            head = k[len(prefix) + 1 :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return len(found)


def ffn_expansion_factor(state_dict: StateDict, widths: Mapping[str, int]) -> float:
    """The GDFN expansion factor ``f`` of a Restormer-family state dict: ``int(width * f)``
    equals every level's hidden width (the ``project_out`` input channels of the first
    block of each level named in ``widths``, ``{level prefix: its width}``); 2.66, the
    released value, when it fits.

    Raises:
        CheckpointError: no single factor fits every level.
    """
    hidden = {
        w: int(state_dict[f"{p}.0.ffn.project_out.weight"].shape[1])
        for p, w in widths.items()
        if f"{p}.0.ffn.project_out.weight" in state_dict
    }
    # int(w * f) == h  <=>  h / w <= f < (h + 1) / w, for every level
    low = max((h / w for w, h in hidden.items()), default=2.66)
    high = min(((h + 1) / w for w, h in hidden.items()), default=2.67)
    for f in (2.66, low, (low + high) / 2):
        if all(int(w * f) == h for w, h in hidden.items()):
            return f
    raise CheckpointError(
        f"no single feed-forward expansion factor fits the hidden widths {hidden}"
    )

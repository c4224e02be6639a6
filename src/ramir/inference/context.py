"""Global context for tiles: the whole image's pooled statistics replayed in every tile.

Networks with global average pooling (NAFNet's channel attention, PromptIR's prompt
weights) decide *what* to restore from statistics of the whole input, so a tile alone can
be misjudged (a tile of shadows looks like a low-light image and gets brightened).
:class:`GlobalContext` records those pooled statistics in a first pass over the whole
image, downscaled to at most :data:`CONTEXT_PIXELS` (:func:`context_image`), and replays
them in every tile: tiled results then follow the whole-image ones.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

__all__ = ["CONTEXT_PIXELS", "GlobalContext", "context_image", "global_pooling_layers"]

CONTEXT_PIXELS = 512 * 512
"""Largest size (pixels) of the downscaled whole image whose pooled statistics the tiles
reuse (``global_context``); smaller images are used as they are. A larger context brings
the tiles no closer to the whole-image result (the README's figures) while its pass needs
memory in proportion to its area."""


def global_pooling_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that average over the whole input (``AdaptiveAvgPool2d(1)``)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))
    ]


class GlobalContext:
    """Records the outputs of global-pooling layers, then replays them.

    After ``start("record", key)`` the pooled outputs of the next forward pass are stored
    under ``key`` (one list per layer, in call order); after ``start("replay", key)``
    each layer returns its stored output instead of pooling its (tile's) input; a batch of
    ``k`` tiles of the recorded images (``k * B`` samples, tile-major) gets it repeated
    ``k`` times. ``close()`` removes the hooks.
    """

    def __init__(self, layers: list[nn.Module]) -> None:
        self.store: dict[tuple[object, int], list[torch.Tensor]] = {}
        self.mode: Literal["record", "replay"] = "record"
        self.key: object = None
        self.calls: dict[int, int] = {}
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Module, inputs: object, output: torch.Tensor) -> object:
        slot = (self.key, id(module))
        if self.mode == "record":
            self.store.setdefault(slot, []).append(output.detach())
            return None
        n = self.calls.get(id(module), 0)
        self.calls[id(module)] = n + 1
        stored = self.store[slot][n].to(output.device, output.dtype)
        repeats = output.shape[0] // max(1, stored.shape[0])
        if repeats > 1 and repeats * stored.shape[0] == output.shape[0]:
            # a batch of k tiles (tile-major, see tiled_apply): each gets its image's
            stored = stored.repeat(repeats, *([1] * (stored.dim() - 1)))
        return stored

    def start(self, mode: Literal["record", "replay"], key: object) -> None:
        self.mode, self.key, self.calls = mode, key, {}

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def context_image(x: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """``x`` downscaled (area-averaged) to at most ``max_pixels``; ``x`` if small enough."""
    h, w = x.shape[-2:]
    if h * w <= max_pixels:
        return x
    scale = math.sqrt(max_pixels / (h * w))
    size = (max(1, int(h * scale)), max(1, int(w * scale)))
    return torch.nn.functional.interpolate(x.float(), size=size, mode="area")

"""PromptIR as released by its authors (Potlapalli et al., NeurIPS 2023).

The network of :class:`~ramir.models.ram_promptir.RAMPromptIR` (a Restormer U-Net with
three prompt blocks in the decoder) plus six 1x1 convolutions that the original code
builds but never calls (``chnl_reduce1-3``, ``reduce_noise_channel_1-3``). They are kept
so that the released checkpoint loads strictly and the parameter count is the released
one (35,592,263 = 35.59M at the defaults); they do not change the output.

Input convention of the release: RGB in [0, 1] (``normalization='none'``), reflect-padded
to a multiple of 8 as the authors' demo script does. The release is a PyTorch Lightning
checkpoint (``{'state_dict': {'net.<key>': ...}, 'optimizer_states': ...}``);
:func:`ramir.load_model` reads it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ramir.models.ram_promptir import _PROMPTS, RAMPromptIR
from ramir.models.restormer import is_restormer_layout, restormer_kwargs

__all__ = ["PromptIR", "UNUSED_LAYERS", "detect", "kwargs_from_state_dict"]

# The official layers that the forward never uses, by the module they follow in the
# official registration order.
UNUSED_LAYERS = {
    "prompt3": ("chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1"),
    "down1_2": ("reduce_noise_channel_2",),
    "down2_3": ("reduce_noise_channel_3",),
}


class PromptIR(RAMPromptIR):
    """The original PromptIR (35,592,263 parameters at the defaults).

    ``forward(lq, mask=None)``: ``lq`` ``(B, 3, H, W)`` in [0, 1], ``H, W >= 5``;
    reflect-padded to a multiple of 8 and cropped back. Its keywords are
    :class:`~ramir.models.ram_promptir.RAMPromptIR`'s, passed on (``dim`` must be 48 for
    the released channel counts around the prompts; ``decoder`` must be True), but
    ``normalization`` defaults to ``'none'``, the release's input.
    """

    input_multiple = 8
    min_size = 5

    def __init__(self, *, normalization: str = "none", **kwargs: Any) -> None:
        super().__init__(normalization=normalization, **kwargs)
        dim, bias = self.settings.dim, self.settings.bias
        p1, p2, p3 = (_PROMPTS[i][0] for i in (1, 2, 3))
        unused = {
            "chnl_reduce1": nn.Conv2d(p1, p1, kernel_size=1, bias=bias),
            "chnl_reduce2": nn.Conv2d(p2, p2, kernel_size=1, bias=bias),
            "chnl_reduce3": nn.Conv2d(p3, 256, kernel_size=1, bias=bias),
            "reduce_noise_channel_1": nn.Conv2d(dim + p1, dim, kernel_size=1, bias=bias),
            "reduce_noise_channel_2": nn.Conv2d(2 * dim + p2, 2 * dim, kernel_size=1, bias=bias),
            "reduce_noise_channel_3": nn.Conv2d(4 * dim + 256, 4 * dim, kernel_size=1, bias=bias),
        }
        # Registered in the official order (state dict and MAC layer order follow it).
        modules = dict(self._modules)
        self._modules.clear()
        for name, module in modules.items():
            self._modules[name] = module
            for extra in UNUSED_LAYERS.get(name, ()):
                self._modules[extra] = unused[extra]


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """The original PromptIR release: the Restormer layout with the prompt blocks and
    the layers the original code builds but never calls (``chnl_reduce1``)."""
    return (
        is_restormer_layout(state_dict)
        and "prompt1.prompt_param" in state_dict
        and "chnl_reduce1.weight" in state_dict
    )


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The Restormer-family sizes of the weights and the release's input convention
    (RGB in [0, 1])."""
    return {**restormer_kwargs(state_dict), "normalization": "none"}

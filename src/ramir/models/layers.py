"""Building blocks shared by several ramir backbones.

Every block takes and returns ``(B, C, H, W)`` float tensors. The blocks work in either
memory format; the convolutional backbones run in ``torch.channels_last``, which is
markedly faster on CPU for 1x1 and depthwise convolutions and for the per-pixel layer
norms below (a channels-last tensor permuted to ``(B, H, W, C)`` is contiguous, so
``F.layer_norm`` needs no copy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "BiasFreeLayerNorm2d", "simple_gate"]


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of every pixel of ``(B, C, H, W)``.

    ``y = (x - mean_c(x)) / sqrt(var_c(x) + eps) * weight + bias`` with the biased
    variance, as NAFNet's ``LayerNorm2d`` (``eps=1e-6``) and Restormer/PromptIR's
    ``WithBias_LayerNorm`` (``eps=1e-5``). Parameters ``weight`` and ``bias`` ``(C,)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class BiasFreeLayerNorm2d(nn.Module):
    """Restormer/PromptIR's ``BiasFree_LayerNorm`` over channels: no centring, no bias.

    ``y = x / sqrt(var_c(x) + eps) * weight`` (the variance is still the centred, biased
    one). Parameter ``weight`` ``(C,)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's SimpleGate: split ``(B, 2C, H, W)`` into two halves and multiply them."""
    x1, x2 = x.chunk(2, dim=1)
    return x1 * x2

"""RAM-PromptIR: PromptIR (Potlapalli et al., NeurIPS 2023) as used by RAM.

See docs/method.md#backbones.

A Restormer-style 4-level U-Net of transformer blocks with transposed (channel)
self-attention (MDTA) and gated-dconv feed-forward networks (GDFN), the blocks of
:mod:`ramir.models.restormer`. With
``decoder=True`` three prompt-generation blocks inject learned prompts after the
bottleneck and the decoder levels 3 and 2; each prompt is concatenated to the features,
mixed by one transformer block (``noise_level*``) and reduced by a 1x1 convolution
(``reduce_noise_level*``). The image-level residual adds the (masked, padded) input.

Parameter names, shapes and their order in ``named_parameters()`` equal the official
RAM/PromptIR code, so official checkpoints load directly. The official network only runs
with ``decoder=True`` and ``dim=48`` (its channel counts around the prompts are
hard-wired for 48); here those counts are written in terms of ``dim`` and equal the
official ones at 48, while the prompt sizes stay hard-wired as in the official code
(``prompt_dim`` 64/128/320, ``prompt_len`` 5, ``prompt_size`` 64/32/16).

Exact speed-ups over the official code (outputs agree to float rounding): the network
runs in ``channels_last`` memory format (1x1 and depthwise convolutions and the per-pixel
layer norms are much faster on CPU), layer norms use ``F.layer_norm``, attention works on
views instead of ``rearrange`` copies, and the prompt mixture is one matrix product
instead of a ``repeat`` of the prompt tensor per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramir.models.restormer import (
    RestormerFamily,
    TransformerBlock,
    _PatchEmbed,
    _Upsample,
    is_restormer_layout,
    restormer_kwargs,
)

__all__ = [
    "RAMPromptIR",
    "PromptGenBlock",
    "TransformerBlock",
    "detect",
    "kwargs_from_state_dict",
]

# Hard-wired prompt settings of the official code: (prompt_dim, prompt_len, prompt_size)
# for prompt1 (decoder level 1, after decoder_level2), prompt2 and prompt3 (bottleneck).
_PROMPTS = {1: (64, 5, 64), 2: (128, 5, 32), 3: (320, 5, 16)}


class PromptGenBlock(nn.Module):
    """Prompt generation: an input-conditioned mixture of ``prompt_len`` learned prompts.

    ``(B, lin_dim, H, W)`` -> ``(B, prompt_dim, H, W)``: softmax weights from a linear
    layer on the spatial mean of the input mix the prompts ``(prompt_dim, S, S)``; the mix
    is resized bilinearly to ``H x W`` (``align_corners=False``, the ``F.interpolate``
    default the official code uses) and passed through a 3x3 convolution.
    """

    def __init__(
        self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96, lin_dim: int = 192
    ) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(
            torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size)
        )
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        # A module (no parameters) so tiled restoration can give it whole-image statistics.
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        _, n, c, s, _ = self.prompt_param.shape
        weights = F.softmax(self.linear_layer(self.pool(x).flatten(1)), dim=1)  # (B, n)
        prompt = (weights @ self.prompt_param.reshape(n, c * s * s)).view(b, c, s, s)
        # channels_last before resizing: the small tensor is copied, the large one not.
        prompt = prompt.contiguous(memory_format=torch.channels_last)
        prompt = F.interpolate(prompt, size=(h, w), mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


class RAMPromptIR(RestormerFamily):
    """RAM-PromptIR backbone (35,376,967 parameters at the defaults).

    ``forward(lq, mask=None)``: ``lq`` ``(B, 3, H, W)`` normalised (ImageNet mean/std by
    default, see ``self.normalization``), ``H, W >= 9``; ``mask`` ``(B|1, H, W)``, 1 =
    hidden, hidden pixels become zeros. The input is reflect-padded to a multiple of 16
    and the prediction (same shape and space as ``lq``) cropped back.

    Args:
        decoder: must be True (the prompt blocks; the official network does not run
            without them).
        normalization: the image normalisation the model expects (``'imagenet'`` as in
            the RAM reference, or ``'none'``).
        **kwargs: PromptIR's other keywords, Restormer's (:class:`RestormerFamily`):
            ``inp_channels`` = ``out_channels`` (3), ``dim``, ``num_blocks`` (the
            decoder levels reuse the first three), ``num_refinement_blocks``, ``heads``
            (the ``noise_level*`` blocks use ``heads[2]``), ``ffn_expansion_factor``,
            ``bias``, ``LayerNorm_type``.
    """

    input_multiple = 16
    # Reflect padding to 16 needs a pad smaller than the image: 16 - 9 = 7 < 9.
    min_size = 9

    def __init__(
        self, *, decoder: bool = True, normalization: str = "imagenet", **kwargs: Any
    ) -> None:
        if not decoder:
            raise ValueError(
                "RAMPromptIR needs decoder=True: the official PromptIR code only runs with "
                "its prompt blocks (its channel counts assume them)"
            )
        super().__init__(normalization=normalization, **kwargs)
        if self.in_chans != self.out_chans:
            raise ValueError(
                f"the global residual needs inp_channels == out_channels, got "
                f"{self.in_chans} and {self.out_chans}"
            )
        self.decoder = decoder

        s = self.settings
        heads, num_blocks, bias = s.heads, s.num_blocks, s.bias
        dim, d2, d3, d4 = s.dim, s.dim * 2, s.dim * 4, s.dim * 8
        p1, p2, p3 = (_PROMPTS[i][0] for i in (1, 2, 3))

        self.patch_embed = _PatchEmbed(self.in_chans, dim)
        self.prompt1 = PromptGenBlock(*_PROMPTS[1], lin_dim=d2)
        self.prompt2 = PromptGenBlock(*_PROMPTS[2], lin_dim=d3)
        self.prompt3 = PromptGenBlock(*_PROMPTS[3], lin_dim=d4)

        self.add_encoder()

        # Bottleneck -> level 3: the prompt block reduces to d3 before upsampling.
        self.up4_3 = _Upsample(d3)
        self.reduce_chan_level3 = nn.Conv2d(d3 // 2 + d3, d3, kernel_size=1, bias=bias)
        self.noise_level3 = self.block(d4 + p3, heads[2])
        self.reduce_noise_level3 = nn.Conv2d(d4 + p3, d3, kernel_size=1, bias=bias)
        self.decoder_level3 = self.blocks(d3, heads[2], num_blocks[2])

        self.up3_2 = _Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.noise_level2 = self.block(d3 + p2, heads[2])
        self.reduce_noise_level2 = nn.Conv2d(d3 + p2, d3, kernel_size=1, bias=bias)
        self.decoder_level2 = self.blocks(d2, heads[1], num_blocks[1])

        self.up2_1 = _Upsample(d2)  # no 1x1 channel reduction at level 1
        self.noise_level1 = self.block(d2 + p1, heads[2])
        self.reduce_noise_level1 = nn.Conv2d(d2 + p1, d2, kernel_size=1, bias=bias)
        self.decoder_level1 = self.blocks(d2, heads[0], num_blocks[0])

        self.refinement = self.blocks(d2, heads[0], s.num_refinement_blocks)
        self.output = nn.Conv2d(d2, self.out_chans, kernel_size=3, padding=1, bias=bias)

    @staticmethod
    def _prompted(
        x: torch.Tensor, prompt: PromptGenBlock, mix: TransformerBlock, reduce: nn.Conv2d
    ) -> torch.Tensor:
        return reduce(mix(torch.cat([x, prompt(x)], dim=1)))

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised, ``H, W`` multiples of 16 -> same shape."""
        inp = x.contiguous(memory_format=torch.channels_last)
        enc1, enc2, enc3, latent = self.encode(self.patch_embed(inp))

        latent = self._prompted(latent, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1))
        dec3 = self.decoder_level3(dec3)

        dec3 = self._prompted(dec3, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self.decoder_level2(dec2)

        dec2 = self._prompted(dec2, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1))
        dec1 = self.refinement(dec1)
        return (self.output(dec1) + inp).contiguous()


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """A RAM-PromptIR state dict: the Restormer layout with PromptIR's prompt blocks but
    without the unused layers of the original PromptIR release (``chnl_reduce1``)."""
    return (
        is_restormer_layout(state_dict)
        and "prompt1.prompt_param" in state_dict
        and "chnl_reduce1.weight" not in state_dict
    )


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The Restormer-family sizes of the weights; the input stays ImageNet-normalised
    (the constructor's default, RAM's release convention)."""
    return restormer_kwargs(state_dict)

"""RAM-SwinIR: the SwinIR backbone of RAM, weight-compatible with the official checkpoints.

Architecture (docs/method.md#backbones): SwinIR for restoration (patch 1, upscale 1) with

* a **1x1** ``conv_first``, no mean shift and no image-level residual;
* the body output ``conv_after_body(feats) + patch_unembed(patch_embed(conv_first(x)))``
  (``patch_embed`` includes its LayerNorm), then ``conv_last``;
* a ``mask_token`` parameter of shape ``(1, 3, img_size, img_size)``, kept for
  state-dict compatibility; the official pre-training replaces hidden pixels by **zeros**
  (its mask generator passes a zero token), which is our default too.

Parameter names, shapes and their order equal the official ones, so an official
``params``/``params_ema`` dict loads directly; its ``attn_mask`` and
``relative_position_index`` buffers are recomputed here and ignored on load.

The Swin layers, and the one speed switch ``attn_impl`` (``"fast"`` grouped attention
with cached window plans, or ``"plain"``, the textbook computation), live in
:mod:`ramir.models.swin`, shared with classic SwinIR (:mod:`ramir.models.swinir`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ramir.models.swin import _to_image
from ramir.models.swinir import SwinIRFamily, is_swin_layout, swin_kwargs

__all__ = ["RAMSwinIR", "MASK_TOKENS", "detect", "kwargs_from_state_dict"]

MASK_TOKENS = ("zero", "learnable")


class RAMSwinIR(SwinIRFamily):
    """RAM-SwinIR backbone; ``(B, 3, H, W)`` normalised -> ``(B, 3, H, W)`` normalised.

    Keyword names are the official SwinIR ones (:class:`~ramir.models.swinir.SwinIRFamily`,
    passed on); defaults are the paper's full size (11,512,131 parameters). Only
    ``patch_size=1``, ``upscale=1`` (restoration) and no upsampler are supported, as in
    RAM.

    Args:
        normalization: input/target normalisation used by callers (``"imagenet"``).
        mask_token: ``"zero"`` (hidden pixels become 0 in normalised space, the official
            pre-training) or ``"learnable"`` (the ``mask_token`` parameter; for inputs
            other than ``img_size`` it is tiled periodically from the top-left corner).
        attn_impl: ``"fast"`` or ``"plain"`` (see the module docstring).
        **kwargs: the official keywords (:class:`~ramir.models.swinir.SwinIRFamily`):
            ``img_size`` (the training patch size, 64) also sets the ``mask_token`` shape
            ``(1, 3, S, S)``; inputs of any size ``>= window_size`` work. ``img_range``
            and ``upsampler`` are accepted for official option dicts, but only ``1.0``
            and ``""`` (the official RAM forward neither rescales nor upsamples).
    """

    first_kernel = 1

    def __init__(
        self,
        *,
        normalization: str = "imagenet",
        mask_token: str = "zero",
        attn_impl: str = "fast",
        **kwargs: Any,
    ) -> None:
        if mask_token not in MASK_TOKENS:
            raise ValueError(f"unknown mask_token {mask_token!r}; choose one of: {MASK_TOKENS}")
        super().__init__(normalization=normalization, **kwargs)
        self.mask_token_mode = mask_token
        self.mask_token.requires_grad_(mask_token == "learnable")
        self.min_size = self.window_size
        self.set_attention_impl(attn_impl)

    def _check_options(
        self, *, patch_size: int, upscale: int, upsampler: str, img_range: float, in_chans: int
    ) -> None:
        if patch_size != 1:
            raise ValueError(f"RAM-SwinIR supports patch_size=1 only, got {patch_size}")
        if upscale != 1:
            raise ValueError(
                f"RAM-SwinIR restores at the input resolution: upscale must be 1, got {upscale}"
            )
        if upsampler:
            raise ValueError(
                f"RAM-SwinIR has no upsampler (upscale 1), got upsampler={upsampler!r}"
            )
        if img_range != 1.0:
            raise ValueError(
                f"RAM-SwinIR does not rescale its input (img_range must be 1.0, got "
                f"{img_range}); normalise images with model.normalization instead"
            )

    def _add_inputs(self, img_hw: tuple[int, int], img_range: float) -> tuple[torch.Tensor, ...]:
        """The ``mask_token`` parameter ``(1, C, S, S)``, first in the official order
        (learnable or not: set once the network is built)."""
        self.mask_token = nn.Parameter(torch.zeros(1, self.in_chans, *img_hw), requires_grad=False)
        return (self.mask_token,)

    def mask_token_for(self, x: torch.Tensor) -> torch.Tensor | float:
        """0.0 for ``mask_token="zero"``; else the learnable token ``(1, C, H, W)`` for
        an input of size ``H x W`` (tiled periodically when it differs from ``img_size``)."""
        if self.mask_token_mode == "zero":
            return 0.0
        token = self.mask_token
        h, w = x.shape[-2:]
        th, tw = token.shape[-2:]
        if (h, w) != (th, tw):
            token = token.repeat(1, 1, math.ceil(h / th), math.ceil(w / tw))[..., :h, :w]
        return token.to(x.dtype)

    def extra_metadata(self) -> dict:
        return {**super().extra_metadata(), "mask_token": self.mask_token_mode}

    # -- network --------------------------------------------------------------------------
    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` with H, W multiples of the window -> same shape."""
        x_size = (x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(self.conv_first(x))  # B, L, C
        shallow = _to_image(tokens, x_size)
        out = self.conv_last(self.deep_features(tokens, x_size) + shallow)
        return out.contiguous()


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """A RAM-SwinIR state dict: the SwinIR layout (:func:`~ramir.models.swinir.is_swin_layout`)
    with a ``mask_token`` or a 1x1 ``conv_first`` (classic SwinIR has neither)."""
    return is_swin_layout(state_dict) and (
        "mask_token" in state_dict or state_dict["conv_first.weight"].shape[-1] == 1
    )


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The SwinIR-family sizes and, from the ``mask_token`` shape, ``img_size``; the input
    stays ImageNet-normalised (the constructor's default, RAM's release convention)."""
    kwargs = swin_kwargs(state_dict)
    if "mask_token" in state_dict:
        kwargs["img_size"] = int(state_dict["mask_token"].shape[-1])
    return kwargs

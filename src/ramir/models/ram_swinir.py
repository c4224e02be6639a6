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
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ramir.models.swin import Conv2d, SwinIRBase, _to_image
from ramir.models.swinir import is_swin_layout, swin_kwargs

__all__ = ["RAMSwinIR", "MASK_TOKENS", "detect", "kwargs_from_state_dict"]

MASK_TOKENS = ("zero", "learnable")


class RAMSwinIR(SwinIRBase):
    """RAM-SwinIR backbone; ``(B, 3, H, W)`` normalised -> ``(B, 3, H, W)`` normalised.

    Keyword names are the official SwinIR ones; defaults are the paper's full size
    (11,512,131 parameters). Only ``patch_size=1``, ``upscale=1`` (restoration) and no
    upsampler are supported, as in RAM.

    Args:
        img_size: training patch size; sets the ``mask_token`` shape ``(1, 3, S, S)`` and,
            as in the official code, disables shifting (and shrinks the window to ``S``)
            when ``S <= window_size``. Inputs of any size ``>= window_size`` work.
        ape: absolute position embedding (only for inputs of exactly ``img_size``).
        img_range, upsampler: accepted for official option dicts; only ``1.0`` and ``""``
            (the official RAM forward neither rescales nor upsamples).
        drop_path_rate: stochastic depth, linearly increasing over blocks (training only).
        use_checkpoint: gradient checkpointing of every Swin block while training.
        normalization: input/target normalisation used by callers (``"imagenet"``).
        mask_token: ``"zero"`` (hidden pixels become 0 in normalised space, the official
            pre-training) or ``"learnable"`` (the ``mask_token`` parameter; for inputs
            other than ``img_size`` it is tiled periodically from the top-left corner).
        attn_impl: ``"fast"`` or ``"plain"`` (see the module docstring).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 64,
        patch_size: int = 1,
        in_chans: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 1,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        normalization: str = "imagenet",
        mask_token: str = "zero",
        attn_impl: str = "fast",
    ) -> None:
        super().__init__(normalization=normalization)
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
        if mask_token not in MASK_TOKENS:
            raise ValueError(f"unknown mask_token {mask_token!r}; choose one of: {MASK_TOKENS}")
        if isinstance(img_size, int):
            img_hw = (img_size, img_size)
        else:
            img_hw = (int(img_size[0]), int(img_size[1]))
        self.in_chans = self.out_chans = in_chans
        self.mask_token_mode = mask_token
        self.mask_token = nn.Parameter(
            torch.zeros(1, in_chans, *img_hw), requires_grad=mask_token == "learnable"
        )
        self.conv_first = Conv2d(in_chans, embed_dim, 1)
        self._build_body(
            img_hw=img_hw,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            ape=ape,
            patch_norm=patch_norm,
            use_checkpoint=use_checkpoint,
            resi_connection=resi_connection,
        )
        self.min_size = self.window_size
        self.conv_last = Conv2d(embed_dim, in_chans, 3, 1, 1)
        self._init_weights(self.mask_token)
        self.set_attention_impl(attn_impl)

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

"""The RAM++ pretraining network: Restormer without its image residual (docs/rampp.md).

The release's ``AdaSAM_RestormerWoskip`` ("without skip") is Restormer (Zamir et al.,
CVPR 2022; :mod:`ramir.models.restormer`, whose blocks this module reuses) with three
changes:

* **the mask at the input**: ``forward(lq, mask, mask_tokens)`` first replaces hidden
  pixels, ``lq * (1 - mask) + mask_tokens * mask`` with ``mask`` ``(B, 1, H, W)`` (or
  ``(B|1, H, W)``) broadcast over the channels and ``mask_tokens`` zeros by default
  (zeros in ImageNet-normalised space: the mean colour), as the AdaSAM generator gives;
* **reflect padding to a multiple of 16** inside the forward (bottom/right), cropped
  back after, so any size from 9 x 9 works (the release pads to 16 too);
* **no global residual**: the output convolution's result is the prediction, the input
  is not added back.

Its input is ImageNet-normalised (``normalization='imagenet'``), as all RAM++ data.
Parameter names, shapes and order equal the release's, which are exactly Restormer's:
a release file of this network has the same keys and shapes as a plain Restormer
release, so the keys cannot tell the two apart. :func:`detect` therefore needs a hint: a
Restormer-layout file is this network when its file name says ``woskip`` (the release's
``RestormerWoSkip.pth``) or when the caller names the architecture
(``load_model(path, arch="adasam_restormer_woskip")``); any other Restormer-layout file
stays a plain Restormer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ramir.masking import apply_mask
from ramir.models.base import check_images
from ramir.models.restormer import RestormerFamily, _PatchEmbed, restormer_kwargs

__all__ = ["AdaSAMRestormerWoskip", "detect", "kwargs_from_state_dict", "is_woskip_layout", "ARCH"]

ARCH = "adasam_restormer_woskip"


class AdaSAMRestormerWoskip(RestormerFamily):
    """Restormer without the image residual (26,126,644 parameters at the defaults).

    ``forward(lq, mask=None, mask_tokens=None)``: ``lq`` ``(B, 3, H, W)`` normalised
    (ImageNet by default), ``H, W >= 9``; ``mask`` ``(B, 1, H, W)``, ``(B, H, W)`` or
    ``(1, H, W)`` with 1 = hidden (soft values blend); ``mask_tokens`` what hidden pixels
    become, broadcastable to ``lq`` (default zeros). Returns ``(B, 3, H, W)`` in the same
    space.

    Args:
        normalization: the input space: ``'imagenet'`` (the release's data) or ``'none'``.
        **kwargs: Restormer's keywords (:class:`~ramir.models.restormer.RestormerFamily`;
            ``inp_channels`` and ``out_channels`` may differ: no residual;
            ``LayerNorm_type`` ``'WithBias'`` in the release).
    """

    input_multiple = 16
    min_size = 9  # reflect padding to 16 needs a pad smaller than the image: 16 - 9 < 9

    def __init__(self, *, normalization: str = "imagenet", **kwargs: Any) -> None:
        super().__init__(normalization=normalization, **kwargs)
        s = self.settings
        self.patch_embed = _PatchEmbed(self.in_chans, s.dim)
        self.add_encoder()
        self.add_decoder()
        self.output = nn.Conv2d(s.dim * 2, self.out_chans, kernel_size=3, padding=1, bias=s.bias)

    def forward(  # type: ignore[override]
        self,
        lq: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_tokens: torch.Tensor | None = None,
        *,
        check_finite: bool = True,
    ) -> torch.Tensor:
        """Restore ``lq`` ``(B, C, H, W)`` with ``mask``'s pixels hidden (see the class)."""
        if mask is not None and mask.dim() == 4:
            if mask.shape[1] != 1:
                raise ValueError(f"a 4-D mask must be (B, 1, H, W), got shape {tuple(mask.shape)}")
            mask = mask[:, 0]
        if mask_tokens is not None:
            if mask is None:
                raise ValueError("mask_tokens without a mask: pass the mask too")
            check_images(lq, self.in_chans, self.min_size, finite=check_finite)
            lq = apply_mask(lq, mask, mask_tokens.to(lq.dtype))
            return super().forward(lq, check_finite=False)  # checked above
        return super().forward(lq, mask, check_finite=check_finite)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)``, ``H, W`` multiples of 16 -> ``(B, C_out, H, W)``, no residual."""
        inp = x.contiguous(memory_format=torch.channels_last)
        return self.output(self.decode(*self.encode(self.patch_embed(inp)))).contiguous()


def is_woskip_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The names of this network: the Restormer layout with its output convolution, and
    neither the dual-pixel ``skip_conv`` nor PromptIR's prompts (whatever the hint)."""
    keys = set(state_dict)
    need = {"patch_embed.proj.weight", "encoder_level1.0.attn.temperature", "output.weight"}
    return (
        need <= keys
        and "skip_conv.weight" not in keys
        and not any(k.startswith("prompt") for k in keys)
    )


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """Whether ``state_dict`` is the RAM++ pretraining network's: a Restormer layout
    (:func:`is_woskip_layout`) when ``hint`` says it is.

    ``hint`` is the file name or the architecture the caller asked for: it must contain
    ``woskip`` (case-insensitive: ``RestormerWoSkip.pth``, ``adasam_restormer_woskip``).
    Without such a hint the answer is no even for a fitting layout, because a plain
    Restormer release has the same keys and shapes (see the module docstring). A
    dual-pixel layout (``skip_conv``) or one with PromptIR's prompts never fits.
    """
    if hint is None or "woskip" not in hint.lower():
        return False
    return is_woskip_layout(state_dict)


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The sizes read from the shapes: ``dim``, block counts, heads, the GDFN factor,
    ``bias``, ``LayerNorm_type``, channels in and out (ImageNet-normalised input, the
    constructor's default)."""
    return {
        "inp_channels": int(state_dict["patch_embed.proj.weight"].shape[1]),
        "out_channels": int(state_dict["output.weight"].shape[0]),
        **restormer_kwargs(state_dict),
    }

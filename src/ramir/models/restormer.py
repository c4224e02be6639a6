"""Restormer (Zamir et al., CVPR 2022) and the transformer blocks PromptIR builds on.

A 4-level U-Net of transformer blocks with multi-Dconv-head transposed attention (MDTA,
attention across channels, so its cost grows linearly with the pixels) and gated-dconv
feed-forward networks (GDFN). Levels 2-4 have 2x, 4x, 8x the width of level 1 at 1/2,
1/4, 1/8 of the resolution (3x3 conv + PixelUnshuffle down, 3x3 conv + PixelShuffle up);
decoder levels 3 and 2 concatenate the skip and reduce it by a 1x1 conv, level 1 keeps
the doubled width, then ``num_refinement_blocks`` blocks and a 3x3 output conv. The
image-level residual adds the input; the dual-pixel defocus model (6 input channels: the
two views) instead adds a 1x1 projection of the level-1 embedding before the output conv.

Module names, shapes and order equal swz30's ``restormer_arch.py``, so its released
``.pth`` files load. Their input is RGB (or gray) in [0, 1] without normalisation
(``normalization='none'``, the default here), reflect-padded to a multiple of 8 as their
test scripts do. :mod:`ramir.models.ram_promptir` and :mod:`ramir.models.promptir`
reuse these blocks. Exact speed-ups over the upstream code (outputs agree to float
rounding): ``channels_last`` memory, ``F.layer_norm``, attention on views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramir.models.base import RestorationModel
from ramir.models.detection import count_children, ffn_expansion_factor
from ramir.models.layers import BiasFreeLayerNorm2d, LayerNorm2d

__all__ = [
    "Restormer",
    "RestormerFamily",
    "RestormerSettings",
    "TransformerBlock",
    "Attention",
    "FeedForward",
    "detect",
    "kwargs_from_state_dict",
    "is_restormer_layout",
    "restormer_kwargs",
]


class _LayerNorm(nn.Module):
    """Official ``LayerNorm`` wrapper (parameters live in ``.body``), over channels."""

    def __init__(self, dim: int, layer_norm_type: str) -> None:
        super().__init__()
        if layer_norm_type == "BiasFree":
            self.body: nn.Module = BiasFreeLayerNorm2d(dim, eps=1e-5)
        else:  # the official code treats every other value as 'WithBias'
            self.body = LayerNorm2d(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN): ``(B, C, H, W)`` -> same shape."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        gated = F.gelu(x1)
        # In place when no graph is recorded (saves one large temporary at inference).
        gated = gated * x2 if torch.is_grad_enabled() else gated.mul_(x2)
        return self.project_out(gated)


class Attention(nn.Module):
    """Multi-Dconv-head transposed self-attention (MDTA): attention across channels.

    Per head, with ``q, k`` L2-normalised over the pixels:
    ``softmax(q k^T * temperature) v`` where ``q, k, v`` are ``(C/heads, H*W)``.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(
            dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        qkv = self.qkv_dwconv(self.qkv(x))
        # (B, H*W, 3, heads, C/heads): a view when qkv is channels_last.
        qkv = qkv.permute(0, 2, 3, 1).reshape(b, h * w, 3, heads, c // heads)
        q, k, v = qkv.unbind(2)
        # normalize(q) normalize(k)^T == (q k^T) / (|q| |k|^T): scaling the small
        # (C/heads)^2 matrix instead of dividing q and k (as F.normalize, eps 1e-12).
        q_norm = torch.linalg.vector_norm(q, dim=1).clamp_min(1e-12)  # (B, heads, C/heads)
        k_norm = torch.linalg.vector_norm(k, dim=1).clamp_min(1e-12)
        attn = torch.einsum("bnhc,bnhd->bhcd", q, k)
        scale = self.temperature / (q_norm.unsqueeze(-1) * k_norm.unsqueeze(-2))
        attn = (attn * scale).softmax(dim=-1)
        out = torch.einsum("bhcd,bnhd->bnhc", attn, v)  # (B, H*W, heads, C/heads)
        out = out.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.project_out(out)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        bias: bool,
        LayerNorm_type: str,  # noqa: N803 - official keyword name
    ) -> None:
        super().__init__()
        self.norm1 = _LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = _LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Downsample(nn.Module):
    """3x3 conv to ``n_feat // 2`` channels, then PixelUnshuffle(2): ``(B, 2n, H/2, W/2)``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Upsample(nn.Module):
    """3x3 conv to ``2 n_feat`` channels, then PixelShuffle(2): ``(B, n/2, 2H, 2W)``."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _PatchEmbed(nn.Module):
    """Overlapped patch embedding: one 3x3 convolution (``patch_embed.proj``)."""

    def __init__(self, in_c: int, embed_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@dataclass(frozen=True)
class RestormerSettings:
    """The sizes and layer settings of a Restormer-family network (its constructor's
    keywords but the image channels)."""

    dim: int
    num_blocks: tuple[int, ...]
    num_refinement_blocks: int
    heads: tuple[int, ...]
    ffn_expansion_factor: float
    bias: bool
    layer_norm_type: str


class RestormerFamily(RestorationModel):
    """The constructor that Restormer, PromptIR, RAM-PromptIR and RAM++'s networks share.

    Its keywords are those of swz30's ``Restormer`` (and of PromptIR's, which copies
    them), with the released size as defaults; a network's own constructor takes its
    own keywords and passes these on with ``**kwargs`` (:func:`ramir.models.build_model`
    and ``ramir models`` list them with the network's own:
    :func:`ramir.registry.keyword_parameters`), then registers its modules in its
    release's order with :meth:`blocks`, :meth:`add_encoder` and :meth:`add_decoder`.

    Args:
        inp_channels, out_channels: image channels in and out (``self.in_chans``,
            ``self.out_chans``).
        dim: width of level 1 (levels 2-4: 2x, 4x, 8x at 1/2, 1/4, 1/8 resolution).
        num_blocks: transformer blocks of encoder levels 1-3 (reused by the decoder) and
            the bottleneck.
        num_refinement_blocks: blocks after the decoder, at full resolution.
        heads: attention heads per level.
        ffn_expansion_factor: GDFN hidden width over block width (``int(dim * f)``).
        bias: biases in the blocks' convolutions and the 1x1/output convolutions.
        LayerNorm_type: ``'WithBias'`` or ``'BiasFree'``.
        normalization: the input space (each network gives its release's default).
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803 - official keyword name
        *,
        normalization: str,
    ) -> None:
        super().__init__(normalization=normalization)
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(
                f"num_blocks and heads need 4 entries (levels 1-3 and the bottleneck), "
                f"got num_blocks={list(num_blocks)}, heads={list(heads)}"
            )
        if LayerNorm_type not in ("WithBias", "BiasFree"):
            raise ValueError(
                f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {LayerNorm_type!r}"
            )
        self.in_chans, self.out_chans = inp_channels, out_channels
        self.settings = RestormerSettings(
            dim,
            tuple(num_blocks),
            num_refinement_blocks,
            tuple(heads),
            ffn_expansion_factor,
            bias,
            LayerNorm_type,
        )

    def block(self, width: int, n_heads: int) -> TransformerBlock:
        """One transformer block of this network's settings."""
        s = self.settings
        return TransformerBlock(width, n_heads, s.ffn_expansion_factor, s.bias, s.layer_norm_type)

    def blocks(self, width: int, n_heads: int, n: int) -> nn.Sequential:
        """``n`` transformer blocks of this network's settings."""
        return nn.Sequential(*[self.block(width, n_heads) for _ in range(n)])

    def add_encoder(self) -> None:
        """Register the encoder levels 1-3 and the bottleneck (official names
        ``encoder_level1``, ``down1_2``, ..., ``latent``, in the official order)."""
        s = self.settings
        dim, heads, num_blocks = s.dim, s.heads, s.num_blocks
        self.encoder_level1 = self.blocks(dim, heads[0], num_blocks[0])
        self.down1_2 = _Downsample(dim)
        self.encoder_level2 = self.blocks(dim * 2, heads[1], num_blocks[1])
        self.down2_3 = _Downsample(dim * 2)
        self.encoder_level3 = self.blocks(dim * 4, heads[2], num_blocks[2])
        self.down3_4 = _Downsample(dim * 4)
        self.latent = self.blocks(dim * 8, heads[3], num_blocks[3])

    def add_decoder(self) -> None:
        """Register Restormer's decoder levels 3-1 and the refinement blocks (official
        names ``up4_3``, ``reduce_chan_level3``, ..., ``refinement``, in the official
        order; the output convolution is the network's own)."""
        s = self.settings
        heads, num_blocks = s.heads, s.num_blocks
        d2, d3, d4 = s.dim * 2, s.dim * 4, s.dim * 8
        self.up4_3 = _Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, kernel_size=1, bias=s.bias)
        self.decoder_level3 = self.blocks(d3, heads[2], num_blocks[2])
        self.up3_2 = _Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=s.bias)
        self.decoder_level2 = self.blocks(d2, heads[1], num_blocks[1])
        self.up2_1 = _Upsample(d2)  # no 1x1 channel reduction at level 1
        self.decoder_level1 = self.blocks(d2, heads[0], num_blocks[0])
        self.refinement = self.blocks(d2, heads[0], s.num_refinement_blocks)

    def encode(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The level-1 embedding ``(B, dim, H, W)`` -> the outputs of encoder levels
        1-3 and of the bottleneck (``(B, dim * 2**i, H / 2**i, W / 2**i)``, i = 0..3)."""
        enc1 = self.encoder_level1(emb)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        return enc1, enc2, enc3, self.latent(self.down3_4(enc3))

    def decode(
        self, enc1: torch.Tensor, enc2: torch.Tensor, enc3: torch.Tensor, latent: torch.Tensor
    ) -> torch.Tensor:
        """Restormer's decoder and refinement (:meth:`add_decoder`) on :meth:`encode`'s
        outputs -> ``(B, 2 dim, H, W)``, before the output convolution."""
        dec3 = self.decoder_level3(
            self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1))
        )
        dec2 = self.decoder_level2(
            self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        )
        return self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1)))


class Restormer(RestormerFamily):
    """Restormer backbone (26,126,644 parameters at the defaults, the released size).

    ``forward(lq, mask=None)``: ``lq`` ``(B, inp_channels, H, W)`` in [0, 1] (or the
    space of ``normalization``), ``H, W >= 5``; reflect-padded to a multiple of 8 and
    cropped back. Returns ``(B, out_channels, H, W)``.

    Args:
        dual_pixel_task: the dual-pixel defocus variant (``inp_channels=6``: the two
            views, 3 out).
        normalization: ``'none'`` (releases) or ``'imagenet'``.
        **kwargs: the family's keywords (:class:`RestormerFamily`): ``inp_channels``,
            ``out_channels`` (3 for colour, 1 for gray denoising), ``dim``,
            ``num_blocks``, ``num_refinement_blocks``, ``heads``,
            ``ffn_expansion_factor``, ``bias``, ``LayerNorm_type`` (``'WithBias'`` for
            deraining and deblurring, ``'BiasFree'`` for the denoising releases).
    """

    input_multiple = 8
    min_size = 5  # reflect padding to 8 needs a pad smaller than the image

    def __init__(
        self, *, dual_pixel_task: bool = False, normalization: str = "none", **kwargs: Any
    ) -> None:
        super().__init__(normalization=normalization, **kwargs)
        if not dual_pixel_task and self.in_chans != self.out_chans:
            raise ValueError(
                f"the image residual needs inp_channels == out_channels, got {self.in_chans} "
                f"and {self.out_chans} (dual_pixel_task=True takes 6 channels in, 3 out)"
            )
        self.dual_pixel_task = dual_pixel_task
        s = self.settings
        self.patch_embed = _PatchEmbed(self.in_chans, s.dim)
        self.add_encoder()
        self.add_decoder()
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(s.dim, s.dim * 2, kernel_size=1, bias=s.bias)
        self.output = nn.Conv2d(s.dim * 2, self.out_chans, kernel_size=3, padding=1, bias=s.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)``, ``H, W`` multiples of 8 -> ``(B, C_out, H, W)``."""
        inp = x.contiguous(memory_format=torch.channels_last)
        emb = self.patch_embed(inp)
        dec1 = self.decode(*self.encode(emb))
        if self.dual_pixel_task:
            return self.output(dec1 + self.skip_conv(emb)).contiguous()
        return (self.output(dec1) + inp).contiguous()


# ----------------------------------------------------------------------------- detection
# The Restormer layout is shared by PromptIR, RAM-PromptIR and RAM++'s networks, whose
# own detect functions are asked before this one (ramir.models.detectors).

LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
"""The four levels of a Restormer-family network (widths ``dim * 2**i``)."""


def is_restormer_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The names every Restormer-family state dict has: a patch embedding and a first
    attention block with its per-head temperature."""
    return "patch_embed.proj.weight" in state_dict and (
        "encoder_level1.0.attn.temperature" in state_dict
    )


def restormer_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments every Restormer-family network shares, read from the
    weights: ``dim``, ``num_blocks``, ``num_refinement_blocks``, ``heads``,
    ``ffn_expansion_factor``, ``bias`` and ``LayerNorm_type``."""
    keys = set(state_dict)
    dim = int(state_dict["patch_embed.proj.weight"].shape[0])
    heads = [
        int(state_dict[f"{p}.0.attn.temperature"].shape[0])
        if f"{p}.0.attn.temperature" in state_dict
        else 1
        for p in LEVELS
    ]
    return {
        "dim": dim,
        "num_blocks": [count_children(keys, p) for p in LEVELS],
        "num_refinement_blocks": count_children(keys, "refinement"),
        "heads": heads,
        "ffn_expansion_factor": ffn_expansion_factor(
            state_dict, {p: dim * 2**i for i, p in enumerate(LEVELS)}
        ),
        "bias": "encoder_level1.0.attn.qkv.bias" in keys,
        "LayerNorm_type": "WithBias" if "encoder_level1.0.norm1.body.bias" in keys else "BiasFree",
    }


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """A Restormer release (swz30's): the Restormer layout without PromptIR's prompts."""
    return is_restormer_layout(state_dict) and "prompt1.prompt_param" not in state_dict


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A release's arguments: the shared ones, the channels in and out, the dual-pixel
    variant (``skip_conv``), and its input convention (RGB in [0, 1])."""
    return {
        **restormer_kwargs(state_dict),
        "inp_channels": int(state_dict["patch_embed.proj.weight"].shape[1]),
        "out_channels": int(state_dict["output.weight"].shape[0]),
        "dual_pixel_task": "skip_conv.weight" in state_dict,
        "normalization": "none",
    }

"""AdaSAM: the adaptive mask generator of RAM++ (Zhang et al., 2025; docs/rampp.md).

RAM++ replaces RAM's random pixel mask by one drawn from a small ViT that scores image
patches. The generator, ``AdaptiveMaskPixGenerator`` as the release names it:

1. **tokens**: a ``patch_size`` x ``patch_size`` convolution with stride ``patch_size``
   turns ``(B, 3, S, S)`` into ``N = (S / patch_size)^2`` tokens of width ``embed_dim``;
2. **position**: a table ``(1, N, embed_dim)`` is added, learnable
   (``use_learnable_pos_emb``, the release's setting; truncated-normal std 0.02) or the
   fixed sinusoid table of "Attention is all you need" (a persistent buffer);
3. **scorer**: one pre-norm ViT block (``x + attn(LN(x))``, ``x + mlp(LN(x))``; 8 heads,
   MLP ratio 4 with exact GELU, no qkv bias, dropout 0.1 after the attention projection
   and after the MLP, active in training mode; no attention dropout, no drop-path, no
   layer scale), a ``Linear(embed_dim, 1)`` and a softmax over the ``N`` tokens:
   ``token_probs`` ``(B, N)``, summing to 1 per image;
4. **pixels**: each token's probability is copied to its ``patch_size^2`` pixels,
   ``pixel_probs`` ``(B, 1, S, S)`` (not renormalised: they sum to ``patch_size^2``);
5. **mask**: ``n = int(S * S * (1 - int(N * (1 - mask_ratio)) / N))`` pixels (8192 of
   16384 at the release's 128 x 128, ratio 0.5) are drawn per image by
   ``torch.multinomial(pixel_probs, n, replacement=False)``: a pixel of a likely token is
   likely to be hidden. The mask ``(B, 1, S, S)`` holds 1.0 = hidden, 0.0 = visible.

No gradient flows through the draw (it is a sample, with no straight-through estimate):
the generator learns only through the probability loss of the pretraining step
(:func:`ramir.rampp.pretrain_losses`), which rewards it for hiding pixels that the
restoration network reconstructs badly.

**Size.** The position table has one row per token of the constructor's ``img_size``,
so the generator works on ``img_size`` x ``img_size`` inputs only (the release's
pretraining crops are 128 x 128); other sizes raise a ``ValueError`` that says so.
``img_size`` must be a multiple of ``patch_size``.

Parameter names, shapes and order equal the release's, so its ``net_mask_*.pth`` files
(BasicSR ``{'params', 'params_ema'}``) load; :func:`detect` recognises them. The release's
``mask_token`` parameter ``(1, 1, embed_dim)`` is never used there either; it is kept so
the files load. The release returns a third output, an all-zeros image of mask tokens;
here the restoration network's own token (zeros in normalised space) plays that part.

Randomness: the mask is drawn from ``generator`` (a ``torch.Generator``) when one is
given, else from PyTorch's global generator as the release does; dropout (training mode
only) always uses the global generator, as every PyTorch module does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ramir.models.base import RestorationModel, check_images

__all__ = [
    "AdaptiveMaskPixGenerator",
    "MaskDraw",
    "detect",
    "kwargs_from_state_dict",
    "sinusoid_table",
    "masked_pixels",
]


class MaskDraw(NamedTuple):
    """What :class:`AdaptiveMaskPixGenerator` returns.

    Attributes:
        mask: ``(B, 1, S, S)`` float, 1.0 = hidden, 0.0 = visible; no gradient.
        pixel_probs: ``(B, 1, S, S)`` each pixel's token probability (differentiable),
            the release's ``p_x_full``.
        token_probs: ``(B, N)`` the softmax over tokens (differentiable), ``p_x``.
    """

    mask: torch.Tensor
    pixel_probs: torch.Tensor
    token_probs: torch.Tensor


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The fixed position table ``(1, n_position, dim)``, float32.

    Entry ``(p, j)`` is ``sin(a)`` for even ``j`` and ``cos(a)`` for odd ``j``, with
    ``a = p / 10000^(2 * floor(j / 2) / dim)``, computed in float64 (as the release,
    with NumPy) and rounded to float32.
    """
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * (j // 2) / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]


def masked_pixels(img_size: int, patch_size: int, mask_ratio: float) -> int:
    """How many pixels the generator hides per image, the release's formula:
    ``int(S^2 * (1 - int(N * (1 - mask_ratio)) / N))`` with ``N = (S / patch_size)^2``."""
    n = (img_size // patch_size) ** 2
    visible = int(n * (1 - mask_ratio))
    return int(img_size * img_size * (1 - visible / n))


class _PatchEmbed(nn.Module):
    """Non-overlapping patch tokens: ``(B, C, S, S)`` -> ``(B, N, E)`` (``proj``: the conv)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention over tokens ``(B, N, E)`` -> ``(B, N, E)``.

    ``softmax(q k^T / sqrt(E / heads)) v`` per head, then ``proj`` and dropout
    ``proj_drop``. ``qkv`` has no bias; with ``qkv_bias`` the release's separate
    ``q_bias`` and ``v_bias`` (and no key bias) are added.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = proj_drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None and self.v_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(
            b, n, 3, self.num_heads, c // self.num_heads
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, E / heads) each
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, c))
        return F.dropout(out, self.proj_drop, self.training)


class _Mlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` then dropout ``drop`` (once, after ``fc2``)."""

    def __init__(self, dim: int, hidden: int, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.fc2(F.gelu(self.fc1(x))), self.drop, self.training)


class _Block(nn.Module):
    """Pre-norm ViT block on ``(B, N, E)``: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = _Attention(dim, num_heads, qkv_bias, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AdaptiveMaskPixGenerator(RestorationModel):
    """The AdaSAM mask generator (7,431,937 parameters at the defaults, the release's size).

    Not a restoration network: ``forward(img)`` draws a mask. See the module docstring.

    ``forward(img, generator=None)``: ``img`` ``(B, in_chans, img_size, img_size)`` in the
    normalised space of ``normalization`` (ImageNet, as the release's data). Returns a
    :class:`MaskDraw` ``(mask, pixel_probs, token_probs)``.

    Args:
        img_size: the one input size (square), a multiple of ``patch_size``; the release
            uses 128 (its pretraining crops).
        patch_size: token side in pixels (8).
        in_chans: input channels (3).
        embed_dim: token width (768).
        mask_ratio: fraction of pixels hidden, in [0, 1) (0.5); see :func:`masked_pixels`.
        use_learnable_pos_emb: a learned position table (the release's setting) or the
            fixed sinusoid one. Release files cannot tell them apart (same key).
        num_heads: attention heads (8, fixed in the release); must divide ``embed_dim``.
        mlp_ratio: MLP hidden width over ``embed_dim`` (4).
        qkv_bias: the release's optional ``q_bias``/``v_bias`` (off in the release).
        drop: dropout after the attention projection and after the MLP (0.1).
        normalization: the input space (``'imagenet'``, as the release's data).
    """

    # It draws masks; commands that restore images can refuse it by this flag.
    restores_images = False

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 8,
        in_chans: int = 3,
        embed_dim: int = 768,
        mask_ratio: float = 0.5,
        use_learnable_pos_emb: bool = True,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.1,
        normalization: str = "imagenet",
    ) -> None:
        super().__init__(normalization=normalization)
        if patch_size < 1 or img_size < patch_size or img_size % patch_size:
            raise ValueError(
                f"img_size must be a positive multiple of patch_size, got img_size={img_size}, "
                f"patch_size={patch_size}"
            )
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by {num_heads} heads")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.input_multiple = patch_size
        self.min_size = img_size
        self.mask_ratio = mask_ratio
        self.grid = img_size // patch_size
        self.num_patches = self.grid**2
        self.num_masked = masked_pixels(img_size, patch_size, mask_ratio)

        self.patch_embed = _PatchEmbed(in_chans, embed_dim, patch_size)
        if use_learnable_pos_emb:
            self.pos_embed_probs = nn.Parameter(torch.zeros(1, self.num_patches, embed_dim))
            nn.init.trunc_normal_(self.pos_embed_probs, std=0.02)
        else:
            self.register_buffer("pos_embed_probs", sinusoid_table(self.num_patches, embed_dim))
        self.get_token_probs = nn.Sequential(
            _Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop),
            nn.Linear(embed_dim, 1),
            nn.Flatten(start_dim=1),
        )
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))  # unused (release files)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _check(self, img: torch.Tensor, check_finite: bool) -> None:
        check_images(img, self.in_chans, 1, "img", finite=check_finite)
        h, w = img.shape[-2:]
        if (h, w) != (self.img_size, self.img_size):
            raise ValueError(
                f"the AdaSAM mask generator works at its constructor's size only: "
                f"{self.img_size}x{self.img_size} (its position table has one row per "
                f"{self.patch_size}x{self.patch_size} token of that size), got {h}x{w}; crop "
                f"the input to {self.img_size}x{self.img_size} or build the generator with "
                f"img_size={h if h == w else 'the crop size'}"
            )

    def token_logits(self, img: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """Scores ``(B, N)`` of the tokens of ``img`` ``(B, C, S, S)`` (NaN/Inf -> finite,
        as the release's ``nan_to_num``); row-major token order."""
        self._check(img, check_finite)
        x = self.patch_embed(img) + self.pos_embed_probs.to(img.dtype)
        return torch.nan_to_num(self.get_token_probs(x))

    def token_probs(self, img: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
        """``(B, N)`` softmax over the tokens of ``img`` ``(B, C, S, S)``: rows sum to 1."""
        return self.token_logits(img, check_finite=check_finite).softmax(dim=-1)

    def pixel_probs(self, token_probs: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` token probabilities -> ``(B, 1, S, S)``: every pixel carries its
        token's probability (no renormalisation)."""
        b = token_probs.shape[0]
        p = token_probs.reshape(b, self.grid, self.grid)
        p = p.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2)
        return p.unsqueeze(1)

    def sample_mask(
        self, pixel_probs: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``num_masked`` pixels per image without replacement, with probability in
        proportion to ``pixel_probs`` ``(B, 1, S, S)``; returns the ``(B, 1, S, S)`` float
        mask (1.0 = hidden), detached. ``generator``: the RNG (``None``: PyTorch's global
        one, as the release)."""
        b, _, h, w = pixel_probs.shape
        flat = pixel_probs.detach().reshape(b, h * w).float()
        idx = torch.multinomial(flat, self.num_masked, replacement=False, generator=generator)
        mask = torch.zeros(b, h * w, device=pixel_probs.device)
        mask.scatter_(1, idx, 1.0)
        return mask.view(b, 1, h, w).to(pixel_probs.dtype)

    def forward(  # type: ignore[override]
        self,
        img: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        check_finite: bool = True,
    ) -> MaskDraw:
        """Draw a mask for ``img`` ``(B, C, S, S)`` (normalised; ``S = img_size``).

        Args:
            img: the degraded images, in the space of ``self.normalization``.
            generator: RNG of the mask draw (``None``: the global one).
            check_finite: refuse NaN/Inf inputs (one device sync).

        Returns:
            :class:`MaskDraw`: ``mask`` ``(B, 1, S, S)`` (1 = hidden, no gradient),
            ``pixel_probs`` ``(B, 1, S, S)`` and ``token_probs`` ``(B, N)``.
        """
        p = self.token_probs(img, check_finite=check_finite)
        pixels = self.pixel_probs(p)
        return MaskDraw(self.sample_mask(pixels, generator), pixels, p)


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """Whether ``state_dict`` is an AdaSAM generator's (the release's ``net_mask_*.pth`` /
    ``AdaSAM_pretrained.pth``): its token-probability head and position table, a 4-d
    patch convolution and a square grid of positions as wide as the embedding. ``hint``
    (a file or arch name) is not needed and ignored."""
    keys = set(state_dict)
    need = {"pos_embed_probs", "patch_embed.proj.weight", "get_token_probs.1.weight"}
    if not need <= keys or "get_token_probs.0.mlp.fc1.weight" not in keys:
        return False
    conv = state_dict["patch_embed.proj.weight"]
    pos = state_dict["pos_embed_probs"]
    if conv.dim() != 4 or pos.dim() != 3:
        return False
    grid = math.isqrt(int(pos.shape[1]))
    return grid * grid == pos.shape[1] and pos.shape[2] == conv.shape[0]


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments of an AdaSAM generator's weights.

    Read from the shapes: ``embed_dim``, ``patch_size``, ``in_chans``, ``img_size`` (from
    the position table's rows, a square grid), ``mlp_ratio`` and ``qkv_bias``. Not
    stored, so the release's values: ``mask_ratio`` 0.5, ``num_heads`` 8, ``drop`` 0.1,
    ``use_learnable_pos_emb`` true (a fixed table loads into the same key, with the
    same numbers).
    """
    conv = state_dict["patch_embed.proj.weight"]
    embed, in_chans, patch = int(conv.shape[0]), int(conv.shape[1]), int(conv.shape[-1])
    grid = math.isqrt(int(state_dict["pos_embed_probs"].shape[1]))
    hidden = int(state_dict["get_token_probs.0.mlp.fc1.weight"].shape[0])
    ratio = hidden / embed
    if int(embed * ratio) != hidden:  # a float ratio that rounds below the width
        ratio = (hidden + 0.5) / embed
    return {
        "img_size": grid * patch,
        "patch_size": patch,
        "in_chans": in_chans,
        "embed_dim": embed,
        "mlp_ratio": ratio,
        "qkv_bias": "get_token_probs.0.attn.q_bias" in state_dict,
    }

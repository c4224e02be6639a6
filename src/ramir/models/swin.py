"""Swin transformer layers of the SwinIR family, shared by RAM-SwinIR and classic SwinIR.

Window attention with relative position bias, (shifted) Swin blocks, residual Swin
transformer blocks (RSTB) and :class:`SwinIRBase`, the deep-feature body both backbones
build: ``patch_embed`` (tokens + LayerNorm) -> RSTBs -> LayerNorm -> ``conv_after_body``.
Parameter names equal the official SwinIR code; its ``attn_mask`` and
``relative_position_index`` buffers are recomputed here for every input size and
ignored when a checkpoint is loaded. The window geometry (partitions, shift masks, the
fast path's plans) is in :mod:`ramir.models.swin_geometry`.

The one switch for speed is ``attn_impl`` (constructor argument of the backbones, or
:meth:`SwinIRBase.set_attention_impl`); both give the same numbers within float rounding:

* ``"fast"`` (default): windows are gathered with one cached index (cyclic shift and window
  partition in a single ``index_select``), windows are grouped by their shift-mask pattern
  (interior windows need no mask at all, the last window row/column and the corner have
  one pattern each), and every group runs one
  :func:`torch.nn.functional.scaled_dot_product_attention` with ``relative position bias
  + pattern`` as a float mask. Index plans are cached per ``(batch, height, width,
  device)``; the gathered bias is cached per parameter version when no gradient is needed
  and recomputed every forward otherwise (it then carries the gradient to the table, and
  on CPU the product is written out explicitly because SDPA's masked backward is slower).
* ``"plain"``: the textbook computation of the official code (roll, window partition,
  ``softmax(q k^T * scale + bias + mask) v``, masks rebuilt on every call).

Every module that owns a parameter is called exactly once per forward with its whole
input, so forward hooks (e.g. for attribution) see complete layer outputs; in the fast
path the windows seen by ``attn`` are grouped by mask pattern rather than in raster order.

Convolutions compute in channels-last memory format (:class:`Conv2d`), so the token view
of their outputs is contiguous; with PyTorch's default, a batch of one leaves every
transformer stage working on transposed, non-contiguous tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from ramir.models.base import RestorationModel
from ramir.models.swin_geometry import (
    WindowPlan,
    relative_position_index,
    shift_attention_mask,
    swin_window,
    window_partition,
    window_plan,
    window_reverse,
)

__all__ = [
    "SwinIRBase",
    "WindowAttention",
    "SwinTransformerBlock",
    "RSTB",
    "ATTENTION_IMPLS",
]

ATTENTION_IMPLS = ("fast", "plain")


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample (timm's DropPath): drop with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Stochastic depth per sample; identity in eval mode or when ``p == 0``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _ignore_keys_hook(*names: str):
    """A ``load_state_dict`` pre-hook that drops recomputed buffers from the input dict."""

    def hook(module, state_dict, prefix, *args, **kwargs) -> None:
        for name in names:
            state_dict.pop(prefix + name, None)

    return hook


# -- modules ------------------------------------------------------------------------------
class Mlp(nn.Module):
    """Token MLP ``fc2(drop(gelu(fc1(x))))``; ``(..., C) -> (..., C)``."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Window multi-head self-attention with a relative position bias (Swin/SwinIR).

    Input ``(B * nW, N, C)`` windows of ``N = window_size**2`` tokens, output the same
    shape. ``forward(x, mask=...)`` is the plain computation with an optional
    ``(nW, N, N)`` additive mask; ``forward(x, plan=...)`` is the fast grouped
    scaled-dot-product path (see :class:`WindowPlan`).
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02, a=-2.0, b=2.0)
        self.register_load_state_dict_pre_hook(_ignore_keys_hook("relative_position_index"))
        self._bias_cache: tuple[tuple, list[torch.Tensor]] | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"

    def relative_position_bias(self) -> torch.Tensor:
        """``(heads, N, N)`` bias gathered from the table (differentiable)."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1).contiguous()

    def _group_masks(self, plan: WindowPlan, dtype: torch.dtype) -> list[torch.Tensor]:
        """Float masks ``(1, heads, N, N)`` (bias + pattern) of each group of ``plan``."""
        table = self.relative_position_bias_table
        cacheable = not (torch.is_grad_enabled() and table.requires_grad)
        key = (
            plan.key,
            dtype,
            table.device,
            table.data_ptr(),
            table._version,
            torch.is_inference_mode_enabled(),
        )
        if cacheable and self._bias_cache is not None and self._bias_cache[0] == key:
            return self._bias_cache[1]
        bias = self.relative_position_bias().to(dtype)
        masks = [(bias if p is None else bias + p.to(dtype)).unsqueeze(0) for p in plan.patterns]
        if cacheable:
            self._bias_cache = (key, masks)
        else:
            self._bias_cache = None
        return masks

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        plan: WindowPlan | None = None,
    ) -> torch.Tensor:
        bw, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).view(bw, n, 3, h, c // h)
        if plan is None:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (bw, h, n, d) each
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn + self.relative_position_bias().unsqueeze(0)
            if mask is not None:
                nw = mask.shape[0]
                attn = attn.view(bw // nw, nw, h, n, n) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, h, n, n)
            attn = self.attn_drop(attn.softmax(dim=-1))
            out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        else:
            masks = self._group_masks(plan, x.dtype)
            drop = self.attn_drop.p if self.training else 0.0
            # A mask that needs a gradient sends SDPA to its slow generic path on CPU:
            # the explicit product is faster there and gives the same numbers.
            explicit = masks[0].requires_grad and x.device.type == "cpu"
            outs = []
            for (start, end), m in zip(plan.groups, masks, strict=True):
                if explicit:
                    q, k, v = qkv[start:end].permute(2, 0, 3, 1, 4).unbind(0)
                    attn = torch.matmul(q * self.scale, k.transpose(-2, -1)).add_(m)
                    outs.append((self.attn_drop(attn.softmax(dim=-1)) @ v).transpose(1, 2))
                else:
                    outs.append(self._sdpa(qkv[start:end], m, drop))
            out = (outs[0] if len(outs) == 1 else torch.cat(outs)).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))

    def _sdpa(self, qkv: torch.Tensor, mask: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        """``(bw, N, 3, heads, d)`` -> attention output ``(bw, N, heads, d)`` (a view)."""
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale
        )
        return out.transpose(1, 2)


class SwinTransformerBlock(nn.Module):
    """Swin block: ``x + attn(norm1(x))`` in (shifted) windows, then ``x + mlp(norm2(x))``.

    Tokens ``(B, H*W, C)`` with ``x_size = (H, W)``, H and W multiples of the window.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, {window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn_impl = "fast"
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        # The official block stores a precomputed ``attn_mask`` buffer; we recompute it.
        self.register_load_state_dict_pre_hook(_ignore_keys_hook("attn_mask"))

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}"

    def _attend_plain(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        x = x.view(b, height, width, c)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        windows = window_partition(x, ws).view(-1, ws * ws, c)
        mask = shift_attention_mask(height, width, ws, s, x.device, x.dtype) if s > 0 else None
        windows = self.attn(windows, mask=mask)
        x = window_reverse(windows.view(-1, ws, ws, c), ws, height, width)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return x.reshape(b, height * width, c)

    def _attend_fast(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, length, c = x.shape
        plan = window_plan(b, height, width, self.window_size, self.shift_size, x.device)
        windows = x.reshape(b * length, c).index_select(0, plan.gather)
        windows = self.attn(windows.view(-1, self.window_size**2, c), plan=plan)
        return windows.view(b * length, c).index_select(0, plan.scatter).view(b, length, c)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        height, width = x_size
        attend = self._attend_plain if self.attn_impl == "plain" else self._attend_fast
        x = x + self.drop_path(attend(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks; odd blocks use shifted windows (shift = window // 2)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        use_checkpoint: bool,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                num_heads,
                window_size,
                0 if i % 2 == 0 else shift_size,
                mlp_ratio,
                qkv_bias,
                qk_scale,
                drop,
                attn_drop,
                drop_path[i],
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = grad_checkpoint(blk, x, x_size, use_reentrant=False)
            else:
                x = blk(x, x_size)
        return x


def _to_image(x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
    """Tokens ``(B, H*W, C)`` -> ``(B, C, H, W)`` view (channels-last memory)."""
    b, _, c = x.shape
    return x.transpose(1, 2).view(b, c, x_size[0], x_size[1])


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> tokens ``(B, H*W, C)``."""
    return x.flatten(2).transpose(1, 2)


class RSTB(nn.Module):
    """Residual Swin Transformer Block: ``x + tokens(conv(image(blocks(x))))``."""

    def __init__(self, dim: int, resi_connection: str, **layer_kwargs) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim=dim, **layer_kwargs)
        self.conv = _resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = self.conv(_to_image(self.residual_group(x, x_size), x_size))
        return _to_tokens(y) + x


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes in channels-last memory format.

    Same parameters and numbers as ``nn.Conv2d``; the output is channels-last, so the
    token view ``(B, H*W, C)`` of it is contiguous and no layout copies follow (with a
    contiguous weight, PyTorch returns NCHW for a batch of one).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.contiguous(memory_format=torch.channels_last)
        return self._conv_forward(x, weight, self.bias)


def _resi_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(
            Conv2d(dim, dim // 4, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            Conv2d(dim // 4, dim // 4, 1, 1, 0),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ValueError(f"unknown resi_connection {resi_connection!r}; choose '1conv' or '3conv'")


class PatchEmbed(nn.Module):
    """Image ``(B, C, H, W)`` -> tokens ``(B, H*W, C)``, then LayerNorm if ``patch_norm``."""

    def __init__(self, embed_dim: int, patch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_tokens(x)
        return self.norm(x) if self.norm is not None else x


# -- the shared body ----------------------------------------------------------------------
class SwinIRBase(RestorationModel):
    """The deep-feature body of the SwinIR family and its settings.

    Subclasses call :meth:`_build_body` between their ``conv_first`` and ``conv_last``
    (so parameters come in the official order) and :meth:`deep_features` in their
    forward.
    """

    attn_impl: str = "fast"

    @property
    def per_sample_outputs(self) -> bool:  # type: ignore[override]
        """``"fast"`` attention groups the windows of all samples by mask pattern."""
        return self.attn_impl == "plain"

    def _build_body(
        self,
        *,
        img_hw: tuple[int, int],
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
        ape: bool,
        patch_norm: bool,
        use_checkpoint: bool,
        resi_connection: str,
    ) -> None:
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length"
            )
        window_size, shift = swin_window(img_hw, window_size)
        self.img_size = img_hw
        self.embed_dim = embed_dim
        self.window_size = window_size
        self.input_multiple = window_size
        self.ape = ape
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, img_hw[0] * img_hw[1], embed_dim))
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.pos_drop = nn.Dropout(drop_rate)
        # device="cpu": values are needed here even when building on the meta device
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            first = sum(depths[:i])
            self.layers.append(
                RSTB(
                    embed_dim,
                    resi_connection,
                    depth=depth,
                    num_heads=heads,
                    window_size=window_size,
                    shift_size=shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[first : first + depth],
                    use_checkpoint=use_checkpoint,
                )
            )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)

    def deep_features(self, tokens: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        """Tokens ``(B, H*W, C)`` from ``patch_embed`` -> ``conv_after_body`` output
        ``(B, C, H, W)`` (position embedding, RSTBs, LayerNorm, conv)."""
        if self.ape:
            if x_size != self.img_size:
                raise ValueError(
                    f"ape=True needs inputs of exactly img_size {self.img_size}, got {x_size}"
                )
            tokens = tokens + self.absolute_pos_embed
        tokens = self.pos_drop(tokens)
        for layer in self.layers:
            tokens = layer(tokens, x_size)
        return self.conv_after_body(_to_image(self.norm(tokens), x_size))

    def _init_weights(self, *extra: torch.Tensor) -> None:
        """Official initialisation: N(0, 0.02) truncated to [-2, 2] for Linear weights,
        bias tables and ``extra`` tensors (tokens), zero Linear biases, LayerNorm (1, 0);
        convolutions keep PyTorch's default.

        The official ``trunc_normal_(std=0.02)`` truncates at +-2 (100 standard
        deviations), so clamping a normal sample is the same distribution and much faster
        than the inverse-CDF sampler.
        """

        def trunc_normal(t: torch.Tensor) -> None:
            t.normal_(0.0, 0.02).clamp_(-2.0, 2.0)

        if self.norm.weight.is_meta:  # built on the meta device (shapes only): no values
            return
        with torch.no_grad():
            for t in extra:
                trunc_normal(t)
            if self.ape:
                trunc_normal(self.absolute_pos_embed)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal(m.weight)
                    if m.bias is not None:
                        m.bias.zero_()
                elif isinstance(m, nn.LayerNorm):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
                elif isinstance(m, WindowAttention):
                    trunc_normal(m.relative_position_bias_table)

    # -- settings -------------------------------------------------------------------------
    def set_attention_impl(self, impl: str) -> SwinIRBase:
        """Choose ``"fast"`` (grouped SDPA, cached plans) or ``"plain"`` (textbook)."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attn_impl {impl!r}; choose one of: {ATTENTION_IMPLS}")
        self.attn_impl = impl
        for m in self.modules():
            if isinstance(m, SwinTransformerBlock):
                m.attn_impl = impl
        return self

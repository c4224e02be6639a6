"""NAFNet: a small, fast convolutional backbone for CPU use (docs/method.md#backbones).

NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) is a U-Net of
activation-free blocks: layer norm, 1x1 conv, 3x3 depthwise conv, SimpleGate, simplified
channel attention, 1x1 conv, then a gated 1x1 feed-forward, each branch scaled by a
learned per-channel factor (``beta``, ``gamma``) that starts at zero, so every block
starts as the identity. Downsampling is a stride-2 2x2 conv that doubles the channels,
upsampling a 1x1 conv plus PixelShuffle(2) that halves them; skips are added.

Module names and parameter order equal megvii's ``NAFNet_arch.py``, so its released
checkpoints load (``ramir.load_model`` infers width and block counts from the keys). The
network runs in ``channels_last`` memory format (faster on CPU; outputs are unchanged).

Input conventions:

* ramir-trained models (the defaults): ``normalization='imagenet'``, like the two RAM
  backbones, so that the mask token (zeros in normalised space) is the ImageNet mean
  colour and one training pipeline serves every backbone; ``padding='reflect'``.
* megvii's releases (chosen by ``load_model`` for files without ramir metadata):
  ``normalization='none'`` (RGB in [0, 1]) and ``padding='zeros'``, as their forward.

``local_stats=T`` turns on the test-time local statistics of megvii's ``NAFNetLocal``
(TLC, Chu et al. 2022), used by their GoPro and REDS deblurring releases with ``T=256``:
each channel-attention mean is taken over a window of 1.5x the training crop ``T`` (in
the features of that level) around each pixel instead of over the whole image, so that
large test images see the statistics the network was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramir.models.base import PAD_MODES, RestorationModel
from ramir.models.detection import count_children
from ramir.models.layers import LayerNorm2d, simple_gate

__all__ = ["NAFNet", "NAFBlock", "LocalAvgPool2d", "detect", "kwargs_from_state_dict", "widen"]


class LocalAvgPool2d(nn.Module):
    """Per-pixel mean over a ``kernel x kernel`` window (NAFNetLocal's test-time pooling).

    ``(B, C, H, W)`` -> ``(B, C, 1, 1)`` (the global mean) when the window covers the
    whole map, else ``(B, C, H, W)``: the mean of every window that fits inside the map
    (window sides cut to ``H`` and ``W``), edge-replicated back to ``H x W`` (the extra
    rows/columns split as evenly as possible, the larger part at the bottom/right).
    """

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.kernel = int(kernel)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        k = self.kernel
        if k >= h and k >= w:
            return x.mean(dim=(-2, -1), keepdim=True)
        out = F.avg_pool2d(x, (min(h, k), min(w, k)), stride=1)
        dh, dw = h - out.shape[-2], w - out.shape[-1]
        return F.pad(out, (dw // 2, (dw + 1) // 2, dh // 2, (dh + 1) // 2), mode="replicate")


class NAFBlock(nn.Module):
    """NAFNet block on ``(B, c, H, W)`` (same shape out).

    ``y = x + beta * conv3(sca(sg(conv2(conv1(norm1(x))))))`` then
    ``y + gamma * conv5(sg(conv4(norm2(y))))`` where ``sg`` multiplies the two channel
    halves and ``sca`` scales channels by a 1x1 conv of their spatial mean.
    """

    def __init__(
        self, c: int, dw_expand: int = 2, ffn_expand: int = 2, pool_kernel: int | None = None
    ) -> None:
        super().__init__()
        dw = c * dw_expand
        ffn = c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dw, dw, kernel_size=3, padding=1, groups=dw, bias=True)
        self.conv3 = nn.Conv2d(dw // 2, c, kernel_size=1, bias=True)
        # Simplified channel attention: global (or, at test time, local) average pool,
        # then a 1x1 conv.
        pool = nn.AdaptiveAvgPool2d(1) if pool_kernel is None else LocalAvgPool2d(pool_kernel)
        self.sca = nn.Sequential(pool, nn.Conv2d(dw // 2, dw // 2, kernel_size=1, bias=True))
        self.conv4 = nn.Conv2d(c, ffn, kernel_size=1, bias=True)
        self.conv5 = nn.Conv2d(ffn // 2, c, kernel_size=1, bias=True)
        self.norm1 = LayerNorm2d(c, eps=1e-6)
        self.norm2 = LayerNorm2d(c, eps=1e-6)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


class NAFNet(RestorationModel):
    """NAFNet backbone; the defaults (1,137,203 parameters) are a small, fast CPU model.

    ``forward(lq, mask=None)``: ``lq`` ``(B, img_channel, H, W)`` in normalised space
    (see ``self.normalization``); ``mask`` ``(B|1, H, W)``, 1 = hidden (hidden pixels
    become zeros). The input is reflect-padded to ``input_multiple`` and the prediction
    (same shape and space) cropped back.

    Args:
        img_channel: image channels.
        width: channels at full resolution (doubled at each level down).
        middle_blk_num: blocks at the lowest resolution.
        enc_blk_nums: blocks per encoder level; the number of levels sets
            ``input_multiple = 2 ** len(enc_blk_nums)``.
        dec_blk_nums: blocks per decoder level (same length as ``enc_blk_nums``).
        normalization: ``'imagenet'`` (default) or ``'none'`` (megvii's releases).
        padding: ``'reflect'`` (default) or ``'zeros'`` (megvii's releases).
        local_stats: training crop size ``T`` for NAFNetLocal's test-time local
            statistics (``256`` in megvii's GoPro/REDS releases); ``None``: global means.
    """

    # Class-level values for the default 4 levels; instances set their own.
    input_multiple = 16
    min_size = 9

    def __init__(
        self,
        img_channel: int = 3,
        width: int = 16,
        middle_blk_num: int = 1,
        enc_blk_nums: Sequence[int] = (1, 1, 1, 1),
        dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
        normalization: str = "imagenet",
        padding: str = "reflect",
        local_stats: int | None = None,
    ) -> None:
        super().__init__(normalization=normalization)
        if padding not in PAD_MODES:
            raise ValueError(f"padding must be one of {PAD_MODES}, got {padding!r}")
        if local_stats is not None and local_stats < 1:
            raise ValueError(f"local_stats must be a crop size >= 1 (or None), got {local_stats}")
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums and dec_blk_nums need the same length (one entry per level), "
                f"got {list(enc_blk_nums)} and {list(dec_blk_nums)}"
            )
        if width < 1 or img_channel < 1 or middle_blk_num < 0:
            raise ValueError(
                f"need width >= 1, img_channel >= 1, middle_blk_num >= 0; got width={width}, "
                f"img_channel={img_channel}, middle_blk_num={middle_blk_num}"
            )
        self.in_chans = self.out_chans = img_channel
        self.input_multiple = 2 ** len(enc_blk_nums)
        self.pad_mode = padding
        # Reflect padding needs a pad smaller than the image.
        self.min_size = self.input_multiple // 2 + 1 if padding == "reflect" else 1
        kernels = self._local_kernels(local_stats, len(enc_blk_nums))

        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1, bias=True)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        # Registered here (filled below) so that the module order equals megvii's.
        self.middle_blks = nn.Sequential()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()

        def blocks(chan: int, level: int, num: int) -> nn.Sequential:
            return nn.Sequential(*[NAFBlock(chan, pool_kernel=kernels[level]) for _ in range(num)])

        chan = width
        for level, num in enumerate(enc_blk_nums):
            self.encoders.append(blocks(chan, level, num))
            self.downs.append(nn.Conv2d(chan, 2 * chan, kernel_size=2, stride=2))
            chan *= 2
        self.middle_blks = blocks(chan, len(enc_blk_nums), middle_blk_num)
        for i, num in enumerate(dec_blk_nums):  # deepest level first
            level = len(dec_blk_nums) - 1 - i
            self.ups.append(
                nn.Sequential(
                    nn.Conv2d(chan, chan * 2, kernel_size=1, bias=False), nn.PixelShuffle(2)
                )
            )
            chan //= 2
            self.decoders.append(blocks(chan, level, num))

    def _local_kernels(self, train: int | None, levels: int) -> list[int | None]:
        """Pooling window per level (0 = full resolution, ``levels`` = the middle).

        As NAFNetLocal derives them: a training crop ``T`` padded to ``input_multiple``
        is ``S = ceil(T / m) * m``; level ``l`` then has ``S / 2**l`` pixels a side and a
        window of ``(S / 2**l) * int(1.5 T) // T``.
        """
        if train is None:
            return [None] * (levels + 1)
        m = self.input_multiple
        size = -(-train // m) * m
        base = int(train * 1.5)
        return [(size >> level) * base // train for level in range(levels + 1)]

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` normalised, ``H, W`` multiples of ``input_multiple`` -> same."""
        inp = x.contiguous(memory_format=torch.channels_last)
        feat = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.middle_blks(feat)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            feat = decoder(up(feat) + skip)
        return (self.ending(feat) + inp).contiguous()


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """A NAFNet state dict: megvii's first and last convolutions, ``intro`` and
    ``ending`` (no other backbone has them)."""
    return "intro.weight" in state_dict and "ending.weight" in state_dict


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Width and block counts read from the weights, with megvii's input convention
    (RGB in [0, 1], zero padding): ``intro`` is ``(width, img_channel, 3, 3)``, a level's
    blocks are the numbered children of ``encoders.<i>`` / ``decoders.<i>``, and the
    levels are counted by the ``downs`` / ``ups`` convolutions between them."""
    keys = set(state_dict)
    intro = state_dict["intro.weight"]
    down_levels = range(count_children(keys, "downs"))
    up_levels = range(count_children(keys, "ups"))
    return {
        "img_channel": int(intro.shape[1]),
        "width": int(intro.shape[0]),
        "enc_blk_nums": [count_children(keys, f"encoders.{i}") for i in down_levels],
        "middle_blk_num": count_children(keys, "middle_blks"),
        "dec_blk_nums": [count_children(keys, f"decoders.{i}") for i in up_levels],
        "normalization": "none",
        "padding": "zeros",
    }


def widen(model: NAFNet, factor: int = 2, seed: int = 0, split: float = 0.5) -> NAFNet:
    """A NAFNet ``factor`` times wider that computes the same function as ``model``.

    Function-preserving widening (Net2WiderNet, Chen et al. 2016): every channel of every
    feature map is repeated ``factor`` times (the copies concatenated, so that
    ``SimpleGate``'s halves and ``PixelShuffle``'s groups of four stay aligned); every
    layer norm, depthwise kernel, bias, ``beta`` and ``gamma`` is copied; a convolution
    that sums over channels gives each copy of an input channel a share of the original
    weight, the shares summing to 1. Layer norm over the repeated channels sees the same
    mean and variance, so the wide network's output equals the narrow one's (to rounding).
    The shares are drawn at random (``1/factor`` plus a zero-sum perturbation of relative
    size ``split``, seeded), so that the copies receive different gradients and can
    become different features when training continues: this is how a trained small
    model is grown into a larger one without starting over.

    Args:
        model: a NAFNet (any width, block counts, conventions, ``local_stats``).
        factor: width multiplier, >= 2.
        seed: seed of the random shares.
        split: relative size of the perturbation of the shares, in ``[0, 1)``
            (0: equal shares, which keeps the copies identical under gradient descent).

    Returns:
        A new NAFNet (``eval()`` mode, float32, on the CPU) with ``width * factor``; the
        other constructor arguments are ``model``'s.

    Raises:
        ValueError: ``factor`` < 2, ``split`` outside ``[0, 1)``, or not a NAFNet.
    """
    from ramir.models import build_model

    if not isinstance(model, NAFNet):
        raise ValueError(f"widening needs a NAFNet, got {type(model).__name__}")
    if int(factor) != factor or factor < 2:
        raise ValueError(f"the widening factor must be an integer >= 2, got {factor}")
    if not 0.0 <= split < 1.0:
        raise ValueError(f"split must be in [0, 1), got {split}")
    f = int(factor)
    kwargs = dict(getattr(model, "arch_kwargs", {}))
    width = int(model.intro.weight.shape[0])
    kwargs["width"] = width * f
    wide = build_model("nafnet", **kwargs)
    gen = torch.Generator().manual_seed(int(seed))
    src = {k: v.detach().to("cpu", torch.float64) for k, v in model.state_dict().items()}

    def plain(c: int) -> torch.Tensor:  # wide index -> narrow index, channels concatenated
        return torch.arange(c * f) % c

    def gated(c2: int) -> torch.Tensor:  # a SimpleGate input: each half widened alone
        d = c2 // 2
        half = plain(d)
        return torch.cat([half, half + d])

    def shuffled(c4: int) -> torch.Tensor:  # a PixelShuffle(2) input: groups of 4
        k = torch.arange(c4 * f)
        return ((k // 4) % (c4 // 4)) * 4 + k % 4

    def shares(c_out: int, c_in: int) -> torch.Tensor:
        """(c_out, c_in * f) shares: for each (output, narrow input) the f copies sum to 1."""
        noise = (torch.rand(c_out, f, c_in, generator=gen, dtype=torch.float64) - 0.5) * 2
        noise = noise - noise.mean(dim=1, keepdim=True)
        s = (1.0 + split * noise) / f  # (c_out, f, c_in), sum over f == 1
        return s.reshape(c_out, f * c_in)

    def conv(
        w: torch.Tensor, out_map: torch.Tensor | None, in_map: torch.Tensor | None
    ) -> torch.Tensor:
        if out_map is not None:
            w = w[out_map]
        if in_map is not None:
            w = w[:, in_map] * shares(w.shape[0], w.shape[1])[..., None, None]
        return w

    def vec(v: torch.Tensor, out_map: torch.Tensor, dim: int = 0) -> torch.Tensor:
        return v.index_select(dim, out_map)

    out: dict[str, torch.Tensor] = {}

    def block(prefix: str, c: int) -> None:
        p, g = plain(c), gated(2 * c)
        for norm in ("norm1", "norm2"):
            for part in ("weight", "bias"):
                out[f"{prefix}.{norm}.{part}"] = vec(src[f"{prefix}.{norm}.{part}"], p)
        for name, o_map, i_map in (
            ("conv1", g, p), ("conv3", p, p), ("sca.1", p, p), ("conv4", g, p), ("conv5", p, p)
        ):  # fmt: skip
            out[f"{prefix}.{name}.weight"] = conv(src[f"{prefix}.{name}.weight"], o_map, i_map)
            out[f"{prefix}.{name}.bias"] = vec(src[f"{prefix}.{name}.bias"], o_map)
        out[f"{prefix}.conv2.weight"] = conv(src[f"{prefix}.conv2.weight"], g, None)
        out[f"{prefix}.conv2.bias"] = vec(src[f"{prefix}.conv2.bias"], g)
        for scale in ("beta", "gamma"):
            out[f"{prefix}.{scale}"] = vec(src[f"{prefix}.{scale}"], p, dim=1)

    def blocks(prefix: str, seq: nn.Sequential, c: int) -> None:
        for i in range(len(seq)):
            block(f"{prefix}.{i}", c)

    out["intro.weight"] = conv(src["intro.weight"], plain(width), None)
    out["intro.bias"] = vec(src["intro.bias"], plain(width))
    chan = width
    for level, encoder in enumerate(model.encoders):
        blocks(f"encoders.{level}", encoder, chan)
        out[f"downs.{level}.weight"] = conv(
            src[f"downs.{level}.weight"], plain(2 * chan), plain(chan)
        )
        out[f"downs.{level}.bias"] = vec(src[f"downs.{level}.bias"], plain(2 * chan))
        chan *= 2
    blocks("middle_blks", model.middle_blks, chan)
    for i, decoder in enumerate(model.decoders):
        out[f"ups.{i}.0.weight"] = conv(src[f"ups.{i}.0.weight"], shuffled(2 * chan), plain(chan))
        chan //= 2
        blocks(f"decoders.{i}", decoder, chan)
    out["ending.weight"] = conv(src["ending.weight"], None, plain(width))
    out["ending.bias"] = src["ending.bias"]

    expected = wide.state_dict()
    missing = set(expected) - set(out)
    if missing or set(out) - set(expected):
        raise ValueError(f"widening does not cover this NAFNet's tensors: {sorted(missing)[:3]}")
    wide.load_state_dict({k: v.to(expected[k].dtype) for k, v in out.items()})
    return wide.eval()

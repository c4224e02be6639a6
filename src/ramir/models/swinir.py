"""Classic SwinIR (Liang et al., ICCVW 2021) for restoration at the input resolution.

The denoising and JPEG-artefact-removal models of the SwinIR release (upscale 1, no
upsampler): a **3x3** ``conv_first``, the Swin body of :mod:`ramir.models.swin`
(``patch_embed`` LayerNorm, residual Swin transformer blocks, LayerNorm,
``conv_after_body``), a body residual over the shallow features and a **global
residual** over the image::

    x' = (x - mean) * img_range
    f  = conv_first(x')
    y  = (x' + conv_last(conv_after_body(body(f)) + f)) / img_range + mean

``mean`` is DIV2K's RGB mean (0.4488, 0.4371, 0.4040) for 3 channels and 0 for gray;
``img_range`` is 1 for the denoising models and 255 for the JPEG models. The input is
RGB (or gray) in [0, 1], reflect-padded to a multiple of the window as the network's own
forward does. Parameter names equal ``network_swinir.py``, so the released ``.pth``
files load; their stored ``attn_mask`` buffers (computed for the training size) are
ignored and recomputed for every input size.

Released families this covers: ``005_colorDN_DFWB_s128w8_SwinIR-M_noise{15,25,50}``
(window 8, ``img_range`` 1), ``006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{10,20,30,40}``
(window 7, ``img_range`` 255), and their gray counterparts ``004_grayDN_*`` and
``006_CAR_*`` (1 channel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ramir.errors import CheckpointError
from ramir.models.detection import count_children
from ramir.models.swin import Conv2d, SwinIRBase

__all__ = [
    "SwinIR",
    "SwinIRFamily",
    "SWINIR_RGB_MEAN",
    "detect",
    "kwargs_from_state_dict",
    "is_swin_layout",
    "swin_kwargs",
]

SWINIR_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class SwinIRFamily(SwinIRBase):
    """The constructor that classic SwinIR and RAM-SwinIR share: the keywords of the
    official ``network_swinir.SwinIR`` (restoration at the input resolution), with the
    released denoising size as defaults.

    A network's own constructor takes its own keywords and passes these on with
    ``**kwargs`` (:func:`ramir.models.build_model` and ``ramir models`` list them with
    the network's own: :func:`ramir.registry.keyword_parameters`). This constructor
    builds the official layers in the official order: the network's input parameters
    and buffers (:meth:`_add_inputs`), ``conv_first`` (:attr:`first_kernel` x
    :attr:`first_kernel`), the Swin body (:meth:`~ramir.models.swin.SwinIRBase._build_body`)
    and ``conv_last``, then the official initialisation.

    Args:
        img_size: training patch size; as in the official code, a size no larger than
            the window disables shifting (and shrinks the window to it).
        patch_size, upscale, upsampler, img_range: official options, checked by the
            network (:meth:`_check_options`): ramir restores at the input resolution.
        in_chans: image channels.
        embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale: width,
            Swin blocks per residual group, heads per group, the attention window, the
            MLP's width over ``embed_dim``, the qkv bias and scale.
        drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout and
            stochastic depth (linearly increasing over blocks; training only).
        ape: absolute position embedding (only for inputs of exactly ``img_size``).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing of every Swin block while training.
        resi_connection: ``'1conv'`` or ``'3conv'``.
        normalization: the input space (each network gives its release's default).
    """

    first_kernel = 3
    """``conv_first``'s kernel size."""

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
        *,
        normalization: str,
    ) -> None:
        super().__init__(normalization=normalization)
        self._check_options(
            patch_size=patch_size,
            upscale=upscale,
            upsampler=upsampler,
            img_range=img_range,
            in_chans=in_chans,
        )
        if isinstance(img_size, int):
            img_hw = (img_size, img_size)
        else:
            img_hw = (int(img_size[0]), int(img_size[1]))
        self.in_chans = self.out_chans = in_chans
        tokens = self._add_inputs(img_hw, img_range)
        k = self.first_kernel
        self.conv_first = Conv2d(in_chans, embed_dim, k, 1, k // 2)
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
        self.conv_last = Conv2d(embed_dim, in_chans, 3, 1, 1)
        self._init_weights(*tokens)

    def _check_options(
        self, *, patch_size: int, upscale: int, upsampler: str, img_range: float, in_chans: int
    ) -> None:
        """Raise ``ValueError`` for official options this network cannot take."""
        raise NotImplementedError

    def _add_inputs(self, img_hw: tuple[int, int], img_range: float) -> tuple[torch.Tensor, ...]:
        """Register what comes before ``conv_first``; return the tensors the official
        initialisation draws (N(0, 0.02), before every other)."""
        return ()


class SwinIR(SwinIRFamily):
    """Classic SwinIR at upscale 1; the defaults are the released denoising size
    (11,504,163 parameters: 6 RSTBs of 6 blocks, width 180, window 8).

    ``forward(lq, mask=None)``: ``lq`` ``(B, in_chans, H, W)`` in [0, 1], ``H, W`` at
    least ``window_size // 2 + 1``; returns the same shape and range (not clamped). Keyword names are the
    official ones; ``upscale`` must be 1 and ``upsampler`` empty (the super-resolution
    models are not supported).

    Args:
        img_size: training patch size (128 for denoising, 126 for JPEG).
        normalization: how callers scale images for the model: ``'none'`` ([0, 1]).
        padding: ``'reflect'`` (the network's own forward, default) or ``'symmetric'``
            (SwinIR's ``main_test_swinir.py``, which appends the flipped image).
        attn_impl: ``"fast"`` or ``"plain"`` (see :mod:`ramir.models.swin`).
        **kwargs: the official keywords (:class:`SwinIRFamily`): ``in_chans`` 3 (colour)
            or 1 (gray), ``window_size`` 8 (denoising) or 7 (JPEG), ``img_range`` 1.0
            (denoising) or 255.0 (JPEG): the scale inside the network, ...
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 128,
        *,
        normalization: str = "none",
        padding: str = "reflect",
        attn_impl: str = "fast",
        **kwargs: Any,
    ) -> None:
        if padding not in ("reflect", "symmetric"):
            raise ValueError(f"padding must be 'reflect' or 'symmetric', got {padding!r}")
        super().__init__(img_size, normalization=normalization, **kwargs)
        self.pad_mode = padding
        # Reflect padding to the window needs a pad smaller than the image.
        self.min_size = self.window_size // 2 + 1 if padding == "reflect" else 1
        self.set_attention_impl(attn_impl)

    def _check_options(
        self, *, patch_size: int, upscale: int, upsampler: str, img_range: float, in_chans: int
    ) -> None:
        if patch_size != 1:
            raise ValueError(f"SwinIR supports patch_size=1 only, got {patch_size}")
        if upscale != 1 or upsampler:
            raise ValueError(
                "ramir supports SwinIR's restoration models (upscale=1, no upsampler: "
                f"denoising, JPEG artefacts), got upscale={upscale}, upsampler={upsampler!r}"
            )
        if img_range <= 0:
            raise ValueError(f"img_range must be > 0 (1.0 or 255.0), got {img_range}")
        if in_chans not in (1, 3):
            raise ValueError(f"SwinIR takes 1 (gray) or 3 (RGB) channels, got {in_chans}")

    def _add_inputs(self, img_hw: tuple[int, int], img_range: float) -> tuple[torch.Tensor, ...]:
        self.img_range = float(img_range)
        mean = SWINIR_RGB_MEAN if self.in_chans == 3 else (0.0,)
        # Not a buffer: official checkpoints do not carry it.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        return ()

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` with H, W multiples of the window -> same shape."""
        x_size = (x.shape[-2], x.shape[-1])
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        first = self.conv_first(x)
        res = self.deep_features(self.patch_embed(first), x_size) + first
        out = x + self.conv_last(res)
        return (out / self.img_range + mean).contiguous()


# ----------------------------------------------------------------------------- detection
# The SwinIR layout is shared by RAM-SwinIR, whose detect is asked before this one
# (ramir.models.detectors); these two helpers serve both.


def is_swin_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """The names every SwinIR-family state dict has: ``conv_first`` and residual Swin
    groups (``layers.<i>.residual_group.blocks.<j>``).

    Raises:
        CheckpointError: a super-resolution SwinIR (it has an upsampler): ramir restores
            at the input resolution.
    """
    if "conv_first.weight" not in state_dict:
        return False
    if not any(".residual_group.blocks." in k for k in state_dict):
        return False
    if any(k.startswith(("conv_before_upsample.", "upsample.", "conv_up1.")) for k in state_dict):
        raise CheckpointError(
            "this is a SwinIR super-resolution checkpoint (it has an upsampler); ramir "
            "restores at the input resolution: use SwinIR's denoising or JPEG models"
        )
    return True


def swin_kwargs(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The constructor arguments of a SwinIR-family state dict (RAM-SwinIR or classic):
    channels, width, depths and heads per group, the window (from the relative position
    tables, ``(2 * window - 1) ** 2`` rows), the MLP ratio and the residual convolution."""
    keys = set(state_dict)
    embed = int(state_dict["conv_first.weight"].shape[0])
    depths: list[int] = []
    heads: list[int] = []
    window = 8
    for i in range(count_children(keys, "layers")):
        depths.append(count_children(keys, f"layers.{i}.residual_group.blocks"))
        table = state_dict[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
        heads.append(int(table.shape[1]))
        window = (round(table.shape[0] ** 0.5) + 1) // 2
    fc1 = state_dict["layers.0.residual_group.blocks.0.mlp.fc1.weight"]
    ratio = fc1.shape[0] / embed
    return {
        "in_chans": int(state_dict["conv_first.weight"].shape[1]),
        "embed_dim": embed,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": int(ratio) if ratio == int(ratio) else ratio,
        "resi_connection": "3conv" if "conv_after_body.0.weight" in keys else "1conv",
    }


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """A classic SwinIR release: the SwinIR layout with a 3x3 ``conv_first`` and no
    ``mask_token`` (RAM-SwinIR's signs)."""
    return (
        is_swin_layout(state_dict)
        and "mask_token" not in state_dict
        and state_dict["conv_first.weight"].shape[-1] != 1
    )


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The family's sizes, the training patch size (from the stored ``attn_mask``
    buffers' window count, else 8 x 8 windows) and the release's conventions:
    ``img_range`` is not stored, so window 7 means the JPEG models (255), otherwise the
    denoising models (1); RGB in [0, 1]."""
    kwargs = swin_kwargs(state_dict)
    window = kwargs["window_size"]
    masks = [k for k in state_dict if k.endswith(".attn_mask")]
    n_windows = state_dict[masks[0]].shape[0] if masks else 64
    kwargs["img_size"] = window * max(round(n_windows**0.5), 2)
    kwargs["img_range"] = 255.0 if window == 7 else 1.0
    kwargs["normalization"] = "none"
    return kwargs

"""What every ramir backbone shares: input checks, masking, padding and normalisation.

A backbone maps ``lq`` ``(B, 3, H, W)`` in *normalised* space to ``pred`` of the same
shape and space. ``forward(lq, mask=None)`` hides the pixels where ``mask`` is 1 by the
mask token, reflect-pads to the model's ``input_multiple``, runs the network and crops
back, so inputs of any size at least ``min_size`` work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ramir.masking import apply_mask

__all__ = ["Normalization", "RestorationModel", "NORMALIZATIONS", "check_images"]

# (mean, std, dtype, device) -> the (1, C, 1, 1) tensors of Normalization._stats
_STATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


@dataclass(frozen=True)
class Normalization:
    """Per-channel affine normalisation ``(x - mean) / std`` of images in [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean``, ``std`` as ``(1, C, 1, 1)`` tensors of ``x``'s dtype and device.

        Made once per (values, dtype, device) and kept: building them per call copied
        them from the host at every call, which makes a GPU step wait for the host.
        They are made outside inference mode, so a pair first made while restoring also
        serves training (autograd refuses inference tensors).
        """
        key = (self.mean, self.std, x.dtype, x.device)
        hit = _STATS.get(key)
        if hit is None:
            with torch.inference_mode(False), torch.no_grad():
                mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
                std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
            hit = _STATS.setdefault(key, (mean, std))
        return hit

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 1] -> normalised space."""
        if self.name == "none":  # also for 1-channel (gray) and 6-channel inputs
            return x
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised space -> ``(B, C, H, W)`` in [0, 1] (not clamped)."""
        if self.name == "none":
            return x
        mean, std = self._stats(x)
        return x * std + mean


NORMALIZATIONS: dict[str, Normalization] = {
    "imagenet": Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def get_normalization(name: str) -> Normalization:
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown normalization {name!r}; choose one of: {', '.join(NORMALIZATIONS)}"
        ) from None


def check_images(
    x: torch.Tensor, channels: int, min_size: int = 1, name: str = "lq", *, finite: bool = True
) -> None:
    """Raise a clear error unless ``x`` is a float ``(B, channels, H, W)`` tensor, finite
    unless ``finite=False`` (the finiteness test reads the values: a GPU sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D tensor (B, C, H, W), got {x.dim()}-D shape {tuple(x.shape)}"
            + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else "")
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
            "convert grayscale/RGBA images to RGB first"
        )
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if h < min_size or w < min_size:
        raise ValueError(
            f"{name} of size {h}x{w} is smaller than this model's minimum {min_size}x{min_size}"
        )
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")


class RestorationModel(nn.Module):
    """Base class of ramir backbones.

    Subclasses set ``input_multiple`` (pad target), ``min_size``, ``in_chans`` and
    ``normalization``, and implement :meth:`forward_padded` on an input whose height and
    width are multiples of ``input_multiple``. The mask token is zeros in normalised space
    unless a subclass overrides :meth:`mask_token_for`.
    """

    input_multiple: int = 1
    min_size: int = 1
    in_chans: int = 3
    # Channels of the prediction (differs from ``in_chans`` only for multi-view inputs,
    # e.g. Restormer's dual-pixel model: 6 in, 3 out).
    out_chans: int = 3
    # How the input is padded to ``input_multiple``: "reflect" or "zeros".
    pad_mode: str = "reflect"
    arch_name: str = ""
    # Every layer's output for a batch of N inputs is the N single-input outputs stacked
    # along the leading dimension, sample outermost; MAC batches path steps only then.
    per_sample_outputs: bool = True

    def __init__(self, normalization: str = "imagenet") -> None:
        super().__init__()
        self.normalization = get_normalization(normalization)

    # -- hooks for subclasses -------------------------------------------------------------
    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def mask_token_for(self, x: torch.Tensor) -> torch.Tensor | float:
        """The value hidden pixels take: 0.0 (zeros in normalised space) by default."""
        return 0.0

    # -- shared forward -------------------------------------------------------------------
    def forward(
        self, lq: torch.Tensor, mask: torch.Tensor | None = None, *, check_finite: bool = True
    ) -> torch.Tensor:
        """Restore ``lq``.

        Args:
            lq: ``(B, 3, H, W)`` float, normalised by ``self.normalization``;
                ``H, W >= self.min_size``.
            mask: optional ``(B, H, W)`` or ``(1, H, W)``, 1 = hidden. Hidden pixels
                become the mask token before the network sees them.
            check_finite: refuse NaN/Inf inputs (reads the values: one GPU sync per call).
                Callers that checked their data already (the training loop checks every
                batch on the CPU) pass ``False``.

        Returns:
            ``(B, 3, H, W)`` prediction in the same normalised space.
        """
        check_images(lq, self.in_chans, self.min_size, finite=check_finite)
        if mask is not None:
            lq = apply_mask(lq, mask, self.mask_token_for(lq))
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, self.input_multiple, self.pad_mode)
        out = self.forward_padded(x)
        return out[..., :h, :w]

    def extra_metadata(self) -> dict:
        """Settings beyond constructor arguments that a checkpoint should record."""
        return {"normalization": self.normalization.name}


PAD_MODES = ("reflect", "zeros", "symmetric")


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad ``(B, C, H, W)`` on the bottom/right to multiples of ``multiple``.

    ``mode``: ``"reflect"`` (mirror without repeating the edge), ``"zeros"``, or
    ``"symmetric"``: SwinIR's ``main_test_swinir.py``, which appends the flipped image
    (mirror repeating the edge) by ``multiple - size % multiple`` pixels, a whole
    ``multiple`` when the size already is one.
    """
    h, w = x.shape[-2:]
    ph = (math.ceil(h / multiple) * multiple) - h
    pw = (math.ceil(w / multiple) * multiple) - w
    if mode == "symmetric":  # the script's rule: 1 to `multiple` rows, never 0
        ph, pw = multiple - h % multiple, multiple - w % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (0, pw, 0, ph))
    if mode == "symmetric":
        while x.shape[-2] < h + ph or x.shape[-1] < w + pw:  # pads longer than the image
            x = torch.cat([x, x.flip(-2)], dim=-2)[..., : h + ph, :]
            x = torch.cat([x, x.flip(-1)], dim=-1)[..., : w + pw]
        return x
    if mode != "reflect":
        raise ValueError(f"unknown padding {mode!r}; choose one of: {', '.join(PAD_MODES)}")
    if mode == "reflect" and (ph >= h or pw >= w):
        raise ValueError(
            f"image of size {h}x{w} is too small to reflect-pad to a multiple of {multiple}; "
            f"use images of at least {multiple}x{multiple}"
        )
    return F.pad(x, (0, pw, 0, ph), mode=mode)

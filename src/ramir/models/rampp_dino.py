"""The frozen DINOv2 of RAM++ fine-tuning: its input and its six feature maps.

RAM++'s RestormerRFR (:mod:`ramir.models.restormer_rfr`) takes six maps of a DINOv2's
hidden states. The release loads ``facebook/dinov2-giant`` (40 layers, width 1536, patch
14) from a Hugging Face folder in float16, keeps it frozen in eval mode, and computes,
for a normalised ``lq`` ``(B, 3, H, W)``:

1. **the DINO input** (:meth:`DinoExtractor.pixel_values`): ``x = lq * std + mean``
   (ImageNet, undoing the data normalisation), reflect-padded bottom/right to a
   multiple of 16 (``H_pad, W_pad``), then the folder's image processor with rescaling
   and centre crop off and ``shortest_edge = 14 * min(H_pad, W_pad) / 8``. With the
   release's pinned ``transformers`` (4.48) that processor is the PIL ``BitImageProcessor``:
   ``uint8(float32(float64(x) * 255))`` (truncation), a PIL bicubic resize of the short
   side to ``14 * S / 8`` and the long side to ``int(s * L / S)`` (= ``14 * L / 8``),
   ``/ 255``, then ``(v - mean) / std`` with the processor's mean/std, in float32. ramir
   computes exactly this itself with Pillow (no processor object, no ``transformers``
   image code): the DINO input has the size ``14 H_pad / 8 x 14 W_pad / 8``, so the patch
   grid is ``H_pad / 8 x W_pad / 8``, the size the network fuses at.
   Values of ``x`` outside [0, 1] (float rounding of a [0, 1] image) are clamped; the
   release's processor raises for them;
2. **the features** (:meth:`DinoExtractor.features`): ``hidden_states`` of the model
   (index 0 = the embeddings, ``i`` = after block ``i``, before the final LayerNorm), six
   of them (7, 15, 20, 22, 33, 39 in the names' order of :data:`LAYERS`), without the
   CLS token, reshaped to ``(B, hidden, h, w)`` on the token grid and cast to float32.

The token grid: ramir takes the DINO input's patch grid (``token_grid='exact'``); the
release recovers ``h, w`` from the token count and the aspect ratio with a ±1 correction
(``'release'``), which fails for some portrait sizes (224 x 144 -> 28 x 18 tokens,
recovered as 26 x 19: an error).

``transformers`` is needed only to load the model (``pip install ramir[rampp]``); the
folder must hold a DINOv2 (``config.json``, weights) and ``preprocessor_config.json``
(mean, std, resample; the defaults of DINOv2's processor when absent). Nothing is
downloaded: the folder is read with ``local_files_only=True``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ramir.models.base import NORMALIZATIONS, Normalization

__all__ = [
    "DinoExtractor",
    "LAYERS",
    "RELEASE_TRAIN_LAYERS",
    "release_token_grid",
    "dino_input_size",
]

LAYERS: dict[str, int] = {
    "shallow_feat1": 7,
    "mid_feat1": 20,
    "deep_feat1": 33,
    "shallow_feat2": 15,
    "mid_feat2": 22,
    "deep_feat2": 39,
}
"""Feature name -> hidden-state index, in the release's key order."""

RELEASE_TRAIN_LAYERS = (33,) * 6
"""What the release's fine-tuning step feeds the six slots in training (layer 33 in all)."""

_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC,
             4: Image.BOX, 5: Image.HAMMING}  # fmt: skip
_DTYPES = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}


def dino_input_size(height: int, width: int, patch: int = 14) -> tuple[int, int]:
    """``(h, w)`` of the DINO input for a padded ``height x width`` (multiples of 16):
    the processor's short side ``s = patch * min / 8`` and long side ``int(s * max / min)``."""
    short, long = min(height, width), max(height, width)
    s = (short // 8) * patch
    new_long = int(s * long / short)
    return (s, new_long) if height <= width else (new_long, s)


def release_token_grid(n_tokens: int, height: int, width: int) -> tuple[int, int]:
    """The release's recovery of the token grid ``(h, w)`` from ``n_tokens`` and the DINO
    input's ``height x width``: ``h = int(sqrt(N / a))``, ``w = int(N / h)`` with ``a =
    width / height``, then one correction of ``h`` (when ``a > 1``, else of ``w``) down when ``h w > N`` and up when ``h w < N``.

    Raises:
        ValueError: the corrected product is not ``n_tokens`` (the release's assertion).
    """
    aspect = width / height
    h = int(math.sqrt(n_tokens / aspect))
    w = int(n_tokens / h)
    for step in (-1, 1):  # first too many (shrink), then too few (grow)
        if (h * w > n_tokens) if step < 0 else (h * w < n_tokens):
            if aspect > 1:
                h += step
                w = n_tokens // h
            else:
                w += step
                h = n_tokens // w
    if h * w != n_tokens:
        raise ValueError(
            f"the release's token-grid recovery fails for a {height}x{width} DINO input: "
            f"{h}*{w} != {n_tokens} tokens (token_grid='exact' takes the patch grid)"
        )
    return h, w


class DinoExtractor(nn.Module):
    """A frozen DINOv2 with the release's input and feature selection.

    Args:
        model: a ``transformers`` ``Dinov2Model`` (any size; eval mode, frozen here).
        image_mean, image_std: the processor's normalisation of the DINO input.
        resample: PIL resampling filter id (3 = bicubic, DINOv2's).

    ``hidden_size`` is the features' channels; ``patch_size`` the model's patch.
    """

    def __init__(
        self,
        model: nn.Module,
        image_mean: Sequence[float] = (0.485, 0.456, 0.406),
        image_std: Sequence[float] = (0.229, 0.224, 0.225),
        resample: int = 3,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        cfg = model.config
        self.hidden_size = int(cfg.hidden_size)
        self.patch_size = int(cfg.patch_size)
        self.num_layers = int(cfg.num_hidden_layers)
        self.image_mean = np.asarray(image_mean, dtype=np.float32)
        self.image_std = np.asarray(image_std, dtype=np.float32)
        self.resample = _RESAMPLE[int(resample)]

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | torch.dtype = "float16") -> Any:
        """Load a Hugging Face DINOv2 folder (no download) in ``dtype`` (the release:
        float16)."""
        try:
            from transformers import AutoModel
        except ImportError:
            raise ImportError(
                "RestormerRFR's DINOv2 is loaded with transformers: pip install 'ramir[rampp]'"
            ) from None
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a Hugging Face model folder (no config.json); give the "
                "folder of facebook/dinov2-giant (e.g. huggingface-cli download "
                "facebook/dinov2-giant --local-dir DIR)"
            )
        torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
        model = AutoModel.from_pretrained(
            str(folder), local_files_only=True, torch_dtype=torch_dtype
        )
        proc: dict[str, Any] = {}
        if (folder / "preprocessor_config.json").is_file():
            proc = json.loads((folder / "preprocessor_config.json").read_text())
        return cls(
            model,
            proc.get("image_mean", (0.485, 0.456, 0.406)),
            proc.get("image_std", (0.229, 0.224, 0.225)),
            proc.get("resample", 3),
        )

    def train(self, mode: bool = True) -> DinoExtractor:
        """Always eval mode (frozen)."""
        return super().train(False)

    # -- input ------------------------------------------------------------------------
    def pixel_values(
        self, lq: torch.Tensor, normalization: Normalization | str = "imagenet"
    ) -> torch.Tensor:
        """The DINO input for ``lq`` ``(B, 3, H, W)`` in ``normalization``'s space:
        ``(B, 3, 14 H_pad / 8, 14 W_pad / 8)`` float32 on ``lq``'s device (see the module
        docstring; the arithmetic of the release's PIL processor)."""
        norm = NORMALIZATIONS[normalization] if isinstance(normalization, str) else normalization
        x = norm.denormalize(lq.detach().float())
        h, w = x.shape[-2:]
        ph, pw = (16 - h % 16) % 16, (16 - w % 16) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        th, tw = dino_input_size(h + ph, w + pw, self.patch_size)
        arr = x.clamp(0.0, 1.0).cpu().numpy().transpose(0, 2, 3, 1)  # (B, H, W, 3)
        u8 = (arr.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
        out = []
        for img in u8:
            r = Image.fromarray(img).resize((tw, th), resample=self.resample, reducing_gap=None)
            v = (np.asarray(r).astype(np.float64) * (1 / 255)).astype(np.float32)
            out.append(((v - self.image_mean) / self.image_std).transpose(2, 0, 1))
        return torch.from_numpy(np.ascontiguousarray(np.stack(out))).to(lq.device)

    # -- features ---------------------------------------------------------------------
    @torch.no_grad()
    def hidden_states(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """All hidden states ``(B, 1 + h w, hidden)`` (index 0: the embeddings)."""
        out = self.model(pixel_values, output_hidden_states=True)
        return tuple(out.hidden_states)

    def features_from_pixels(
        self,
        pixel_values: torch.Tensor,
        *,
        grid: str = "exact",
        layers: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The six feature maps ``(B, hidden, h, w)`` float32 of a DINO input, in the
        release's key order; ``layers`` overrides the six hidden-state indices (e.g.
        :data:`RELEASE_TRAIN_LAYERS`)."""
        index = list(LAYERS.values()) if layers is None else [int(i) for i in layers]
        if len(index) != 6:
            raise ValueError(f"layers must give 6 hidden-state indices, got {len(index)}")
        if max(index) > self.num_layers:
            raise ValueError(
                f"hidden state {max(index)} does not exist: the DINO has {self.num_layers} layers"
            )
        states = self.hidden_states(pixel_values)
        ph, pw = pixel_values.shape[-2:]
        n = states[0].shape[1] - 1
        if grid == "release":
            gh, gw = release_token_grid(n, ph, pw)
        else:
            gh, gw = ph // self.patch_size, pw // self.patch_size
            if gh * gw != n:
                raise ValueError(f"{n} tokens do not form the {gh}x{gw} patch grid")
        out = {}
        for name, i in zip(LAYERS, index, strict=True):
            t = states[i][:, 1:, :]
            out[name] = t.reshape(t.shape[0], gh, gw, -1).permute(0, 3, 1, 2).float()
        return out

    def features(
        self,
        lq: torch.Tensor,
        normalization: Normalization | str = "imagenet",
        *,
        grid: str = "exact",
        layers: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """:meth:`pixel_values` then :meth:`features_from_pixels` for a normalised ``lq``."""
        return self.features_from_pixels(
            self.pixel_values(lq, normalization), grid=grid, layers=layers
        )

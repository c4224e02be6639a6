"""RAM++'s fine-tuning network: Restormer with DINOv2 feature fusion ("RFR"; docs/rampp.md).

RAM++ (Zhang et al., 2025, arXiv 2509.12039) fine-tunes its pretrained Restormer
without residual (:mod:`ramir.models.adasam_restormer`) with features of a frozen DINOv2
(``facebook/dinov2-giant`` in the release). Six DINO feature maps ``(B, dino_dim, h, w)``
on the token grid ``h, w = H_pad / 8, W_pad / 8`` (``H_pad, W_pad``: the input
reflect-padded to a multiple of 16) enter in three pairs: shallow (layers 7, 15), mid
(20, 22) and deep (33, 39). Each pair is fused by a gate:

* :class:`DinoFeatureFusion`: ``w = softmax(g([GAP(f1), GAP(f2)]) / T)`` ``(B, 2)``
  from a small MLP ``g`` (``2 d -> d -> gate_hidden -> 2`` with PReLUs) and a learned
  temperature ``T`` (clamped at 1e-8), then ``f = w0 f1 + w1 f2``. ``T`` is one
  parameter shared by the fusion and its softmax module, so it appears twice in the
  state dict (``dino_fusion_X.temperature`` and ``dino_fusion_X.gate_network.5.temperature``),
  as in the release's files;
* :class:`DRAdaptation`: ``conv3x3(d -> 16 dim) + PReLU + conv1x1(-> 8 dim)``, the
  bottleneck width;
* :class:`DinoRestoreFusion`: ``r + conv1x1([dino, r]; 2 c -> c, no bias)`` into the
  restoration features ``r``: the deep pair at the bottleneck (``8 dim``), the mid pair
  after decoder level 3 (upsampled once, ``4 dim``), the shallow pair after decoder level 2
  (upsampled twice, ``2 dim``).

The release hard-codes ``dino_dim = 1536``, ``dim = 48`` and the gate's 512; here they are
arguments (``dino_dim``, ``dim``, ``gate_hidden``), so tiny networks build for tests. At
the release's sizes the network has 81,757,117 parameters and 545 state-dict keys, in
the release's order (the DINO-side modules right after ``patch_embed``).

The DINOv2 itself is no part of the network's parameters nor of its state dict (no
release file contains it): ``dino=DIR`` (a Hugging Face folder, loaded with
``transformers``: ``pip install ramir[rampp]``) or :meth:`RestormerRFR.attach_dino` gives
it, and ``model(lq)`` then computes the features itself (:mod:`ramir.models.rampp_dino`).
``model(lq, features)`` takes given features (a mapping with the six names of
:data:`FEATURE_NAMES`) and needs no DINO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ramir.models.adasam_restormer import is_woskip_layout
from ramir.models.adasam_restormer import kwargs_from_state_dict as woskip_kwargs
from ramir.models.base import check_images, pad_to_multiple
from ramir.models.restormer import RestormerFamily, _PatchEmbed, _Upsample

__all__ = [
    "ARCH",
    "FEATURE_NAMES",
    "DinoFeatureFusion",
    "DRAdaptation",
    "DinoRestoreFusion",
    "RestormerRFR",
    "TemperatureSoftmax",
    "detect",
    "kwargs_from_state_dict",
]

ARCH = "restormer_rfr"

FEATURE_NAMES = (
    "shallow_feat1",
    "mid_feat1",
    "deep_feat1",
    "shallow_feat2",
    "mid_feat2",
    "deep_feat2",
)
"""The six DINO feature names in the release's order (its dict's insertion order)."""

TEMPERATURE_MIN = 1e-8


class TemperatureSoftmax(nn.Module):
    """``softmax(x / max(T, 1e-8), dim=1)`` with ``T`` a parameter given (shared)."""

    def __init__(self, temperature: nn.Parameter) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x / torch.clamp(self.temperature, min=TEMPERATURE_MIN), dim=1)


class DinoFeatureFusion(nn.Module):
    """Gate two DINO maps ``(B, d, h, w)`` into one: ``w0 f1 + w1 f2``, ``w`` ``(B, 2)``
    summing to 1 (see the module docstring)."""

    def __init__(self, dino_dim: int = 1536, gate_hidden: int = 512) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.temperature = nn.Parameter(torch.ones(1))
        self.gate_network = nn.Sequential(
            nn.Linear(2 * dino_dim, dino_dim),
            nn.PReLU(dino_dim),
            nn.Linear(dino_dim, gate_hidden),
            nn.PReLU(gate_hidden),
            nn.Linear(gate_hidden, 2),
            TemperatureSoftmax(self.temperature),
        )

    def weights(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """``(B, 2)`` gate weights for the maps ``f1``, ``f2`` ``(B, d, h, w)``."""
        pooled = torch.cat([self.global_pool(f1).flatten(1), self.global_pool(f2).flatten(1)], 1)
        return self.gate_network(pooled)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        w = self.weights(f1, f2)
        return f1 * w[:, 0].view(-1, 1, 1, 1) + f2 * w[:, 1].view(-1, 1, 1, 1)


class DRAdaptation(nn.Module):
    """``(B, dino_dim, h, w) -> (B, 8 dim, h, w)``: conv3x3 to ``16 dim``, PReLU, conv1x1."""

    def __init__(self, dino_dim: int, dim: int) -> None:
        super().__init__()
        self.adaptation = nn.Sequential(
            nn.Conv2d(dino_dim, 16 * dim, kernel_size=3, padding=1),
            nn.PReLU(16 * dim),
            nn.Conv2d(16 * dim, 8 * dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptation(x)


class DinoRestoreFusion(nn.Module):
    """``restore + conv1x1(cat[dino, restore])``, both ``(B, c, h, w)``."""

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.reduce_chan = nn.Conv2d(2 * dim, dim, kernel_size=1, bias=bias)

    def forward(self, dino: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        return self.reduce_chan(torch.cat([dino, restore], dim=1)) + restore


class RestormerRFR(RestormerFamily):
    """RAM++'s RestormerRFR (81,757,117 parameters at the release's sizes).

    ``forward(lq, features=None)``: ``lq`` ``(B, 3, H, W)`` ImageNet-normalised,
    ``H, W >= 9`` (reflect-padded to a multiple of 16 inside and cropped back, no image
    residual). ``features``: a mapping with the six :data:`FEATURE_NAMES`, each
    ``(B, dino_dim, H_pad / 8, W_pad / 8)``; when ``None``, the attached DINOv2 computes
    them from ``lq`` (an error if none is attached). Returns ``(B, 3, H, W)`` normalised.

    Args:
        dino_dim: the DINO features' channels (1536: DINOv2-giant).
        gate_hidden: the gate MLP's second width (512 in the release).
        normalization: the input space (``'imagenet'``, as all RAM++ data).
        dino: a Hugging Face DINOv2 folder to load (``None``: attach later or give
            features).
        dino_dtype: the DINO's dtype, ``'float16'`` (the release) or ``'float32'``.
        token_grid: ``'exact'`` (the patch grid of the DINO input) or ``'release'`` (the
            release's recovery of the grid from the token count, which fails for some
            portrait sizes, e.g. 224 x 144).
        train_features: ``'distinct'`` (six layers in training as in testing) or
            ``'release'`` (the release's fine-tuning feeds layer 33 to all six slots in
            training mode; its gates then get no gradient).
        **kwargs: the Restormer part's keywords
            (:class:`~ramir.models.restormer.RestormerFamily`), as
            :class:`~ramir.models.adasam_restormer.AdaSAMRestormerWoskip` (whose weights
            initialise fine-tuning: the Restormer part has its exact keys).
    """

    input_multiple = 16
    min_size = 9
    restores_images = True

    def __init__(
        self,
        *,
        dino_dim: int = 1536,
        gate_hidden: int = 512,
        normalization: str = "imagenet",
        dino: str | None = None,
        dino_dtype: str = "float16",
        token_grid: str = "exact",
        train_features: str = "distinct",
        **kwargs: Any,
    ) -> None:
        super().__init__(normalization=normalization, **kwargs)
        if token_grid not in ("exact", "release"):
            raise ValueError(f"token_grid must be 'exact' or 'release', got {token_grid!r}")
        if train_features not in ("distinct", "release"):
            raise ValueError(
                f"train_features must be 'distinct' or 'release', got {train_features!r}"
            )
        self.dino_dim, self.token_grid, self.train_features = dino_dim, token_grid, train_features
        s = self.settings
        dim, d2, d3, d4 = s.dim, s.dim * 2, s.dim * 4, s.dim * 8
        self.patch_embed = _PatchEmbed(self.in_chans, dim)
        # the DINO side, registered where the release registers it (its key order)
        self.dr_adaptation1 = DRAdaptation(dino_dim, dim)
        self.dr_adaptation2 = DRAdaptation(dino_dim, dim)
        self.dr_adaptation3 = DRAdaptation(dino_dim, dim)
        self.dr_fusion1 = DinoRestoreFusion(d4, s.bias)
        self.dr_fusion2 = DinoRestoreFusion(d3, s.bias)
        self.dr_fusion3 = DinoRestoreFusion(d2, s.bias)
        self.up_4_3_dino1 = _Upsample(d4)
        self.up_4_3_dino2 = _Upsample(d4)
        self.up_3_2_dino = _Upsample(d3)
        self.dino_fusion_shallow = DinoFeatureFusion(dino_dim, gate_hidden)
        self.dino_fusion_mid = DinoFeatureFusion(dino_dim, gate_hidden)
        self.dino_fusion_deep = DinoFeatureFusion(dino_dim, gate_hidden)
        self.add_encoder()
        self.add_decoder()
        self.output = nn.Conv2d(d2, self.out_chans, kernel_size=3, padding=1, bias=s.bias)
        # Held outside the module tree: not in parameters(), state_dict() or optimisers.
        self._dino: tuple[Any, ...] = ()
        # a build on the meta device (a shape probe, e.g. of load_model) loads no DINO
        if dino is not None and self.output.weight.device.type != "meta":
            from ramir.models.rampp_dino import DinoExtractor

            self.attach_dino(DinoExtractor.from_pretrained(dino, dtype=dino_dtype))

    # -- the DINO ---------------------------------------------------------------------
    @property
    def dino(self) -> Any:
        """The attached :class:`~ramir.models.rampp_dino.DinoExtractor`, or ``None``."""
        return self._dino[0] if self._dino else None

    def attach_dino(self, extractor: Any) -> RestormerRFR:
        """Use ``extractor`` (a :class:`~ramir.models.rampp_dino.DinoExtractor`) for
        ``model(lq)``; it is moved to this model's device. Returns the model."""
        if extractor.hidden_size != self.dino_dim:
            raise ValueError(
                f"the DINO gives {extractor.hidden_size}-channel features, this network "
                f"takes dino_dim={self.dino_dim}"
            )
        p = next(self.parameters())
        extractor.to(p.device)
        self._dino = (extractor,)
        return self

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> RestormerRFR:
        super()._apply(fn, recurse)
        if self._dino:  # follow .to(device); the DINO keeps its own dtype
            device = next(self.parameters()).device
            self._dino[0].to(device)
        return self

    # -- forward ----------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        lq: torch.Tensor,
        features: Mapping[str, torch.Tensor] | None = None,
        *,
        check_finite: bool = True,
    ) -> torch.Tensor:
        """Restore ``lq`` with the DINO ``features`` (computed when ``None``)."""
        check_images(lq, self.in_chans, self.min_size, finite=check_finite)
        h, w = lq.shape[-2:]
        x = pad_to_multiple(lq, self.input_multiple, "reflect")
        if features is None:
            if self.dino is None:
                raise ValueError(
                    "RestormerRFR needs DINOv2 features: build or load it with dino=DIR (a "
                    "Hugging Face DINOv2 folder, e.g. facebook/dinov2-giant), call "
                    "attach_dino(...), or pass model(lq, features)"
                )
            layers = None
            if self.training and self.train_features == "release":
                layers = (33,) * 6
            features = self.dino.features(
                lq, self.normalization, grid=self.token_grid, layers=layers
            )
        return self.forward_padded(x, features)[..., :h, :w]

    def _features(
        self, features: Mapping[str, torch.Tensor], b: int, gh: int, gw: int
    ) -> list[torch.Tensor]:
        missing = [k for k in FEATURE_NAMES if k not in features]
        if missing:
            raise ValueError(f"DINO features missing: {', '.join(missing)}")
        out = []
        for k in FEATURE_NAMES:
            f = features[k]
            if tuple(f.shape) != (b, self.dino_dim, gh, gw):
                raise ValueError(
                    f"DINO feature {k} must be ({b}, {self.dino_dim}, {gh}, {gw}) (the padded "
                    f"input's size / 8), got {tuple(f.shape)}"
                )
            out.append(f.to(self.output.weight.dtype))
        return out

    def forward_padded(  # type: ignore[override]
        self, x: torch.Tensor, features: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """``x`` ``(B, C, H, W)``, multiples of 16, and features on the ``H/8 x W/8`` grid
        -> ``(B, C_out, H, W)``."""
        b, _, hp, wp = x.shape
        sh1, mid1, deep1, sh2, mid2, deep2 = self._features(features, b, hp // 8, wp // 8)
        enc1, enc2, enc3, latent = self.encode(self.patch_embed(x))
        shallow = self.dr_adaptation1(self.dino_fusion_shallow(sh1, sh2))
        mid = self.dr_adaptation2(self.dino_fusion_mid(mid1, mid2))
        deep = self.dr_adaptation3(self.dino_fusion_deep(deep1, deep2))
        latent = self.dr_fusion1(deep, latent)
        dec3 = self.decoder_level3(
            self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], dim=1))
        )
        dec3 = self.dr_fusion2(self.up_4_3_dino2(mid), dec3)
        dec2 = self.decoder_level2(
            self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        )
        dec2 = self.dr_fusion3(self.up_3_2_dino(self.up_4_3_dino1(shallow)), dec2)
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1)))
        return self.output(dec1)


DINO_SIDE = (
    "dr_adaptation",
    "dr_fusion",
    "up_4_3_dino",
    "up_3_2_dino",
    "dino_fusion_",
)
"""Name prefixes of the modules RestormerRFR adds to the Restormer."""
GATE = "dino_fusion_shallow.gate_network.0.weight"
"""The first DINO fusion gate's weight, a name only RestormerRFR has."""


def detect(state_dict: Mapping[str, torch.Tensor], hint: str | None = None) -> bool:
    """Whether ``state_dict`` is a RestormerRFR's: told by its DINO fusion gate
    (``dino_fusion_shallow.gate_network.0.weight``) on the layout of the RAM++
    pretraining network (:func:`~ramir.models.adasam_restormer.is_woskip_layout`)."""
    if GATE not in state_dict:
        return False
    return is_woskip_layout(_restormer_side(state_dict))


def kwargs_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The sizes of the Restormer side (``dim``, blocks, heads, ...) and of the DINO
    fusion (``dino_dim``, ``gate_hidden``), read from the tensor shapes."""
    kwargs = woskip_kwargs(_restormer_side(state_dict))
    kwargs["dino_dim"] = int(state_dict[GATE].shape[1]) // 2
    kwargs["gate_hidden"] = int(state_dict["dino_fusion_shallow.gate_network.2.weight"].shape[0])
    return kwargs


def _restormer_side(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith(DINO_SIDE)}

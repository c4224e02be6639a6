"""RAM++ pretraining in functions: the AdaSAM probabilities, the step's forward and losses.

RAM++ (Zhang et al., 2025, arXiv 2509.12039; docs/rampp.md) pretrains a restoration
network on masked degraded images like RAM, but the mask comes from a second network,
the AdaSAM generator (:class:`ramir.models.adasam.AdaptiveMaskPixGenerator`), trained
jointly and against it: it learns to hide the pixels the restoration network gets most
wrong. One step (:func:`pretrain_forward`, then one backward of ``l_pix + l_prob``):

1. ``mask, pixel_probs, _ = generator(lq)``: a pixel mask drawn from the generator's
   token probabilities (no gradient through the draw);
2. ``pred = net(lq, mask)``: hidden pixels of ``lq`` become the mask token (zeros);
3. ``l_pix`` (masked L1, trains ``net``) and ``l_prob`` (the probability loss on the
   *detached* prediction, trains only the generator): :func:`pretrain_losses`.

>>> import torch
>>> from ramir.models import build_model
>>> from ramir import rampp
>>> gen = build_model("adasam", img_size=16, patch_size=4, embed_dim=16)
>>> rampp.token_probs(gen, torch.zeros(2, 3, 16, 16)).shape
torch.Size([2, 16])

Every tensor is in the networks' normalised space (ImageNet mean/std, as the release's
data). The DINOv2 feature fusion of RAM++ fine-tuning and its MAC reveal order are not
part of this module yet.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ramir.models.adasam import AdaptiveMaskPixGenerator, MaskDraw

__all__ = [
    "token_probs",
    "pixel_probs",
    "pretrain_losses",
    "pretrain_forward",
    "PretrainOutput",
    "MaskDraw",
    "EPS_COUNT",
    "EPS_LOG",
]

EPS_COUNT = 1e-5
"""Added to the number of hidden pixels in both losses (the release's)."""
EPS_LOG = 1e-6
"""Added to the probabilities before the logarithm of the probability loss."""


def _bare(module: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def token_probs(generator: AdaptiveMaskPixGenerator, x: torch.Tensor) -> torch.Tensor:
    """The generator's softmax over tokens.

    Args:
        generator: the AdaSAM network (not a random generator).
        x: ``(B, 3, S, S)`` normalised images, ``S`` the generator's ``img_size``.

    Returns:
        ``(B, N)``, ``N = (S / patch_size)^2`` tokens in row-major order; each row sums
        to 1. Differentiable with respect to the generator's parameters.
    """
    return _bare(generator).token_probs(x)


def pixel_probs(generator: AdaptiveMaskPixGenerator, x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)``: every pixel of ``x`` ``(B, 3, S, S)`` carries its token's probability
    (the release's ``p_x_full``; rows of ``patch_size^2`` equal values, summing to
    ``patch_size^2`` per image)."""
    net = _bare(generator)
    return net.pixel_probs(net.token_probs(x))


def pretrain_losses(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    p_x: torch.Tensor,
    pixel_weight: float = 1.0,
    prob_weight: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two RAM++ pretraining losses (the release's ``AdaptiveMaskL1Loss`` and
    ``AdaptiveMaskProbL1Loss``).

    With ``M`` the hidden-pixel count of the batch (``mask.sum()``) and ``C`` channels:

    * ``l_pix = pixel_weight * sum(|pred - gt| * mask) / (M + 1e-5) / C``: L1 on the
      hidden pixels (every channel of a hidden pixel counts);
    * ``l_prob = -prob_weight * sum(|pred' - gt| * mask * log(p_x + 1e-6)) / (M + 1e-5) / C``
      with ``pred' = pred.detach()``: its gradient reaches only ``p_x`` (the generator);
      minimising it raises the probability of the hidden pixels that are restored badly.

    Args:
        pred, gt: ``(B, C, H, W)`` in the same (normalised) space.
        mask: ``(B, 1, H, W)`` or ``(B, H, W)``, 1 = hidden (the generator's draw).
        p_x: ``(B, 1, H, W)`` or ``(B, H, W)`` pixel probabilities (``pixel_probs``), in
            (0, 1].
        pixel_weight, prob_weight: the loss weights (the release: 1 and 1e-4).

    Returns:
        ``(l_pix, l_prob)``, two scalar tensors.
    """
    if pred.shape != gt.shape or pred.dim() != 4:
        raise ValueError(
            f"pred and gt must be (B, C, H, W) of one shape, got {tuple(pred.shape)} and "
            f"{tuple(gt.shape)}"
        )
    b, c, h, w = pred.shape
    m = _as_map(mask, b, h, w, "mask").to(pred.dtype)
    p = _as_map(p_x, b, h, w, "p_x")
    hidden = m.sum() + EPS_COUNT
    l_pix = pixel_weight * ((pred - gt).abs() * m).sum() / hidden / c
    err = (pred.detach() - gt).abs()
    l_prob = -prob_weight * (err * m * torch.log(p + EPS_LOG)).sum() / hidden / c
    return l_pix, l_prob


def _as_map(x: torch.Tensor, b: int, h: int, w: int, name: str) -> torch.Tensor:
    """``(B, 1, H, W)`` view of a ``(B, 1, H, W)`` or ``(B, H, W)`` per-pixel map."""
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4 or tuple(x.shape) != (b, 1, h, w):
        raise ValueError(
            f"{name} must be ({b}, 1, {h}, {w}) or ({b}, {h}, {w}), got {tuple(x.shape)}"
        )
    return x


class PretrainOutput(NamedTuple):
    """What :func:`pretrain_forward` returns.

    Attributes:
        pred: ``(B, 3, H, W)`` the restoration network's prediction.
        mask: ``(B, 1, H, W)`` the drawn mask, 1 = hidden (no gradient).
        pixel_probs: ``(B, 1, H, W)`` the generator's pixel probabilities.
        l_pix, l_prob: the two losses (scalars); their sum is what the step minimises.
    """

    pred: torch.Tensor
    mask: torch.Tensor
    pixel_probs: torch.Tensor
    l_pix: torch.Tensor
    l_prob: torch.Tensor


def pretrain_forward(
    net: nn.Module,
    generator: nn.Module,
    lq: torch.Tensor,
    gt: torch.Tensor,
    *,
    rng: torch.Generator | None = None,
    pixel_weight: float = 1.0,
    prob_weight: float = 1e-4,
    check_finite: bool = True,
) -> PretrainOutput:
    """The forward part of one RAM++ pretraining step (backward ``l_pix + l_prob`` after).

    Args:
        net: the restoration network (``forward(lq, mask)``, e.g.
            ``adasam_restormer_woskip``), or its DistributedDataParallel wrapper.
        generator: the AdaSAM network (or its wrapper); its size is the crop size.
        lq, gt: ``(B, 3, S, S)`` degraded and clean images, normalised.
        rng: RNG of the mask draw (``None``: PyTorch's global one, as the release).
        pixel_weight, prob_weight: see :func:`pretrain_losses`.
        check_finite: check the inputs for NaN/Inf (one device sync each).

    Returns:
        :class:`PretrainOutput`. The losses are computed in float32.
    """
    draw: MaskDraw = generator(lq, generator=rng, check_finite=check_finite)
    mask = draw.mask.detach()
    pred = net(lq, mask[:, 0], check_finite=check_finite)  # (B, H, W): any ramir backbone
    l_pix, l_prob = pretrain_losses(
        pred.float(), gt.float(), mask.float(), draw.pixel_probs.float(), pixel_weight, prob_weight
    )
    return PretrainOutput(pred, mask, draw.pixel_probs, l_pix, l_prob)

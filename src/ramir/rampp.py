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
data).

Fine-tuning and MAC (docs/rampp.md): :func:`dino_pixel_values` and :func:`dino_features`
give RestormerRFR's DINOv2 input and its six features; :func:`mac_order` the MAC reveal
order from the generator's probabilities; :func:`rfr_selection` and
:func:`freeze_for_finetuning` the layers the release fine-tunes from its
``filter_name_RFR.txt`` at a ratio (:func:`ramir.training.finetune.rfr_names` makes such
a list from the pretraining network's MAC ranking); :func:`init_from_pretraining` the
release's start of fine-tuning. ``ramir finetune`` with ``model.name: restormer_rfr`` and
``model.dino: DIR`` trains it (:mod:`ramir.training.model`); :func:`save_tiny_dino`
writes a tiny random DINOv2 folder for tests and CPU runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ramir.models.adasam import AdaptiveMaskPixGenerator, MaskDraw

__all__ = [
    "dino_features",
    "dino_pixel_values",
    "freeze_for_finetuning",
    "init_from_pretraining",
    "mac_order",
    "rfr_selection",
    "save_tiny_dino",
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


# ----------------------------------------------------------------------------- fine-tuning


def _rfr(model: nn.Module):  # noqa: ANN202 - RestormerRFR, imported lazily
    from ramir.models.restormer_rfr import RestormerRFR

    net = _bare(model)
    if not isinstance(net, RestormerRFR):
        raise TypeError(f"a RestormerRFR is needed, got {type(net).__name__}")
    if net.dino is None:
        raise ValueError("this RestormerRFR has no DINOv2: load it with dino=DIR or attach_dino")
    return net


def dino_pixel_values(model: nn.Module, lq: torch.Tensor) -> torch.Tensor:
    """The DINOv2 input of a RestormerRFR for ``lq`` ``(B, 3, H, W)`` (normalised):
    ``(B, 3, 14 H_pad / 8, 14 W_pad / 8)`` float32, ``H_pad, W_pad`` the sizes padded to 16
    (:meth:`ramir.models.rampp_dino.DinoExtractor.pixel_values`)."""
    net = _rfr(model)
    return net.dino.pixel_values(lq, net.normalization)


def dino_features(
    model: nn.Module, lq: torch.Tensor, *, layers: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """The six DINO features of ``lq`` for ``model`` (a RestormerRFR with its DINOv2), in the
    release's key order ``shallow_feat1, mid_feat1, deep_feat1, shallow_feat2, mid_feat2,
    deep_feat2``, each ``(B, dino_dim, H_pad / 8, W_pad / 8)`` float32 (hidden states 7, 20,
    33, 15, 22, 39; ``layers`` overrides them, e.g. ``(33,) * 6`` as the release's
    fine-tuning step). ``model(lq, dino_features(model, lq))`` equals ``model(lq)``."""
    net = _rfr(model)
    return net.dino.features(lq, net.normalization, grid=net.token_grid, layers=layers)


def mac_order(generator: nn.Module, lq: torch.Tensor, *, release: bool = False) -> torch.Tensor:
    """RAM++'s MAC reveal order: every image's pixels by ascending AdaSAM probability
    (the pixels least likely to be hidden are revealed first).

    Args:
        generator: the AdaSAM network; ``lq`` ``(B, 3, S, S)`` at its size.
        release: the release's order: one ``argsort`` of the probabilities flattened over
            the whole batch (indices run to ``B * S * S``: a valid order only at ``B = 1``)
            with PyTorch's default (unstable) tie-breaking. Default: one order per image,
            ties (all pixels of a patch share a probability) by pixel index.

    Returns:
        ``(B, S * S)`` long (``release``: ``(1, B * S * S)``), for
        :func:`ramir.attribution.mask_attribution_conductance`'s ``order=``.
    """
    with torch.no_grad():
        p = pixel_probs(generator, lq)
    if release:
        return torch.argsort(p.flatten()).unsqueeze(0)
    return torch.argsort(p.flatten(1), dim=1, stable=True)


def rfr_selection(names: Sequence[str], ratio: float, *, release_prefix: bool = False) -> list[str]:
    """The first ``int(len(names) * ratio)`` module names of an RFR list (the release's
    ``filter_name_RFR.txt``: the 33 DINO-side modules, then the MAC ranking); 0.358 is
    the release's "30%" (33 + 124 names of 439), 1.0 everything.

    ``release_prefix=True`` prefixes ``module.`` as the release does, which names nothing
    of a network not wrapped in DistributedDataParallel.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    chosen = list(names)[: int(len(names) * ratio)]
    return ["module." + n for n in chosen] if release_prefix else chosen


def freeze_for_finetuning(
    model: nn.Module, names: Sequence[str], ratio: float, *, release_prefix: bool = False
) -> tuple[int, int]:
    """Train only the parameters of the modules :func:`rfr_selection` chooses: a parameter
    trains when its owner's dotted name is in the selection (the release's rule); all
    others are frozen. Returns ``(trainable, total)`` parameter counts.

    Unlike the release, which silently trains nothing then, a selection that matches no
    parameter raises ``ValueError`` (``release_prefix=True`` without a wrapper does that).
    """
    chosen = set(rfr_selection(names, ratio, release_prefix=release_prefix))
    total = trainable = 0
    for name, p in model.named_parameters():
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        p.requires_grad_(owner in chosen)
        total += p.numel()
        trainable += p.numel() if owner in chosen else 0
    if chosen and trainable == 0:
        raise ValueError(
            f"the selection ({len(chosen)} names, e.g. {sorted(chosen)[0]!r}) matches no "
            "parameter of the model (a 'module.' prefix on a network without a wrapper?)"
        )
    return trainable, total


def init_from_pretraining(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Start fine-tuning as the release does: the pretraining network's weights (the
    ``params`` of ``RestormerWoSkip.pth``, or ``adasam_restormer_woskip``'s state dict)
    into a RestormerRFR's Restormer part; the DINO-side modules keep their
    initialisation (the release loads with ``strict=False``).

    Unlike ``strict=False``, every Restormer-part key must be there with its shape and no
    other key may be: a file of another size raises ``ValueError`` instead of leaving
    layers random. Returns the state-dict names left at their initialisation (the 51
    DINO-side keys at the release's size).
    """
    from ramir.models.restormer_rfr import DINO_SIDE

    net = _bare(model)
    own = net.state_dict()
    part = {k: v for k, v in own.items() if not k.startswith(DINO_SIDE)}
    given = {k: v for k, v in state_dict.items() if not k.startswith(DINO_SIDE)}
    missing = sorted(set(part) - set(given))
    extra = sorted(set(given) - set(part))
    shapes = [k for k in part if k in given and tuple(given[k].shape) != tuple(part[k].shape)]
    if missing or extra or shapes:
        raise ValueError(
            "the pretraining weights do not fit this RestormerRFR's Restormer part: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected "
            f"(e.g. {extra[:2]}), {len(shapes)} with another shape (e.g. {shapes[:2]})"
        )
    net.load_state_dict(given, strict=False)
    return [k for k in own if k.startswith(DINO_SIDE)]


TINY_DINO = dict(
    hidden_size=16,
    num_hidden_layers=40,
    num_attention_heads=2,
    mlp_ratio=2,
    patch_size=14,
    image_size=56,
    layerscale_value=1.0,
    use_swiglu_ffn=False,
)
"""The tiny DINOv2 of :func:`save_tiny_dino`: DINOv2-giant's 40 layers (the six hidden
states exist), width 16."""

DINO_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 256},
}
"""DINOv2's ``preprocessor_config.json`` (that of ``facebook/dinov2-giant``)."""


def save_tiny_dino(folder: str | Path, *, seed: int = 0, **config: int | float | bool) -> Path:
    """Write a tiny, randomly initialised DINOv2 as a Hugging Face folder (``config.json``,
    weights, ``preprocessor_config.json``), for tests and CPU runs of RestormerRFR
    (``model.dino: FOLDER``, ``dino_dim`` = its ``hidden_size``, 16 by default). Nothing is
    downloaded; the weights come from ``torch.manual_seed(seed)`` (the global RNG is left
    as it was).

    Args:
        folder: where to write (created).
        seed: the initialisation's seed.
        config: ``transformers.Dinov2Config`` fields over :data:`TINY_DINO`.

    Returns:
        ``folder``.
    """
    try:
        import transformers
    except ImportError:
        from ramir.errors import ResourceError

        raise ResourceError(
            "a DINOv2 is built with transformers: pip install 'ramir[rampp]'"
        ) from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.Dinov2Model(transformers.Dinov2Config(**{**TINY_DINO, **config}))
    model.eval().save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(DINO_PROCESSOR, indent=2))
    return out

"""Architecture detection: which registered backbone a bare state dict is, and its size.

A file without ramir's metadata (a release, or a plain state dict) says nothing of its
architecture; :func:`infer_arch` reads it from the parameter names and shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ramir.errors import CheckpointError
from ramir.models import MODELS

__all__ = ["infer_arch"]


def _count(keys: set[str], prefix: str) -> int:
    """Number of numbered children ``prefix.<i>.`` among ``keys``."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _ffn_factor(state_dict: Mapping[str, torch.Tensor], widths: Mapping[str, int]) -> float:
    """The GDFN expansion factor ``f`` with ``int(width * f)`` equal to every level's
    hidden width (``project_out`` input channels); 2.66, the released value, first."""
    hidden = {
        width: state_dict[f"{prefix}.0.ffn.project_out.weight"].shape[1]
        for prefix, width in widths.items()
        if f"{prefix}.0.ffn.project_out.weight" in state_dict
    }
    if not hidden:
        return 2.66
    # int(w * f) == h  <=>  h / w <= f < (h + 1) / w, for every level
    low = max(h / w for w, h in hidden.items())
    high = min((h + 1) / w for w, h in hidden.items())
    for f in (2.66, low, (low + high) / 2):
        if all(int(w * f) == hw for w, hw in hidden.items()):
            return f
    raise CheckpointError(
        f"no single feed-forward expansion factor fits the hidden widths {hidden}"
    )


def _restormer_kwargs(sd: Mapping[str, torch.Tensor], keys: set[str]) -> dict[str, Any]:
    """Constructor arguments shared by Restormer and PromptIR, read from the weights."""
    dim = sd["patch_embed.proj.weight"].shape[0]
    levels = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
    heads = [
        sd[f"{p}.0.attn.temperature"].shape[0] if f"{p}.0.attn.temperature" in sd else 1
        for p in levels
    ]
    return {
        "dim": dim,
        "num_blocks": [_count(keys, p) for p in levels],
        "num_refinement_blocks": _count(keys, "refinement"),
        "heads": heads,
        "ffn_expansion_factor": _ffn_factor(sd, {p: dim * 2**i for i, p in enumerate(levels)}),
        "bias": "encoder_level1.0.attn.qkv.bias" in keys,
        "LayerNorm_type": "WithBias" if "encoder_level1.0.norm1.body.bias" in keys else "BiasFree",
    }


def _swin_kwargs(sd: Mapping[str, torch.Tensor], keys: set[str]) -> dict[str, Any]:
    """Constructor arguments of a SwinIR-family state dict (RAM-SwinIR or classic)."""
    embed = sd["conv_first.weight"].shape[0]
    depths: list[int] = []
    heads: list[int] = []
    window = 8
    for i in range(_count(keys, "layers")):
        depths.append(_count(keys, f"layers.{i}.residual_group.blocks"))
        table = sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
        heads.append(table.shape[1])
        window = (round(table.shape[0] ** 0.5) + 1) // 2
    fc1 = sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"]
    ratio = fc1.shape[0] / embed
    return {
        "in_chans": sd["conv_first.weight"].shape[1],
        "embed_dim": embed,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": int(ratio) if ratio == int(ratio) else ratio,
        "resi_connection": "3conv" if "conv_after_body.0.weight" in keys else "1conv",
    }


def infer_arch(
    state_dict: Mapping[str, torch.Tensor], hint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Guess the architecture and its constructor arguments from parameter names/shapes.

    Files without ramir metadata are releases: RAM's (``ram_swinir``, ``ram_promptir``,
    ImageNet-normalised input) or the field's (``nafnet``, ``swinir``, ``restormer``,
    ``promptir``), which get their own input convention (RGB in [0, 1]; NAFNet's zero
    padding). Classic SwinIR's ``img_range`` is not stored: window 7 means the JPEG
    models (255), otherwise the denoising models (1).

    RAM++'s networks are asked first: the AdaSAM mask generator is told by its keys; its
    pretraining Restormer has a plain Restormer's keys, so it is recognised only when
    ``hint`` (the file name or the architecture asked for) contains ``woskip``, as the
    release's ``RestormerWoSkip.pth`` does. RAM++'s fine-tuned RestormerRFR is told by its
    DINO fusion gates (its DINOv2 is not in the file: ``load_model(path, dino=DIR)``).

    Raises:
        CheckpointError: no architecture fits, or the names fit one but entries its
            size is read from are missing or mis-shaped (a partial state dict).
    """
    try:
        return _infer_arch(state_dict, hint)
    except CheckpointError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        what = f"entry {e}" if isinstance(e, KeyError) else f"an entry ({type(e).__name__}: {e})"
        raise CheckpointError(
            "the checkpoint's parameter names look like a known architecture, but "
            f"{what} that its size is read from is missing or mis-shaped: is it a partial "
            "or edited state dict? A complete file loads; ramir cannot guess the rest"
        ) from None


def _infer_arch(
    state_dict: Mapping[str, torch.Tensor], hint: str | None
) -> tuple[str, dict[str, Any]]:
    from ramir.models import adasam, adasam_restormer, restormer_rfr

    for detect in (adasam.detect, restormer_rfr.detect, adasam_restormer.detect):
        if (found := detect(state_dict, hint)) is not None:
            return found
    keys = set(state_dict)
    if "conv_first.weight" in keys and any(".residual_group.blocks." in k for k in keys):
        if any(k.startswith(("conv_before_upsample.", "upsample.", "conv_up1.")) for k in keys):
            raise CheckpointError(
                "this is a SwinIR super-resolution checkpoint (it has an upsampler); ramir "
                "restores at the input resolution: use SwinIR's denoising or JPEG models"
            )
        kwargs = _swin_kwargs(state_dict, keys)
        if "mask_token" in state_dict or state_dict["conv_first.weight"].shape[-1] == 1:
            if "mask_token" in state_dict:
                kwargs["img_size"] = state_dict["mask_token"].shape[-1]
            return "ram_swinir", kwargs
        window = kwargs["window_size"]
        masks = [k for k in keys if k.endswith(".attn_mask")]
        n_windows = state_dict[masks[0]].shape[0] if masks else 64
        kwargs["img_size"] = window * max(round(n_windows**0.5), 2)
        kwargs["img_range"] = 255.0 if window == 7 else 1.0
        kwargs["normalization"] = "none"
        return "swinir", kwargs
    if "patch_embed.proj.weight" in keys and "encoder_level1.0.attn.temperature" in keys:
        kwargs = _restormer_kwargs(state_dict, keys)
        if "prompt1.prompt_param" in keys:
            if "chnl_reduce1.weight" in keys:  # the original release's unused layers
                return "promptir", {**kwargs, "normalization": "none"}
            return "ram_promptir", kwargs
        kwargs.update(
            inp_channels=state_dict["patch_embed.proj.weight"].shape[1],
            out_channels=state_dict["output.weight"].shape[0],
            dual_pixel_task="skip_conv.weight" in keys,
            normalization="none",
        )
        return "restormer", kwargs
    if "intro.weight" in keys and "ending.weight" in keys:
        return "nafnet", {
            "img_channel": state_dict["intro.weight"].shape[1],
            "width": state_dict["intro.weight"].shape[0],
            "enc_blk_nums": [_count(keys, f"encoders.{i}") for i in range(_count(keys, "downs"))],
            "middle_blk_num": _count(keys, "middle_blks"),
            "dec_blk_nums": [_count(keys, f"decoders.{i}") for i in range(_count(keys, "ups"))],
            "normalization": "none",
            "padding": "zeros",
        }
    raise CheckpointError(
        "cannot recognise the architecture from the checkpoint's parameter names "
        f"(first keys: {', '.join(list(state_dict)[:5])}); pass arch=NAME "
        f"(one of: {', '.join(MODELS.names())})"
    )

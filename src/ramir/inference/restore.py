"""Restore images with a trained model: whole-image or tiled inference.

>>> import ramir
>>> model = ramir.load_model("model.safetensors")          # doctest: +SKIP
>>> out = ramir.restore(model, "photo.jpg", tile=512)      # doctest: +SKIP
>>> ramir.data.write_image("restored.jpg", out.rgb, like=out)  # doctest: +SKIP

:func:`restore` normalises the input with ``model.normalization``, lets the model pad
to its ``input_multiple`` and crop back, maps the output back to [0, 1] and clamps it.
``tile=N`` runs it in overlapping tiles with the whole image's pooled statistics
(:mod:`ramir.inference.tiling`, :mod:`ramir.inference.context`); :mod:`ramir.inference.batch`
restores files and folders with it.

``ensemble="flip"`` or ``"x8"`` is test-time self-ensembling: the model also restores
mirrored (and, for ``x8``, rotated) copies, each output is mapped back and the outputs are
averaged (2 or 8 passes; slower, usually a little better, see the README).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import torch
from torch import nn

from ramir.errors import UsageError
from ramir.inference import context as context_module  # CONTEXT_PIXELS read at call time
from ramir.inference.batching import BatchSize, apply_in_batches, check_batch_size
from ramir.inference.context import GlobalContext, context_image, global_pooling_layers
from ramir.inference.tiling import check_tile_count, check_tiling, tiled_apply
from ramir.options import ENSEMBLES

if TYPE_CHECKING:
    from ramir.data.read import LoadedImage

__all__ = [
    "LUMA_WEIGHTS",
    "input_channels",
    "takes_dino_features",
    "check_dino",
    "restore",
    "restore_tensor",
    "default_model_path",
    "DEFAULT_MODEL_FILE",
    "Ensemble",
    "ensemble_passes",
]

Ensemble = Literal["none", "flip", "x8"]
"""Test-time self-ensemble: one pass, + mirrored copy, or all 8 flips and rotations."""


DEFAULT_MODEL_FILE = "default_model.safetensors"
"""File name of the default model inside ``ramir/assets``."""


def default_model_path() -> Path:
    """Path of the model that ships with the package, used when no ``--model`` is given.

    Raises:
        FileNotFoundError: this installation ships no default model yet.
    """
    ref = resources.files("ramir") / "assets" / DEFAULT_MODEL_FILE
    path = Path(str(ref))
    if not path.is_file():
        raise FileNotFoundError(
            "no default model ships with this version of ramir; pass a checkpoint with "
            "--model PATH (a ramir .safetensors file or an official RAM .pth)"
        )
    return path


# ----------------------------------------------------------------------------- restoring


# ITU-R BT.601 luma weights (as OpenCV's RGB-to-gray, which the gray releases' test
# scripts read their images with).
LUMA_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])


def input_channels(model: nn.Module) -> int:
    """3 for RGB models, 1 for gray ones; a clear error for models that take something
    else than one image (Restormer's dual-pixel model takes two views, 6 channels) or do
    not restore at all (a model whose ``restores_images`` is false)."""
    if not getattr(model, "restores_images", True):
        arch = getattr(model, "arch_name", type(model).__name__)
        raise ValueError(
            f"this model ({arch}) does not restore images: RAM++'s AdaSAM mask generator "
            "scores which pixels to hide during pretraining; restore with the restoration "
            "network instead (e.g. the pretraining or fine-tuned Restormer)"
        )
    in_ch = int(getattr(model, "in_chans", 3))
    out_ch = int(getattr(model, "out_chans", in_ch))
    if in_ch not in (1, 3) or out_ch != in_ch:
        raise ValueError(
            f"this model takes {in_ch} input channels and returns {out_ch} (e.g. Restormer's "
            "dual-pixel defocus model, whose input is the two views of a dual-pixel "
            f"sensor); restoring photos needs an RGB or gray model: call the model "
            f"directly on a (B, {in_ch}, H, W) tensor in [0, 1]"
        )
    return in_ch


def takes_dino_features(model: nn.Module) -> bool:
    """Whether ``model`` restores with DINOv2 features (RAM++'s RestormerRFR), which its
    checkpoint does not contain: ``model(lq)`` needs a DINOv2 attached (``dino=DIR``)."""
    return callable(getattr(model, "attach_dino", None))


def check_dino(model: nn.Module) -> None:
    """Refuse a model that restores with DINOv2 features but has no DINOv2 attached.

    Raises:
        UsageError: what is missing and the flag (``--dino DIR``) or argument
            (``load_model(path, dino=DIR)``) that gives it.
    """
    if takes_dino_features(model) and getattr(model, "dino", None) is None:
        arch = getattr(model, "arch_name", type(model).__name__)
        raise UsageError(
            f"this model ({arch}) restores with DINOv2 features, and RAM++ checkpoints do not "
            "contain the DINOv2: give a Hugging Face DINOv2 folder (e.g. facebook/dinov2-giant) "
            "with --dino DIR, or load_model(path, dino=DIR) in Python"
        )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for buf in model.buffers():
        return buf.device
    return torch.device("cpu")


def ensemble_passes(ensemble: str) -> tuple[tuple[int, bool], ...]:
    """The passes of self-ensemble ``ensemble`` (see :data:`ENSEMBLES`).

    Raises:
        ValueError: ``ensemble`` is not one of :data:`ENSEMBLES`.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    return ENSEMBLES[ensemble]


def restore_tensor(
    model: nn.Module,
    x: torch.Tensor,
    *,
    tile: int | None = None,
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    ensemble: Ensemble = "none",
    global_context: bool = True,
    batch_size: BatchSize | None = None,
) -> torch.Tensor:
    """Restore ``(B, 3, H, W)`` float images in [0, 1]; see :func:`restore`.

    Returns ``(B, 3, H, W)`` float32 in [0, 1] on ``x``'s device. A gray model (one
    input channel) also takes ``(B, 1, H, W)`` and then returns that shape; RGB input is
    converted to its BT.601 luma for it and the gray result returned in three channels.
    ``batch_size``: see :func:`restore`.
    """
    gray_in = isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 1
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not (x.shape[1] == 3 or gray_in):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, 3, H, W) tensor, got {shape}")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected float images in [0, 1], got {x.dtype}")
    if device is not None:
        device = torch.device(device)
        model.to(device)
    else:
        device = _model_device(model)
    if half and device.type != "cuda":
        raise ValueError(f"half precision needs a CUDA device; the model runs on {device}")
    passes = ensemble_passes(ensemble)
    if batch_size is not None:
        batch_size = check_batch_size(batch_size)
    if tile is not None:
        check_tiling(tile, tile_overlap)  # before any pass of the model
        min_size = int(getattr(model, "min_size", 1))
        if tile < min_size:
            raise ValueError(f"tile {tile} is smaller than this model's minimum size {min_size}")
        check_tile_count(*x.shape[-2:], tile, tile_overlap)
    norm = getattr(model, "normalization", None)
    gray = input_channels(model) == 1
    check_dino(model)
    if gray_in and not gray:
        raise ValueError(
            f"this model restores RGB images: expected (B, 3, H, W), got {tuple(x.shape)}"
        )

    def run(
        patch: torch.Tensor, context: Literal["record", "replay"] | None = None
    ) -> torch.Tensor:
        patch = patch.float()
        if gray and not gray_in:  # a gray model (SwinIR/Restormer gray releases): luma in
            patch = (patch * LUMA_WEIGHTS.to(patch.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        inp = norm.normalize(patch) if norm is not None else patch
        ctx = (
            torch.autocast(device_type="cuda", dtype=torch.float16)
            if half
            else contextlib.nullcontext()
        )
        out: torch.Tensor | None = None
        for k, (turns, mirror) in enumerate(passes):
            t = inp.flip(-1) if mirror else inp
            t = torch.rot90(t, turns, dims=(-2, -1)) if turns else t
            if context is not None:
                assert pooled is not None
                pooled.start(context, k)
            with ctx:
                o = model(t).float()
            o = torch.rot90(o, -turns, dims=(-2, -1)) if turns else o
            o = o.flip(-1) if mirror else o
            out = o if out is None else out + o  # out of place: o may alias the input
        assert out is not None
        if len(passes) > 1:
            out = out / len(passes)
        out = norm.denormalize(out) if norm is not None else out
        if gray and not gray_in:
            out = out.expand(-1, 3, -1, -1)
        return out.clamp(0.0, 1.0)  # not in place: out may be the caller's input

    was_training = model.training
    model.eval()
    h, w = x.shape[-2:]
    pooled: GlobalContext | None = None
    if tile is not None and (h > tile or w > tile) and global_context:
        layers = global_pooling_layers(model)
        pooled = GlobalContext(layers) if layers else None
    try:
        with torch.inference_mode():
            if tile is None:
                if batch_size is None or x.shape[0] == 1:
                    return run(x.to(device)).to(x.device)
                outs: list[torch.Tensor] = []
                apply_in_batches(
                    run,
                    x.shape[0],
                    lambda j: x[j : j + 1].to(device),
                    lambda j, o: outs.append(o.to(x.device)),
                    batch_size=batch_size,
                    device=device,
                )
                return torch.cat(outs)
            fn = run
            if pooled is not None:
                run(context_image(x, context_module.CONTEXT_PIXELS).to(device), "record")
                fn = functools.partial(run, context="replay")
            tiles_per_call: BatchSize = 1
            if batch_size == "auto":
                tiles_per_call = "auto"
            elif batch_size is not None:
                tiles_per_call = max(1, batch_size // x.shape[0])
            return tiled_apply(
                fn,
                x,
                tile,
                tile_overlap,
                device=device,
                progress=progress,
                batch_size=tiles_per_call,
            )
    finally:
        if pooled is not None:
            pooled.close()
        model.train(was_training)


@overload
def restore(
    model: nn.Module | str | os.PathLike[str],
    image: torch.Tensor,
    *,
    tile: int | None = ...,
    tile_overlap: int = ...,
    device: torch.device | str | None = ...,
    half: bool = ...,
    progress: bool | Callable[[int, int], None] = ...,
    ensemble: Ensemble = ...,
    global_context: bool = ...,
    batch_size: BatchSize | None = ...,
) -> torch.Tensor: ...


@overload
def restore(
    model: nn.Module | str | os.PathLike[str],
    image: LoadedImage | str | os.PathLike[str],
    *,
    tile: int | None = ...,
    tile_overlap: int = ...,
    device: torch.device | str | None = ...,
    half: bool = ...,
    progress: bool | Callable[[int, int], None] = ...,
    ensemble: Ensemble = ...,
    global_context: bool = ...,
    batch_size: BatchSize | None = ...,
) -> LoadedImage: ...


def restore(
    model: nn.Module | str | os.PathLike[str],
    image: torch.Tensor | LoadedImage | str | os.PathLike[str],
    *,
    tile: int | None = None,
    tile_overlap: int = 32,
    device: torch.device | str | None = None,
    half: bool = False,
    progress: bool | Callable[[int, int], None] = False,
    ensemble: Ensemble = "none",
    global_context: bool = True,
    batch_size: BatchSize | None = None,
) -> torch.Tensor | LoadedImage:
    """Restore one image or a batch.

    Args:
        model: a ramir model (any ``nn.Module`` mapping ``(B, 3, H, W)`` to the same
            shape; if it has a ``normalization`` its input/output are normalised with
            it), or a checkpoint path loaded with :func:`ramir.checkpoint.load_model`.
            It is run in eval mode under ``torch.inference_mode``; its train/eval mode
            is restored afterwards.
        image: a ``(3, H, W)`` or ``(B, 3, H, W)`` float tensor in [0, 1]; a
            :class:`ramir.data.read.LoadedImage`; or an image file path (read with
            :func:`ramir.data.read.read_image`).
        tile: restore in overlapping ``tile x tile`` tiles (bounded memory); ``None``
            restores the whole image at once.
        tile_overlap: minimum overlap between tiles in pixels, blended smoothly;
            smaller than ``tile`` and at most 3/4 of it
            (:func:`ramir.inference.tiling.check_tiling`); an image may take at most
            :data:`ramir.inference.tiling.MAX_TILES` tiles (a :class:`ramir.errors.UsageError`
            before the model runs otherwise).
        device: where the model runs; the model is moved there. Default: the device
            the model is already on.
        half: float16 autocast (CUDA only).
        progress: ``True`` shows a progress bar over tiles; a callable gets
            ``progress(done, total)`` after each tile.
        ensemble: test-time self-ensemble. ``"none"``: one pass; ``"flip"``: also the
            left-right mirrored image (2 passes); ``"x8"``: all 8 flips and quarter
            turns (8 passes; suits models trained with rotation augmentation). The
            outputs are mapped back and averaged before clamping.
        global_context: with ``tile``, give the model's global-pooling layers the
            statistics of the whole image (downscaled to at most
            :data:`ramir.inference.context.CONTEXT_PIXELS`) instead of each tile's own; no effect on models
            without global pooling or without tiling.
        batch_size: how many tiles (or images of a batch) go through the network per
            call: a positive number or ``"auto"`` (on a GPU, measured from the first
            tile's memory, at most :data:`ramir.inference.batching.MAX_AUTO_BATCH`; 1 on a CPU,
            where batches are no faster). The result equals one at a time to float
            rounding. ``None`` (default): a batch tensor at once, tiles one at a time.

    Returns:
        For a tensor: a float32 tensor of the same shape in [0, 1], on the input's
        device. For a LoadedImage or a path: a LoadedImage with the restored ``rgb`` and
        the input's ``alpha``, ``mode``, ``bit_depth`` and ``path``, ready for
        ``write_image(out_path, result.rgb, like=result)``.
    """
    if isinstance(model, (str, os.PathLike)):
        from ramir.checkpoint import load_model

        model = load_model(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a checkpoint path, got {type(model)}")
    kwargs = dict(
        tile=tile,
        tile_overlap=tile_overlap,
        device=device,
        half=half,
        progress=progress,
        ensemble=ensemble,
        global_context=global_context,
        batch_size=batch_size,
    )
    if isinstance(image, torch.Tensor):
        if image.dim() == 3:
            return restore_tensor(model, image[None], **kwargs)[0]
        return restore_tensor(model, image, **kwargs)

    from ramir.data.read import LoadedImage, read_image

    if isinstance(image, (str, os.PathLike)):
        image = read_image(image)
    if not isinstance(image, LoadedImage):
        raise TypeError(
            "image must be a (3, H, W)/(B, 3, H, W) tensor, a LoadedImage or a file path, "
            f"got {type(image).__name__}"
        )
    rgb = restore_tensor(model, image.rgb[None], **kwargs)[0]
    return dataclasses.replace(image, rgb=rgb)

"""A model's row of an evaluation run: its cache headers (the checkpoint's SHA-256 and
the inference settings) and its batches, restored with
:func:`ramir.inference.restore.restore_tensor` and timed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ramir.config import to_dict
from ramir.evaluation.cache import CACHE_VERSION
from ramir.evaluation.config import EvalConfig, ModelSpec
from ramir.evaluation.rows import RowResults, RunContext, run_row

__all__ = ["inference_settings", "model_headers", "restore_items", "run_model_row"]


def inference_settings(cfg: EvalConfig) -> dict[str, Any]:
    """The inference settings a model row's results depend on (in its cache headers)."""
    return {
        "tile": cfg.tile,
        "tile_overlap": cfg.tile_overlap if cfg.tile else None,
        # only with tiles (caches of whole-image runs stay valid)
        **({"global_context": cfg.global_context} if cfg.tile else {}),
        "half": cfg.half,
        "y_channel": cfg.y_channel,
    }


def model_headers(ctx: RunContext, mspec: ModelSpec) -> dict[str, dict[str, Any]]:
    """``{set: cache header}`` of a model row's sets (the checkpoint is hashed on rank
    0; a missing file is an error on every rank)."""
    from ramir.checkpoint import file_sha256
    from ramir.distributed import agree

    ckpt = Path(mspec.checkpoint).expanduser()

    def check_checkpoint() -> str:
        if not ckpt.is_file():
            raise FileNotFoundError(f"model {mspec.name!r}: checkpoint not found: {ckpt}")
        return file_sha256(ckpt)

    sha = agree(check_checkpoint, ctx.info)
    settings = inference_settings(ctx.cfg)
    headers = {}
    for set_name in ctx.test_sets:
        if mspec.sets is not None and set_name not in mspec.sets:
            continue
        header = {
            "version": CACHE_VERSION,
            "checkpoint_sha256": sha,
            "arch": mspec.arch,
            "settings": {**settings, "ensemble": mspec.ensemble},
            "conventions": [c.to_dict() for c in ctx.conventions],
            "test_set": to_dict(ctx.specs[set_name]),
            "data_seed": ctx.cfg.data.seed,
        }
        if mspec.model_args:  # (absent otherwise: older caches stay valid)
            header["model_args"] = mspec.model_args
        headers[set_name] = header
    return headers


def restore_items(
    model: torch.nn.Module,
    group: list[int],
    items: list[dict[str, Any]],
    cfg: EvalConfig,
    ensemble: str,
    device: torch.device,
) -> list[tuple[int, torch.Tensor]]:
    """``(index, (1, 3, H, W) prediction in [0, 1])`` for each item of a batch: items of
    the same shape in one call (EXIF orientation can make a planned size wrong), one by
    one otherwise; a lone item exactly as without batching."""
    from ramir.inference.restore import restore_tensor

    kwargs = dict(
        tile_overlap=cfg.tile_overlap,
        device=device,
        half=cfg.half,
        ensemble=ensemble,
        global_context=cfg.global_context,
        batch_size=cfg.batch_size,
    )
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, item in enumerate(items):
        by_shape.setdefault(tuple(item["lq"].shape), []).append(k)
    out: list[tuple[int, torch.Tensor]] = []
    for members in by_shape.values():
        if len(members) == 1:
            k = members[0]
            pred = restore_tensor(model, items[k]["lq"][None], tile=cfg.tile, **kwargs)
            out.append((group[k], pred))
            continue
        x = torch.stack([items[k]["lq"] for k in members])
        pred = restore_tensor(model, x, tile=None, **kwargs)  # each fits in one tile
        out += [(group[k], pred[n : n + 1]) for n, k in enumerate(members)]
    return sorted(out, key=lambda t: t[0])


def run_model_row(
    ctx: RunContext,
    results: RowResults,
    mspec: ModelSpec,
    loader: Callable[..., torch.nn.Module],
) -> None:
    """Measure model row ``mspec``; its network is loaded (``loader(checkpoint,
    arch=..., map_location=..., **model_args)``) only if an image is left to restore,
    and freed when the row is done. Each image's seconds: its share of its batch's
    forward passes (on CUDA, up to a synchronisation)."""
    headers = model_headers(ctx, mspec)
    ckpt = Path(mspec.checkpoint).expanduser()
    device = ctx.device
    model: torch.nn.Module | None = None

    def restore(
        set_name: str, group: list[int], items: list[dict[str, Any]]
    ) -> list[tuple[int, torch.Tensor, float]]:
        nonlocal model
        if model is None:
            model = loader(ckpt, arch=mspec.arch, map_location=device, **mspec.model_args)
            model.eval()
        t0 = time.perf_counter()
        preds = restore_items(model, group, items, ctx.cfg, mspec.ensemble, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        each = (time.perf_counter() - t0) / len(preds)
        return [(i, pred, each) for i, pred in preds]

    run_row(ctx, results, mspec.name, mspec.every, headers, restore)

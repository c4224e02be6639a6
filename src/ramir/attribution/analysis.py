"""The ``ramir analyze`` pipeline as a library function: checkpoint + images -> ``mac.json``.

>>> from ramir.config import load_config
>>> from ramir.attribution.config import AnalyzeConfig
>>> cfg = load_config(AnalyzeConfig, "configs/cpu/analyze.yaml")  # doctest: +SKIP
>>> result = run_analysis(cfg, "runs/analyze")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ramir.attribution.config import AnalysisImages, AnalyzeConfig
from ramir.attribution.io import save_mac, staged_outputs
from ramir.attribution.mac import (
    integrated_gradients_conductance,
    mask_attribution_conductance,
    random_scores,
)
from ramir.attribution.path import random_orders
from ramir.attribution.plot import plot_mac
from ramir.attribution.selection import (
    forward_order,
    layer_param_counts,
    list_layers,
    select_layers,
)
from ramir.checkpoint import resolve_weights_path
from ramir.config import save_config, to_dict
from ramir.data import transforms
from ramir.data.pixels import to_float01
from ramir.rampp import mac_order
from ramir.runtime import resolve_device, set_threads

__all__ = [
    "AnalysisResult",
    "load_analysis_images",
    "check_crop",
    "run_analysis",
]

log = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What :func:`run_analysis` wrote and found."""

    scores: dict[str, float]
    selected: list[str]
    mac_json: Path
    plot: Path
    seconds: float


def check_crop(height: int, width: int, size: int, name: str) -> None:
    """Raise if an ``height x width`` image cannot give the ``size x size`` analysis crop.

    ``size = 0`` (whole images) always fits; the crop itself is
    :func:`ramir.data.transforms.center_crop`.
    """
    if size and (height < size or width < size):
        raise ValueError(
            f"{name} is {height}x{width}, smaller than the {size}x{size} analysis crop; "
            "use larger images or a smaller images.crop"
        )


def load_analysis_images(cfg: AnalysisImages, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """The configured images as ``(name, (3, h, w) float in [0, 1])``, centre-cropped.

    ``seed`` seeds the synthetic degradations of ``source: mixture``.
    """
    if cfg.source == "mixture":
        return _mixture_images(cfg, seed)
    from ramir.data.listing import list_images
    from ramir.data.read import read_image

    assert cfg.folder is not None
    paths = list_images(cfg.folder, recursive=cfg.recursive)
    if not paths:
        raise FileNotFoundError(f"no images found in {cfg.folder}")
    if cfg.count is not None:
        paths = paths[: cfg.count]
    images = []
    for p in paths:
        img = read_image(p).rgb
        check_crop(*img.shape[-2:], cfg.crop, p.name)
        images.append((p.name, transforms.center_crop(img, cfg.crop)))
    return images


def _mixture_images(cfg: AnalysisImages, seed: int) -> list[tuple[str, torch.Tensor]]:
    """The first ``count`` images of every training sub-dataset of a data config."""
    import numpy as np

    from ramir.data.config import load_data_config
    from ramir.data.sources import build_source

    assert cfg.data is not None
    dcfg = load_data_config(cfg.data, [f"root_dir={cfg.root_dir}"] if cfg.root_dir else [])
    specs = list(dcfg.datasets)
    if cfg.tasks is not None:
        names = [s.name for s in specs]
        unknown = [t for t in cfg.tasks if t not in names]
        if unknown:
            raise ValueError(
                f"images.tasks: unknown dataset(s) {', '.join(unknown)} in {cfg.data}; "
                f"choose from: {', '.join(names)}"
            )
        specs = [s for s in specs if s.name in cfg.tasks]
    if not specs:
        raise ValueError(f"{cfg.data} lists no training datasets to draw analysis images from")

    images: list[tuple[str, torch.Tensor]] = []
    for k, spec in enumerate(specs):
        src = build_source(spec, dcfg)
        n = len(src) if cfg.count is None else min(cfg.count, len(src))
        for i in range(n):
            pair = src.pairs[i]
            name = f"{src.name}/{(pair.lq or pair.gt).name}"
            gt_raw, lq_raw = src.load_pair(i)
            raw = gt_raw if lq_raw is None else lq_raw
            check_crop(*raw.shape[:2], cfg.crop, name)
            lq = to_float01(transforms.center_crop(raw, cfg.crop, channels_last=True))
            if src.degradation is not None:
                lq = src.degradation(np.ascontiguousarray(lq), np.random.default_rng([seed, k, i]))
            lq = np.clip(np.asarray(lq, dtype=np.float32), 0.0, 1.0)
            images.append((name, torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1)))))
    return images


def _same_size_groups(
    images: Sequence[tuple[str, torch.Tensor]], size: int
) -> list[list[tuple[str, torch.Tensor]]]:
    """Consecutive images in groups of at most ``size`` that share one shape."""
    out: list[list[tuple[str, torch.Tensor]]] = []
    for name, img in images:
        if out and len(out[-1]) < size and out[-1][0][1].shape == img.shape:
            out[-1].append((name, img))
        else:
            out.append([(name, img)])
    return out


def _mask_generator(cfg: AnalyzeConfig, device: torch.device | str) -> torch.nn.Module | None:
    """RAM++'s AdaSAM network of ``cfg.mask_generator`` (eval mode), or ``None``."""
    if cfg.mask_generator is None:
        return None
    from ramir.checkpoint import load_model

    gen = load_model(resolve_weights_path(cfg.mask_generator, cfg.weights), map_location=device)
    if getattr(gen, "restores_images", True):
        raise ValueError(f"mask_generator {cfg.mask_generator} is not an AdaSAM mask generator")
    if cfg.images.crop != gen.img_size:
        raise ValueError(
            f"the AdaSAM generator takes {gen.img_size}x{gen.img_size} images: set "
            f"images.crop: {gen.img_size} (got {cfg.images.crop})"
        )
    return gen.eval()


def run_analysis(
    cfg: AnalyzeConfig, out_dir: str | Path | None = None, *, progress: bool = True
) -> AnalysisResult:
    """Score the layers of ``cfg.checkpoint`` on the configured images; write the results.

    Writes ``mac.json`` (see :mod:`ramir.attribution.io`), ``mac.png`` and the resolved
    ``config.yaml`` into ``out_dir`` (default ``cfg.out_dir``).
    """
    from ramir.checkpoint import file_sha256, load_model
    from ramir.models import count_parameters

    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    device = resolve_device(cfg.device)
    if cfg.threads is not None:
        set_threads(cfg.threads)  # 1 to the CPU count, else an error naming that count
    ckpt = resolve_weights_path(cfg.checkpoint, cfg.weights)
    model = load_model(ckpt, arch=cfg.arch, map_location=device)
    model.eval()
    images = [] if cfg.method == "random" else load_analysis_images(cfg.images, cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    norm = model.normalization
    mask_gen = _mask_generator(cfg, device)
    start = time.perf_counter()
    totals = dict.fromkeys(list_layers(model), 0.0)
    if cfg.method == "random":
        totals = random_scores(model, generator)
    else:
        batches = _same_size_groups(images, cfg.batch)
        bar = tqdm(
            total=len(images), desc=f"analyze ({cfg.method})", unit="img", disable=not progress
        )
        for batch in batches:
            lq = norm.normalize(torch.stack([img for _, img in batch]).to(device))
            if cfg.method == "mac":
                b, _, h, w = lq.shape
                if mask_gen is None:
                    order = random_orders(b, h, w, generator=generator, device=device)
                else:
                    order = mac_order(mask_gen, lq)  # RAM++: ascending AdaSAM probability
                scores = mask_attribution_conductance(
                    model, lq, steps=cfg.steps, start_ratio=cfg.start_ratio,
                    sharpness=cfg.sharpness, order=order, chunk=cfg.chunk, progress=progress,
                )  # fmt: skip
            else:
                scores = integrated_gradients_conductance(
                    model, lq, steps=cfg.steps, start_ratio=cfg.start_ratio, chunk=cfg.chunk,
                    accumulate=cfg.ig_accumulate, progress=progress,
                )  # fmt: skip
            for name, value in scores.items():
                totals[name] += value
            bar.update(len(batch))
            bar.set_postfix_str(batch[-1][0])
        bar.close()
    seconds = time.perf_counter() - start
    # Scores in the order the forward pass runs the layers (the "depth" of the plot).
    side = max(64, model.min_size)
    side = -(-side // model.input_multiple) * model.input_multiple
    example = torch.zeros(1, 3, side, side, device=device)
    totals = {name: totals[name] for name in forward_order(model, list(totals), example)}

    n_params = layer_param_counts(model)
    selected = select_layers(totals, cfg.select_ratio, by=cfg.select_by, n_params=n_params)
    params: dict[str, object] = {"seed": cfg.seed}
    if cfg.method != "random":
        params.update(
            steps=cfg.steps,
            start_ratio=cfg.start_ratio,
            target="gradient_magnitude",
            baseline="zeros (normalised space)",
            n_images=len(images),
            crop=cfg.images.crop,
            images=[name for name, _ in images],
        )
    if cfg.method == "mac":
        params["sharpness"] = cfg.sharpness
        params["order"] = "random" if mask_gen is None else "adasam ascending"
        if cfg.mask_generator is not None:
            params["mask_generator"] = str(cfg.mask_generator)
    if cfg.method == "ig":
        params["accumulate"] = cfg.ig_accumulate
    model_info = {
        "arch": model.arch_name,
        "arch_kwargs": getattr(model, "arch_kwargs", {}),
        "normalization": norm.name,
        "parameters": count_parameters(model),
    }
    # mac.json (what `ramir finetune` reads) appears only with its plot and config.
    with staged_outputs(out, "mac.png", "config.yaml", "mac.json") as staged:
        plot_tmp, config_tmp, json_tmp = staged
        plot_mac(
            totals,
            plot_tmp,
            top_k=cfg.top_k,
            selected=selected,
            title=f"{cfg.method.upper()} of {model.arch_name} ({len(totals)} layers, "
            f"{len(selected)} selected at {cfg.select_ratio:g} by {cfg.select_by})",
        )
        save_config(cfg, config_tmp)
        save_mac(
            json_tmp,
            totals,
            method=cfg.method,
            params=params,
            model_info=model_info,
            checkpoint_hash=file_sha256(ckpt),
            checkpoint_path=str(ckpt),
            config=to_dict(cfg),
            n_params=n_params,
        )
    mac_json, plot = out / "mac.json", out / "mac.png"
    log.info("analysis took %.1f s for %d image(s)", seconds, len(images))
    return AnalysisResult(totals, selected, mac_json, plot, seconds)

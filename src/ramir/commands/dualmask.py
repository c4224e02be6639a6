"""``ramir dualmask IMAGE --model CKPT -o DIR``: the dual-mask diagnostic.

See docs/method.md#dual-mask.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ramir.commands._common import (
    add_common,
    add_out_argument,
    device_from_args,
    model_load_kwargs,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dualmask",
        help="compare whole-input and dual-mask predictions of a pretrained model",
        description="Run a (masked-pretrained) model on IMAGE whole, and on IMAGE masked by a "
        "random mask M and by 1-M, merging each prediction's hidden pixels (paper Fig. 4). "
        "Writes whole.png, dualmask.png, mask.png and metrics.json (PSNR/SSIM against --gt "
        "when given, and between the two predictions).",
    )
    p.add_argument("image", type=Path, help="degraded input image")
    add_common(
        p,
        model="checkpoint (.safetensors or .pth), or a training run/checkpoint folder (EMA "
        "weights)",
        model_required=True,
        quiet="only warnings in the log",
    )
    p.add_argument("--gt", type=Path, help="clean reference image for PSNR/SSIM")
    add_out_argument(p, "output folder", required=True)
    p.add_argument("--ratio", type=float, default=0.5, help="mask ratio of M (default 0.5)")
    p.add_argument("--patch-size", type=int, default=1, help="mask cell size (default 1 px)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask (default 0)")
    p.add_argument("--convention", default="ram", help="metric convention: ram or promptir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ramir.attribution.dualmask import dual_mask_predict
    from ramir.checkpoint import load_model, resolve_weights_path
    from ramir.data.read import read_image
    from ramir.data.write import write_image
    from ramir.errors import UsageError
    from ramir.evaluation.metrics import compute_metrics, get_convention
    from ramir.masking import random_mask

    convention = get_convention(args.convention)
    device = device_from_args(args)
    model = load_model(
        resolve_weights_path(args.model),
        arch=args.arch,
        map_location=device,
        **model_load_kwargs(args),
    )
    img = read_image(args.image).rgb
    gt = read_image(args.gt).rgb if args.gt is not None else None
    if gt is not None and gt.shape != img.shape:
        raise UsageError(
            f"--gt has size {tuple(gt.shape[-2:])} but the image is {tuple(img.shape[-2:])}"
        )
    h, w = img.shape[-2:]
    mask = random_mask(
        h, w, ratio=args.ratio, patch_size=args.patch_size,
        generator=torch.Generator().manual_seed(args.seed), device=device,
    )  # fmt: skip
    norm = model.normalization
    lq = norm.normalize(img.unsqueeze(0).to(device))
    res = dual_mask_predict(model, lq, mask)
    whole = norm.denormalize(res.whole)[0].clamp(0, 1).cpu()
    merged = norm.denormalize(res.merged)[0].clamp(0, 1).cpu()

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_image(out / "whole.png", whole)
    write_image(out / "dualmask.png", merged)
    write_image(out / "mask.png", mask[0].cpu(), mode="gray")  # white = hidden by M

    def scalars(d: dict) -> dict[str, float]:
        return {k: float(v) for k, v in d.items()}

    metrics: dict[str, object] = {
        "image": str(args.image),
        "model": str(args.model),
        "mask": {"ratio": args.ratio, "patch_size": args.patch_size, "seed": args.seed},
        "convention": convention.name,
        "whole_vs_dualmask": scalars(compute_metrics(whole, merged, convention)),
    }
    if gt is not None:
        metrics["gt"] = str(args.gt)
        metrics["whole"] = scalars(compute_metrics(whole, gt, convention))
        metrics["dualmask"] = scalars(compute_metrics(merged, gt, convention))
        metrics["input"] = scalars(compute_metrics(img, gt, convention))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    if gt is not None:
        print(
            f"PSNR ({convention.name}): input {metrics['input']['psnr']:.2f} dB, "  # type: ignore[index]
            f"whole {metrics['whole']['psnr']:.2f} dB, "  # type: ignore[index]
            f"dual-mask {metrics['dualmask']['psnr']:.2f} dB"  # type: ignore[index]
        )
    print(f"wrote whole.png, dualmask.png, mask.png and metrics.json to {out}")
    return 0

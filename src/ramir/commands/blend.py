"""``ramir blend A.safetensors B.safetensors --weights 0.6 0.4 -o soup.safetensors``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ramir.commands._common import add_common, add_out_argument, check_model_output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "blend",
        help="mix the weights of checkpoints of one model (a model soup)",
        description="Write the weighted mean of the parameters of two or more checkpoints of "
        "the same architecture and size: runs continued from the same weights (e.g. one "
        "trained with an L1 loss, one with a PSNR loss) usually mix into a working model "
        "between them, as the shipped default model is. Choose the weights on a validation "
        "set (ramir evaluate). The file records each input's SHA-256 and weight.",
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINT",
        type=Path,
        help="two or more ramir .safetensors checkpoints (or official .pth files)",
    )
    p.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one weight per checkpoint, >= 0, summing to 1 (default: equal)",
    )
    add_out_argument(
        p, "the .safetensors file to write", metavar="MODEL.safetensors", required=True
    )
    add_common(p, device=False, quiet=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoint import blend_models, file_sha256, save_model
    from ramir.models import count_parameters

    out: Path = args.out
    check_model_output(out, args.checkpoints)
    n = len(args.checkpoints)
    weights = args.weights if args.weights is not None else [1.0 / n] * n
    model = blend_models(args.checkpoints, weights)
    parts = [
        {"file": c.name, "sha256": file_sha256(c), "weight": float(w)}
        for c, w in zip(args.checkpoints, weights, strict=True)
    ]
    save_model(model, out, extra={"blend": parts})
    mix = " + ".join(f"{p['weight']:g} x {p['file']}" for p in parts)
    size = count_parameters(model) / 1e6
    print(f"wrote {out.name}: {mix} ({model.arch_name}, {size:.2f}M parameters)")
    return 0

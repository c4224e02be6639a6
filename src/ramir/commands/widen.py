"""``ramir widen [--model CKPT] --factor 2 -o WIDE.safetensors``: grow a NAFNet."""

from __future__ import annotations

import argparse
from pathlib import Path

from ramir.commands._common import add_common, add_out_argument, check_model_output, model_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "widen",
        help="grow a trained NAFNet into a wider one that computes the same function",
        description="Write a NAFNet FACTOR times wider than the checkpoint (default: the "
        "shipped model) whose output is the same (to rounding): every channel is repeated, "
        "and each copy gets a random, seeded share of the weights that read it, so that "
        "training can make the copies differ. Continue training the file (model.init in a "
        "training config) to use the added capacity without starting over. The file "
        "records the source's name and SHA-256, the factor and the seed.",
    )
    add_common(
        p,
        model="the NAFNet to widen: a .safetensors (ramir) or .pth (official) file "
        "(default: the model shipped with ramir)",
        device=False,
        threads=False,
        quiet=False,
    )
    p.add_argument("--factor", type=int, default=2, help="width multiplier, >= 2 (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random shares (default 0)")
    add_out_argument(
        p, "the .safetensors file to write", metavar="MODEL.safetensors", required=True
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoint import file_sha256, load_model, save_model
    from ramir.errors import UsageError
    from ramir.models import count_parameters
    from ramir.models.nafnet import NAFNet, widen

    source = model_path(args.model)
    out: Path = args.out
    check_model_output(out, [source])
    if args.factor < 2:
        raise UsageError(f"--factor must be an integer >= 2, got {args.factor}")
    model = load_model(source)
    if not isinstance(model, NAFNet):
        raise UsageError(
            f"{source.name} is a {model.arch_name} model: only NAFNet checkpoints can be widened"
        )
    wide = widen(model, args.factor, seed=args.seed)
    record = {
        "file": source.name,
        "sha256": file_sha256(source),
        "factor": args.factor,
        "seed": args.seed,
    }
    save_model(wide, out, extra={"widened_from": record})
    print(
        f"wrote {out.name}: {source.name} widened {args.factor}x (width "
        f"{model.intro.weight.shape[0]} -> {wide.intro.weight.shape[0]}, "
        f"{count_parameters(model) / 1e6:.2f}M -> {count_parameters(wide) / 1e6:.2f}M "
        "parameters, the same output)"
    )
    return 0

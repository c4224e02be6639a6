"""``ramir models``: list the backbones with parameter counts and input multiples."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the available backbones",
        description="List the registered backbones at their default (paper) size: "
        "parameter count, the multiple inputs are padded to, and the constructor arguments.",
    )
    p.add_argument("--args", action="store_true", help="also print constructor arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.models import build_model, count_parameters, list_models, model_kwargs

    print(f"{'name':<14} {'parameters':>12} {'multiple':>8} {'min size':>8}")
    for name in list_models():
        model = build_model(name)
        print(
            f"{name:<14} {count_parameters(model):>12,} {model.input_multiple:>8} "
            f"{model.min_size:>8}"
        )
        if args.args:
            for k, v in model_kwargs(name).items():
                print(f"    {k} = {v!r}")
    return 0

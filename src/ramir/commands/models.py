"""``ramir models``: list the backbones with parameter counts and input multiples."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the available backbones",
        description="List the registered backbones at their default (paper or released) "
        "size and the named sizes: parameter count, the multiple inputs are padded to, and "
        "the constructor arguments.",
    )
    p.add_argument("--args", action="store_true", help="also print constructor arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ramir.models import build_model, count_parameters, list_models, list_variants, model_kwargs

    def row(name: str, note: str = "") -> None:
        with torch.device("meta"):  # shapes only: no memory, no initialisation
            model = build_model(name)
        print(
            f"{name:<{width}} {count_parameters(model):>12,} {model.input_multiple:>8} "
            f"{model.min_size:>8}  {note}"
        )

    width = max(18, *(len(n) for n in [*list_models(), *list_variants()]))
    print(f"{'name':<{width}} {'parameters':>12} {'multiple':>8} {'min size':>8}")
    for name in list_models():
        row(name)
        if args.args:
            for k, v in model_kwargs(name).items():
                print(f"    {k} = {v!r}")
    variants = list_variants()
    if variants:
        print("\nnamed sizes (build_model(NAME) or model.name: NAME in a config):")
        for name, (base, kwargs) in variants.items():
            row(name, f"{base}: " + ", ".join(f"{k}={v}" for k, v in kwargs.items()))
    return 0

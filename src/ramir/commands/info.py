"""``ramir info CHECKPOINT``: what a checkpoint holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ramir.checkpoint import file_sha256, load_model, read_metadata
from ramir.models import count_parameters


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a model checkpoint",
        description="Print the architecture, constructor arguments, normalisation, parameter "
        "count and recorded metadata of a checkpoint (ours or an official BasicSR .pth).",
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors (ramir) or .pth (official) file")
    p.add_argument("--arch", help="architecture of an official checkpoint (guessed if omitted)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, arch=args.arch)
    info = {
        "path": str(args.checkpoint),
        "sha256": file_sha256(args.checkpoint),
        "arch": model.arch_name,
        "arch_kwargs": getattr(model, "arch_kwargs", {}),
        "normalization": model.normalization.name,
        "parameters": count_parameters(model),
        "input_multiple": model.input_multiple,
        "min_size": model.min_size,
    }
    if args.checkpoint.suffix == ".safetensors":
        meta = read_metadata(args.checkpoint)
        info.update(
            format="ramir", ramir_version=meta.get("ramir_version"), extra=meta.get("extra", {})
        )
    else:
        info["format"] = "official (BasicSR .pth)"
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>15}: {v}")
    return 0

"""``ramir export --model CKPT -o model.onnx``: ONNX export checked with ONNX Runtime."""

from __future__ import annotations

import argparse
import sys

from ramir.commands._common import add_common, add_out_argument, model_load_kwargs, model_path
from ramir.options import DEFAULT_OPSET


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description="Export a model to ONNX with dynamic batch, height and width. The graph "
        "takes 'image' (B,3,H,W) float32 RGB in [0,1] and returns 'restored' in [0,1]. The "
        "file is checked against PyTorch with ONNX Runtime at two sizes; the max abs "
        "difference is printed and the exit status is 1 if it exceeds --tolerance. RAM++'s "
        "RestormerRFR is exported with its six DINOv2 feature maps as inputs after 'image' "
        "(the DINOv2 stays outside the graph); --dino DIR checks it on that DINOv2's features "
        "(without it: on seeded random stand-ins).",
    )
    add_common(
        p,
        model="a .safetensors (ramir) or .pth (official) file (default: the model shipped "
        "with ramir)",
        model_legacy_positional=True,
        dino=True,
        device=False,
        quiet="only warnings in the log",
    )
    add_out_argument(
        p, "the ONNX file to write", metavar="MODEL.onnx", required=True, legacy_output=True
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"default {DEFAULT_OPSET}")
    p.add_argument(
        "--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"), help="tracing size"
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="export the bare network in normalised space (no normalisation or clamping)",
    )
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max abs difference allowed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramir.checkpoint import load_model
    from ramir.errors import UsageError
    from ramir.inference.export import export_onnx

    checkpoint = model_path(args.model)
    if args.out.resolve() == checkpoint.resolve():
        raise UsageError("the output file must differ from the checkpoint")
    model = load_model(checkpoint, arch=args.arch, **model_load_kwargs(args))
    result = export_onnx(
        model,
        args.out,
        opset=args.opset,
        example_size=tuple(args.size),
        pre_post=not args.raw,
        check=not args.no_check,
    )
    print(f"wrote {result.path} (opset {result.opset}, dynamic batch/height/width)")
    if len(result.inputs) > 1:
        print(
            f"  inputs: {', '.join(result.inputs)} (the DINOv2 features stay outside the graph: "
            "ramir.inference.export.onnx_inputs computes them with the model loaded with dino=DIR)"
        )
    if result.check_features == "random":
        print("  checked on seeded random DINOv2 features (give --dino DIR to check on real ones)")
    for h, w, diff in result.checked:
        print(f"  onnxruntime vs pytorch at {h}x{w}: max abs difference {diff:.3g}")
    if result.checked and result.max_abs_diff > args.tolerance:
        print(
            f"ramir export: error: difference {result.max_abs_diff:.3g} exceeds "
            f"--tolerance {args.tolerance}",
            file=sys.stderr,
        )
        return 1
    return 0

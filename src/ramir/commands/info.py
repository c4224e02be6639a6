"""``ramir info [--model CKPT]``: what a checkpoint holds (default: the shipped model)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ramir.commands._common import add_common, model_load_kwargs, model_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a model checkpoint (default: the shipped model)",
        description="Print the architecture, constructor arguments, normalisation, parameter "
        "count and recorded metadata of a checkpoint (ours or an official BasicSR .pth): for "
        "a model made by `ramir demo`, its recipe and the scores it measured. Without "
        "--model (or with --model default), describe the model shipped with ramir.",
    )
    add_common(
        p,
        model="a .safetensors (ramir) or .pth (official) file (default: the model shipped "
        "with ramir)",
        model_legacy_positional=True,
        device=False,
        threads=False,
        quiet=False,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def describe(checkpoint: Path, arch: str | None = None, **model_args: Any) -> dict[str, Any]:
    """What :func:`run` prints, as a dict (``extra``: the metadata a ramir file records)."""
    from ramir.checkpoint import file_sha256, load_model, read_metadata
    from ramir.models import count_parameters

    model = load_model(checkpoint, arch=arch, **model_args)
    info: dict[str, Any] = {
        "file": checkpoint.name,
        "sha256": file_sha256(checkpoint),
        "arch": model.arch_name,
        "arch_kwargs": getattr(model, "arch_kwargs", {}),
        "normalization": model.normalization.name,
        "parameters": count_parameters(model),
        "input_multiple": model.input_multiple,
        "min_size": model.min_size,
    }
    if checkpoint.suffix == ".safetensors":
        meta = read_metadata(checkpoint)
        info.update(
            format="ramir", ramir_version=meta.get("ramir_version"), extra=meta.get("extra", {})
        )
    else:
        info["format"] = "release (.pth/.ckpt state dict)"
    return info


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_info(info: Mapping[str, Any]) -> str:
    """Readable text: the model's facts, then its recorded recipe and score tables."""
    from ramir.evaluation.gains import format_goals, format_part_record, format_stats

    lines = []
    extra = dict(info.get("extra") or {})
    for k, v in info.items():
        if k != "extra":
            lines.append(f"{k:>15}: {_flat(v)}")
    for k in ("kind", "iteration", "n_trainable"):
        if k in extra:
            lines.append(f"{k:>15}: {_flat(extra.pop(k))}")
    recipe = extra.pop("recipe", None)
    if isinstance(recipe, Mapping):
        made = (
            "the `ramir demo` config of its first stage; the stages after it below"
            if extra.get("history")
            else "the `ramir demo` config that made it"
        )
        lines += ["", f"recipe ({made}):"]
        lines += [f"  {k:<22} {_flat(v)}" for k, v in recipe.items() if v is not None]
    history = extra.pop("history", None)
    if isinstance(history, list) and history:
        total = extra.pop("train_seconds", None)
        head = "training, stage by stage"
        if isinstance(total, (int, float)):
            head += f" ({total / 3600:.1f} h in total)"
        lines += ["", head + ":"]
        for h in history:
            if not isinstance(h, Mapping):
                continue
            where = ", ".join(str(h[k]) for k in ("config", "device") if isinstance(h.get(k), str))
            blend = h.get("blend_weight")
            lines.append(
                f"  {h.get('stage', '?')}: {h.get('iterations', '?')} iterations, "
                f"{float(h.get('train_seconds', 0)) / 3600:.1f} h"
                + (f" ({where})" if where else "")
                + (
                    f", x{blend:g} of the blend of its runs"
                    if isinstance(blend, (int, float))
                    else ""
                )
            )
    held_out = extra.pop("held_out", None)
    if isinstance(held_out, Mapping) and held_out:
        lines += ["", "held-out photos (the demo's test split), PSNR / SSIM:"]
        for task, m in held_out.items():
            if isinstance(m, Mapping):
                lines.append(
                    f"  {task:<14} {m.get('psnr', float('nan')):7.2f} dB  "
                    f"{m.get('ssim', float('nan')):.4f}"
                )
    for part in ("test", "val"):
        record = extra.pop(f"photo_eval_{part}", None)
        if isinstance(record, Mapping):
            lines += ["", *format_part_record(record)]
    photo_eval = extra.pop("photo_eval", None)
    if isinstance(photo_eval, Mapping):
        table = photo_eval.get("table") or {}
        if table:
            n = max((st.get("n", 0) for st in table.values()), default=0)
            lines += [
                "",
                f"photo evaluation set ({n} photos never trained on, measured before the "
                "validation/test split; they chose the recipe), per photo:",
            ]
            lines += format_stats(table)
        lines += format_goals(photo_eval.get("goals") or [])
    if extra:
        lines += ["", "other metadata:"] + [f"  {k:<22} {_flat(v)}" for k, v in extra.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = describe(model_path(args.model), arch=args.arch, **model_load_kwargs(args))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0

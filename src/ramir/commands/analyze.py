"""``ramir analyze -c CONFIG``: rank a pretrained model's layers (MAC, IG or random)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ramir.commands._common import add_common, add_out_argument, device_override


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="rank a pretrained model's layers by mask attribution conductance",
        description="Load a pretrained checkpoint, run MAC (or the IG/random baselines) on the "
        "configured images, and write mac.json (layers sorted by score), mac.png and the "
        "resolved config.yaml. `ramir finetune` reads mac.json to choose the layers to train.",
    )
    add_common(
        p,
        config="analysis config (YAML), e.g. configs/cpu/analyze.yaml",
        config_required=False,
        overrides="steps=50 images.count=1",
        device="device",
    )
    p.add_argument(
        "--import",
        dest="import_dir",
        type=Path,
        metavar="DIR",
        help="instead of analysing: turn an official RAM analysis folder (filter_name.txt, "
        "filter_cond.txt, filter_index.txt, e.g. mac_analysis_result/ram_swinir_mac), a RAM++ "
        "folder, or a ranked list file such as filter_name_RFR.txt, into mac.json and mac.png "
        "in --out",
    )
    p.add_argument(
        "--arch",
        help="with --import: check the layer names against this network (ram_swinir, ram_promptir)",
    )
    add_out_argument(
        p, "output folder (default: out_dir of the config; with --import, runs/<DIR name>)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.import_dir is not None:
        return run_import(args)
    from ramir.errors import UsageError

    if args.config is None:
        raise UsageError("give an analysis config with -c CONFIG, or --import DIR")
    from ramir.attribution.analysis import run_analysis
    from ramir.attribution.config import AnalyzeConfig
    from ramir.config import load_config

    overrides = list(args.overrides) + device_override(args, "device")
    cfg = load_config(AnalyzeConfig, args.config, overrides)
    result = run_analysis(cfg, args.out, progress=not args.quiet)
    ranked = sorted(result.scores, key=lambda n: -result.scores[n])
    print(f"{cfg.method}: {len(result.scores)} layers scored in {result.seconds:.1f} s")
    for i, name in enumerate(ranked[:10]):
        print(f"  {i + 1:>3}. {name:<50} {result.scores[name]:.4g}")
    print(
        f"{len(result.selected)} layer(s) selected at {cfg.select_ratio:g} by {cfg.select_by}; "
        f"wrote {result.mac_json} and {result.plot}"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ramir.attribution.io import load_mac
    from ramir.attribution.official import import_official_mac

    source = args.import_dir
    # a list file itself (…/3task_mac/filter_name_RFR.txt) is named after its folder
    default = source.parent.name if source.is_file() else source.name
    out = args.out if args.out is not None else Path("runs") / (default or "imported_mac")
    mac_json, plot = import_official_mac(source, out, arch=args.arch)
    mac = load_mac(mac_json)
    ranking = mac.ranking()
    order = "highest first" if mac.scored else "in the release's order (no scores)"
    print(f"imported {len(ranking)} layers from {source.name}; {order}:")
    for i, name in enumerate(ranking[:10]):
        print(f"  {i + 1:>3}. {name}")
    print(f"wrote {mac_json} and {plot}; fine-tune with select.mac: {mac_json}")
    return 0

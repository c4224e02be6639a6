"""``ramir demo``: RAM end-to-end on real photos (baseline vs RAM, ablation, report)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from ramir.commands._common import add_common, add_out_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run RAM end-to-end on real photos and write a report",
        description="Build a synthetic 7-task set (haze, rain, noise, motion blur, low light, "
        "Gaussian blur, JPEG) from real photos, train a baseline and RAM (masked pretraining, "
        "MAC analysis, fine-tuning of the top layers) with the same step budget, compare MAC "
        "with IG and random layer selection, evaluate on held-out photos and write "
        "report.md/report.html. Re-running resumes finished stages.",
    )
    add_common(
        p,
        config="demo config YAML (default: built-in)",
        config_required=False,
        overrides="finetune_ratio=0.1 analysis_steps=100",
        device="device",
        quiet="no progress bars (training, evaluation); only warnings in the log",
    )
    add_out_argument(p, "report folder (overrides out_dir; default runs/demo)")
    p.add_argument("--steps", type=int, help="training steps per method (default 900)")
    p.add_argument("--backbone", help="nafnet (default), ram_swinir or ram_promptir (small sizes)")
    p.add_argument("--data", help="a folder of your own clean photos (default: scikit-image's)")
    p.add_argument("--no-ablation", action="store_true", help="skip the IG/random selection runs")
    p.set_defaults(func=run)


@contextlib.contextmanager
def _no_progress_bars(quiet: bool) -> Iterator[None]:
    """With ``quiet``, hide the progress bars the demo's stages ask for (tqdm takes its
    defaults from ``TQDM_*`` variables)."""
    if not quiet:
        yield
        return
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = old


def run(args: argparse.Namespace) -> int:
    from ramir.demo import check_config, load_demo_config, run_demo

    overrides = list(args.overrides)
    for key in ("steps", "out", "backbone", "device", "data"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"{'out_dir' if key == 'out' else key}={value}")
    if args.no_ablation:
        overrides.append("ablation=false")
    if args.backbone is not None:
        overrides.append("backbone_args={}")
    cfg = load_demo_config(args.config, overrides)
    check_config(cfg)
    with _no_progress_bars(args.quiet):
        result = run_demo(cfg)
    verdict = "beat" if result.ram_beats_baseline else "did not beat"
    summary = (
        f"RAM {verdict} the baseline at this scale." if cfg.baseline else "No baseline trained."
    )
    print(
        f"\nramir demo: done in {result.seconds / 60:.1f} min. {summary}\n"
        f"Report: {result.report_html} (and {result.report_md.name})"
    )
    return 0

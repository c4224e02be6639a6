"""CLI sub-commands, one module each: ``register(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse


def add_overrides_argument(p: argparse.ArgumentParser, example: str) -> None:
    """``--set KEY=VALUE ...``: config overrides, several after one flag and repeatable.

    They land in ``args.overrides`` (a list of ``"key.sub=value"`` strings).
    """
    p.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help=f"override config values, e.g. --set {example} (repeatable)",
    )

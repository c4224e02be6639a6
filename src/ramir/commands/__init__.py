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


def _threads(text: str) -> int | str:
    from ramir.runtime import parse_threads

    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """``--threads N|auto``: CPU threads for PyTorch (``args.threads``; the CLI applies it)."""
    p.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        metavar="N",
        help="CPU threads for PyTorch; 'auto' (default) = the CPUs not already busy "
        "(measured over a quarter second at start), so a shared machine is not oversubscribed",
    )

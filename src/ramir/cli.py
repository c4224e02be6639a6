"""The ``ramir`` command line: a thin layer over the library.

Each sub-command lives in ``ramir.commands.<name>`` as ``register(subparsers)`` (which adds
its parser) and a ``run(args) -> int`` function a test can call. Commands are listed here
explicitly; there is no discovery.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ramir import __version__
from ramir.commands import (
    analyze,
    data,
    demo,
    dualmask,
    evaluate,
    export,
    finetune,
    info,
    models,
    pretrain,
    restore,
    serve,
    train,
)
from ramir.runtime import passive_wait, set_threads

COMMANDS = [
    demo,
    models,
    info,
    restore,
    export,
    pretrain,
    train,
    finetune,
    analyze,
    dualmask,
    data,
    evaluate,
    serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ramir",
        description="RAM (Restore Anything with Masks): all-in-one blind image restoration.",
    )
    parser.add_argument("--version", action="version", version=f"ramir {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0 = success)."""
    passive_wait()  # before PyTorch is imported: idle OpenMP threads sleep, not spin
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, TypeError, FileNotFoundError, RuntimeError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ramir {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

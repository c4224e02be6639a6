"""The ``ramir`` command line: a thin layer over the library.

Each sub-command lives in ``ramir.commands.<name>`` as ``register(subparsers)`` (which adds
its parser) and a ``run(args) -> int`` function a test can call. Commands are listed here
explicitly; there is no discovery. The options they share are built in one place,
:mod:`ramir.commands._common`.

Errors: a :class:`ramir.errors.RamirError` (bad input, a missing or broken file, no GPU...),
a ``ValueError`` (how most of ramir refuses bad arguments) and an ``OSError`` (a file that
cannot be read or written) are printed as one line, ``ramir COMMAND: error: ...``, with
exit status 1 (``-v`` shows their traceback). Any other exception is a bug: it propagates
with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ramir._version import __version__
from ramir.commands import (
    analyze,
    blend,
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
    widen,
)
from ramir.commands._common import Parser
from ramir.errors import RamirError, Stopped
from ramir.runtime import passive_wait, set_threads

COMMANDS = [
    demo,
    models,
    info,
    restore,
    export,
    blend,
    widen,
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
    parser = Parser(
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
    if args.verbose:
        level = logging.DEBUG
    elif getattr(args, "quiet", False):
        level = logging.WARNING
    else:
        level = logging.INFO
    logging.basicConfig(
        level=level,
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
    except Stopped as e:
        print(f"ramir {args.command}: error: {e}", file=sys.stderr)
        return 143
    except (RamirError, ValueError, OSError) as e:
        # Problems the user can fix. Anything else (TypeError, KeyError, AttributeError,
        # a RuntimeError from PyTorch...) is a bug and keeps its traceback.
        if args.verbose:
            raise
        print(f"ramir {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

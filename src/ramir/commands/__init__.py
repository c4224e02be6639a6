"""CLI sub-commands, one module each: ``register(subparsers)`` and ``run(args) -> int``.

The options they share (``--device``, ``-o/--out``, ``--model``, ``-c/--config``,
``--set``, ``-q/--quiet``, ``--threads``) are built by :mod:`ramir.commands._common`, so
that they are spelled, defaulted and explained the same way in every command.
"""

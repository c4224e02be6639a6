"""CLI sub-commands, one module each: ``register(subparsers)`` and ``run(args) -> int``."""

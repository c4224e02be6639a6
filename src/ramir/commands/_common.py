"""The command line's shared vocabulary: one spelling and one meaning per option.

==================  ===================================================================
``--device D``      where to run: ``auto`` (CUDA when available; the default), ``cpu``,
                    ``cuda``, ``cuda:N``; resolved by :func:`ramir.runtime.resolve_device`
``-o/--out PATH``   what the command writes (a folder, or a file for ``export``)
``--model CKPT``    the checkpoint to use (default: the model shipped with ramir)
``-c/--config F``   the YAML recipe of config-driven commands
``--set K=V ...``   config overrides
``-q/--quiet``      no progress bars, and only warnings in the log
``--threads N``     CPU threads for PyTorch
==================  ===================================================================

A command adds the ones it takes with one :func:`add_common` call (and ``-o/--out``, whose
meaning differs per command, with :func:`add_out_argument`). Older spellings
(``--output``, a positional checkpoint, output folder or config, ``--no-progress``) still
work for one release and print a deprecation note on stderr.

This module imports nothing heavy: building the parsers loads no PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that also resolves the deprecated positional spellings.

    ``cli.build_parser`` makes the top-level parser a :class:`Parser`; ``add_subparsers``
    then makes every sub-command's parser one too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # (positional dest, option dest, option spelling, metavar)
        self.legacy_positionals: list[tuple[str, str, str, str]] = []
        # (dest, option spelling): required, but given either way
        self.required_options: list[tuple[str, str]] = []

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        self._finish(ns)
        return ns, rest

    def _finish(self, ns: argparse.Namespace) -> None:
        for old, new, flag, metavar in self.legacy_positionals:
            value = getattr(ns, old, None)
            if hasattr(ns, old):
                delattr(ns, old)
            if value is None:
                continue
            if getattr(ns, new, None) is not None:
                self.error(f"{flag} is given twice (once as a positional argument); keep {flag}")
            deprecated(self.prog, f"the positional {metavar}", f"{flag} {metavar}")
            setattr(ns, new, value)
        missing = [flag for dest, flag in self.required_options if getattr(ns, dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")


def deprecated(prog: str, old: str, new: str) -> None:
    """One line on stderr: ``old`` still works but will go; use ``new``."""
    print(
        f"{prog}: warning: {old} is deprecated and will be removed in the next release; use {new}",
        file=sys.stderr,
    )


class DeprecatedOption(argparse.Action):
    """An old option spelling: stores into the new option's ``dest`` after a note."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        kwargs.setdefault("default", argparse.SUPPRESS)
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        deprecated(parser.prog, option_string or self.dest, self.new)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _legacy_positional(
    p: argparse.ArgumentParser, dest: str, flag: str, metavar: str, type: Callable | None
) -> None:
    if not isinstance(p, Parser):  # pragma: no cover - every ramir parser is one
        raise TypeError("deprecated positional arguments need a ramir.commands._common.Parser")
    old = f"legacy_{dest}"
    p.add_argument(old, nargs="?", type=type, default=None, help=argparse.SUPPRESS)
    p.legacy_positionals.append((old, dest, flag, metavar))


def _require(p: argparse.ArgumentParser, dest: str, flag: str) -> None:
    if not isinstance(p, Parser):  # pragma: no cover
        raise TypeError("required options with a deprecated form need a Parser")
    p.required_options.append((dest, flag))


# ---------------------------------------------------------------------------- the options


def add_device_argument(p: argparse.ArgumentParser, config_key: str | None = None) -> None:
    """``--device auto|cpu|cuda|cuda:N`` (``args.device``).

    ``config_key``: for a config-driven command, the config value it overrides; the
    default is then ``None`` (the config's device, itself ``auto`` unless the file says
    otherwise). Otherwise the default is ``auto``.
    """
    if config_key is None:
        p.add_argument(
            "--device",
            default="auto",
            metavar="DEVICE",
            help=f"where to run: {DEVICE_CHOICES}; auto (default) = CUDA when available",
        )
    else:
        p.add_argument(
            "--device",
            default=None,
            metavar="DEVICE",
            help=f"where to run: {DEVICE_CHOICES} (overrides {config_key}; default: the "
            "config's, auto = CUDA when available, unless it says otherwise)",
        )


def _add_option(
    p: argparse.ArgumentParser,
    flags: tuple[str, ...],
    dest: str,
    *,
    help: str,
    metavar: str,
    type: Callable | None,
    default: Any,
    required: bool,
    legacy_positional: bool,
    legacy_option: str | None = None,
) -> None:
    """Option ``flags`` (stored in ``dest``) and its deprecated spellings.

    ``required`` with a deprecated spelling cannot be argparse's own (which would refuse the
    old form): the :class:`Parser` checks it once the old forms are resolved.
    """
    flag = "/".join(flags)
    legacy = legacy_positional or legacy_option is not None
    if required and legacy:
        help = f"{help} (required)"
    p.add_argument(
        *flags,
        dest=dest,
        type=type,
        default=default,
        metavar=metavar,
        help=help,
        required=required and not legacy,
    )
    if legacy_option is not None:
        p.add_argument(legacy_option, dest=dest, type=type, action=DeprecatedOption, new=flag)
    if legacy_positional:
        _legacy_positional(p, dest, flag, metavar, type)
    if required and legacy:
        _require(p, dest, flag)


def add_out_argument(
    p: argparse.ArgumentParser,
    help: str,
    *,
    metavar: str = "DIR",
    default: Path | None = None,
    required: bool = False,
    legacy_output: bool = False,
    legacy_positional: bool = False,
) -> None:
    """``-o/--out PATH`` (``args.out``).

    ``legacy_output``: also accept ``--output`` (deprecated); ``legacy_positional``: also
    accept the path as a positional argument (deprecated).
    """
    _add_option(
        p,
        ("-o", "--out"),
        "out",
        help=help,
        metavar=metavar,
        type=Path,
        default=default,
        required=required,
        legacy_positional=legacy_positional,
        legacy_option="--output" if legacy_output else None,
    )


def add_model_argument(
    p: argparse.ArgumentParser,
    help: str = "a ramir .safetensors checkpoint or an official RAM .pth (default: the "
    "model shipped with ramir)",
    *,
    required: bool = False,
    legacy_positional: bool = False,
) -> None:
    """``--model CKPT`` (``args.model``; ``None`` = the shipped model unless ``required``)."""
    _add_option(
        p,
        ("--model",),
        "model",
        help=help,
        metavar="CHECKPOINT",
        type=Path,
        default=None,
        required=required,
        legacy_positional=legacy_positional,
    )


def add_config_argument(
    p: argparse.ArgumentParser,
    help: str,
    *,
    required: bool = True,
    legacy_positional: bool = False,
) -> None:
    """``-c/--config FILE`` (``args.config``)."""
    _add_option(
        p,
        ("-c", "--config"),
        "config",
        help=help,
        metavar="CONFIG",
        type=Path,
        default=None,
        required=required,
        legacy_positional=legacy_positional,
    )


def add_quiet_argument(
    p: argparse.ArgumentParser, help: str = "no progress bars; only warnings in the log"
) -> None:
    """``-q/--quiet`` (``args.quiet``); the CLI also lowers the log level to warnings."""
    p.add_argument("-q", "--quiet", action="store_true", help=help)


def add_arch_arguments(p: argparse.ArgumentParser) -> None:
    """``--arch NAME`` and ``--model-arg KEY=VALUE ...`` (``args.arch``,
    ``args.model_args``): how to build the network of an official checkpoint, when what
    ramir reads from its weights is not enough (e.g. ``--model-arg local_stats=256`` for
    NAFNet's GoPro/REDS releases, ``--model-arg padding=symmetric`` for SwinIR's test
    script)."""
    p.add_argument(
        "--arch", help="architecture of an official checkpoint (guessed from its weights)"
    )
    p.add_argument(
        "--model-arg",
        dest="model_args",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument of an official checkpoint's network, over those read "
        "from its weights, e.g. --model-arg local_stats=256 (repeatable; values in YAML)",
    )


def add_dino_argument(p: argparse.ArgumentParser) -> None:
    """``--dino DIR`` (``args.dino``): the DINOv2 folder RAM++'s RestormerRFR needs."""
    p.add_argument(
        "--dino",
        type=Path,
        default=None,
        metavar="DIR",
        help="a Hugging Face DINOv2 folder (facebook/dinov2-giant) for RAM++'s RestormerRFR "
        "checkpoints, which do not contain it (needs transformers: pip install 'ramir[rampp]')",
    )


def model_load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--model-arg`` values (and ``--dino``) as keyword arguments of :func:`ramir.load_model`."""
    import yaml

    out: dict[str, Any] = {}
    if getattr(args, "dino", None) is not None:
        out["dino"] = str(args.dino)
    for item in getattr(args, "model_args", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--model-arg expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


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


def add_common(
    p: argparse.ArgumentParser,
    *,
    config: str | None = None,
    config_required: bool = True,
    config_legacy_positional: bool = False,
    overrides: str | None = None,
    model: str | bool = False,
    model_required: bool = False,
    model_legacy_positional: bool = False,
    dino: bool = False,
    device: str | bool = True,
    threads: bool = True,
    quiet: str | bool = True,
) -> None:
    """The options commands share, in this order and with one meaning everywhere.

    Args:
        p: the command's parser.
        config: help of ``-c/--config`` (``None``: no config option); ``config_required``
            and ``config_legacy_positional`` as in :func:`add_config_argument`.
        overrides: an example for ``--set KEY=VALUE`` (``None``: no ``--set``).
        model: ``--model`` with ``--arch`` and ``--model-arg`` (:func:`add_arch_arguments`):
            ``True`` with the default help, a string as its help, ``False``: none;
            ``model_required`` and ``model_legacy_positional`` as in
            :func:`add_model_argument`.
        dino: ``--dino DIR`` (RAM++'s RestormerRFR).
        device: ``--device`` (``True``); a string is the config key it overrides
            (:func:`add_device_argument`); ``False``: none.
        threads: ``--threads``.
        quiet: ``-q/--quiet`` (``True``), a string as its help, ``False``: none.
    """
    if config is not None:
        add_config_argument(
            p, config, required=config_required, legacy_positional=config_legacy_positional
        )
    if overrides is not None:
        add_overrides_argument(p, overrides)
    if model is not False:
        kwargs: dict[str, Any] = {} if model is True else {"help": model}
        add_model_argument(
            p, required=model_required, legacy_positional=model_legacy_positional, **kwargs
        )
        add_arch_arguments(p)
    if dino:
        add_dino_argument(p)
    if device is not False:
        add_device_argument(p, None if device is True else device)
    if threads:
        add_threads_argument(p)
    if quiet is not False:
        if quiet is True:
            add_quiet_argument(p)
        else:
            add_quiet_argument(p, quiet)


# ------------------------------------------------------------------------------ helpers


def check_tile_options(tile: int | str, overlap: int) -> None:
    """Refuse ``--tile`` / ``--tile-overlap`` values that cannot work, before any model
    is loaded (see :func:`ramir.inference.tiling.check_tiling`). With ``--tile 0`` (whole images)
    the overlap need only be >= 0; ``auto`` is checked as its tile of 512.

    Raises:
        UsageError: with what to change.
    """
    from ramir.errors import UsageError
    from ramir.inference.plan import AUTO_TILE
    from ramir.inference.tiling import check_tiling

    if tile == 0:
        if overlap < 0:
            raise UsageError(f"--tile-overlap must be >= 0 pixels, got {overlap}")
        return
    size = AUTO_TILE if tile == "auto" else int(tile)
    try:
        check_tiling(size, overlap, tile_name="--tile", overlap_name="--tile-overlap")
    except UsageError as e:
        if tile != "auto":
            raise
        raise UsageError(f"--tile auto tiles large images with {AUTO_TILE} pixels: {e}") from None


def device_override(args: argparse.Namespace, key: str) -> list[str]:
    """``["KEY=DEVICE"]`` when ``--device`` was given, else ``[]`` (the config decides)."""
    return [f"{key}={args.device}"] if getattr(args, "device", None) else []


def device_from_args(args: argparse.Namespace) -> Any:
    """``args.device`` as a ``torch.device`` (through :func:`ramir.runtime.resolve_device`)."""
    from ramir.runtime import resolve_device

    return resolve_device(args.device)


def model_path(path: Path | None) -> Path:
    """The checkpoint ``--model`` names, or the model shipped inside the package."""
    if path is not None and str(path) != "default":
        return path
    from ramir.inference.restore import default_model_path

    return default_model_path()


def check_model_output(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse, before anything is loaded, an output ``-o`` that is not a ``.safetensors``
    file, an input that does not exist, or an output that would overwrite an input
    (``ramir blend``, ``ramir widen``).

    Raises:
        UsageError: with what to change.
    """
    from ramir.errors import UsageError

    if out.suffix != ".safetensors":
        raise UsageError(f"the output must be a .safetensors file, got {out.name}")
    for c in inputs:
        if not c.is_file():
            raise UsageError(f"no such checkpoint: {c.name}")
        if c.resolve() == out.resolve():
            raise UsageError(f"the output would overwrite the input {c.name}: choose another -o")

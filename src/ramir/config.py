"""Typed, strict configuration: dataclasses + YAML.

* A config *schema* is a (frozen or plain) dataclass whose fields are typed with
  ``int``, ``float``, ``str``, ``bool``, ``None``-able types, ``Literal[...]``,
  ``list[T]``, ``tuple[T, ...]``, ``dict[str, T]``, ``typing.Any`` or nested dataclasses.
* YAML files may start with ``base: other.yaml`` (or a list of files), resolved relative
  to the including file and merged depth-first (later files override earlier ones;
  mappings merge key by key, everything else is replaced).
* Command-line overrides ``train.lr=2e-4`` are parsed as YAML scalars/lists and applied
  last.
* Unknown keys and wrong types raise :class:`ConfigError` naming the key and the file.
* ``float`` values must be finite: YAML's ``.inf`` and ``.nan`` are refused (``lr: .inf``
  passes ``lr > 0``), unless the field allows them with
  ``field(metadata={FINITE: False})``.
* :func:`save_config` writes the resolved config (as YAML) beside outputs.

>>> from dataclasses import dataclass, field
>>> @dataclass
... class Train:
...     lr: float = 1e-4
...     total_iter: int = 100
>>> @dataclass
... class Experiment:
...     train: Train = field(default_factory=Train)
>>> cfg = from_dict(Experiment, {"train": {"lr": 2e-4}})
>>> cfg.train.lr
0.0002
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from ramir.errors import RamirError

__all__ = [
    "ConfigError",
    "FINITE",
    "load_yaml",
    "load_config",
    "from_dict",
    "convert_value",
    "to_dict",
    "save_config",
    "apply_overrides",
    "parse_override",
]

T = TypeVar("T")


class ConfigError(RamirError, ValueError):
    """A config file or override is invalid; the message names the key and the source."""


FINITE = "ramir.finite"
"""Field metadata key: ``field(default=..., metadata={FINITE: False})`` lets a ``float``
field (or the floats inside it) be ``inf`` or ``nan``; every other float must be finite."""


# ----------------------------------------------------------------------------- YAML + base


def load_yaml(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving ``base:`` includes relative to the file.

    Returns the merged mapping without the ``base`` key.
    """
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"circular base: include: {chain}")
    if not path.is_file():
        where = f" (included from {_stack[-1]})" if _stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    _anchor_file_keys(data, path.parent)
    bases = data.pop("base", None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: 'base' must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for b in bases:
        merged = deep_merge(merged, load_yaml(path.parent / b, (*_stack, path)))
    return deep_merge(merged, data)


FILE_KEYS = ("data_config",)
"""Top-level keys naming another config file, resolved relative to the file that sets
them (so that a ``base:`` file's own ``data_config: ../data/x.yaml`` keeps working when
it is included from another folder)."""


def _anchor_file_keys(data: dict[str, Any], folder: Path) -> None:
    for key in FILE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            candidate = folder / value
            if candidate.is_file():  # else: left for the cwd fallback and its message
                data[key] = str(candidate)


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Merge mapping ``b`` into ``a`` (``b`` wins; nested mappings merge)."""
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``"train.lr=2e-4"`` into ``(["train", "lr"], 2e-4)``.

    The value is read as YAML, so ``[1, 2]``, ``true``, ``null`` and numbers work;
    ``1e-4``-style floats without a dot are accepted too.
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value: {e}") from None
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied."""
    out = deep_merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {k!r} is a {type(child).__name__}, not a section"
                )
            node[k] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return out


# ----------------------------------------------------------------------------- typed parsing


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in get_args(tp))
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def convert_value(tp: Any, value: Any, key: str, source: str, finite: bool = True) -> Any:
    """Check ``value`` against type ``tp`` and convert it (lists to tuples, dicts to
    dataclasses); with ``finite``, a ``float`` must be a finite number.

    ``key`` and ``source`` name the value in the error: a :class:`ConfigError`
    ``"{source}: key '{key}': expected int, got str 'abc'"``. A ``TypeError`` means an
    annotation this checker does not know.
    """

    def fail(msg: str | None = None) -> typing.NoReturn:
        raise ConfigError(
            f"{source}: key '{key}': "
            + (msg or f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        )

    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail()
        # Why each alternative failed, when that says more than "expected A | B, got X"
        # (an unknown key in a section, a wrong item in a list...).
        reasons = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert_value(arg, value, key, source, finite)
            except ConfigError as e:
                reason = str(e).removeprefix(f"{source}: ")
                plain = f"key '{key}': expected {_type_name(arg)}, got {type(value).__name__}"
                if not reason.startswith(plain):
                    reasons.append(f"as {_type_name(arg)}: {reason}")
        default = f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        fail("; ".join([default, *reasons]))
    if origin is typing.Literal:
        choices = get_args(tp)
        if value not in choices:
            fail(f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            fail(f"expected a mapping for section {_type_name(tp)}, got {type(value).__name__}")
        return _from_mapping(tp, value, key, source)
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, (list, tuple)):
            fail()
        (inner,) = get_args(tp) or (Any,)
        return [convert_value(inner, v, f"{key}[{i}]", source, finite) for i, v in enumerate(value)]
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(
                convert_value(args[0], v, f"{key}[{i}]", source, finite)
                for i, v in enumerate(value)
            )
        if args and len(args) != len(value):
            fail(f"expected {len(args)} items, got {len(value)}")
        return tuple(
            convert_value(a, v, f"{key}[{i}]", source, finite)
            for i, (a, v) in enumerate(zip(args or [Any] * len(value), value, strict=True))
        )
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            fail()
        kt, vt = get_args(tp) or (str, Any)
        return {
            convert_value(kt, k, f"{key}.{k}", source): convert_value(
                vt, v, f"{key}.{k}", source, finite
            )
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        number = float(value)
        if finite and not math.isfinite(number):
            fail(f"must be a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if tp is type(None):
        if value is not None:
            fail()
        return None
    if isinstance(tp, type):
        if not isinstance(value, tp):
            fail()
        return value
    raise TypeError(f"unsupported config type {tp!r} for key '{key}'")  # pragma: no cover


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str, source: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}'"
            + (f" in section '{prefix}'" if prefix else "")
            + f"; valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            finite = f.metadata.get(FINITE, True)
            kwargs[name] = convert_value(hints[name], data[name], key, source, finite)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: missing required key '{key}'")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: section '{prefix or '<root>'}': {e}") from None


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<config>") -> T:
    """Build dataclass ``cls`` from ``data``, strictly (unknown keys and wrong types fail)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    return _from_mapping(cls, data, "", source)


def to_dict(cfg: Any) -> Any:
    """A dataclass config as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Load ``path`` (with ``base:`` includes), apply ``overrides``, and build ``cls``.

    Without ``path`` the schema's defaults are used (overrides still apply).
    """
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        data = apply_overrides(data, overrides)
        source += " + --set " + " ".join(overrides)
    return from_dict(cls, data, source)


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config ``cfg`` (a dataclass or mapping) as YAML; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path

"""An unpickler that builds tensors and plain containers and never runs a file's code.

PyTorch's ``torch.load(weights_only=True)`` refuses any file that pickles a Python object
it does not know, and some released checkpoints do: PyTorch Lightning stores its
hyper-parameters (an ``AttributeDict`` or an ``argparse.Namespace``), other trainers a
NumPy scalar. Reading those with Python's own unpickler would run whatever the file says.
This module is the other way: a small interpreter of the pickle instructions that
checkpoints use, used as ``torch.load``'s ``pickle_module`` for *every* pickle of a file
(the zip format's ``data.pkl``; the legacy format's magic number, protocol, system
information, object and storage-key pickles), in which

* a global name resolves only to what ``weights_only`` loading allows (tensors, storages,
  dtypes, ``OrderedDict``... and what the user added with
  ``torch.serialization.add_safe_globals``) and to the built-in types of plain values
  (``frozenset``, ``tuple``...);
* a name from a module that runs code (``os``, ``subprocess``, ``builtins.eval``...) makes
  the whole file refused: a checkpoint never needs one;
* any other name (a class of a training framework) becomes :class:`Dropped`, an inert
  placeholder: calling it, building it or filling it does nothing, so such objects
  come back as placeholders and their tensors are kept only where they sit in plain
  containers;
* only tensors' storages are loaded by persistent id, and an instruction that
  checkpoints do not use (``INST``, ``OBJ``, the protocol-0 string forms, extension
  codes...) makes the file refused.

Nothing here imports or calls anything named by the file except the allowed globals,
with arguments that are themselves plain values, tensors or placeholders.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import struct
import types
from collections import Counter, OrderedDict
from typing import Any, BinaryIO

__all__ = [
    "CODE_MODULES",
    "Dropped",
    "RefusedPickleError",
    "Unpickler",
    "load",
    "loads",
    "pickle_module",
]

# Top-level modules whose names in a pickle mean "run code when loaded". Resolving them
# is never needed for weights; a file that names one is refused as a whole.
CODE_MODULES = frozenset(
    {
        "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "shutil",
        "importlib", "runpy", "code", "codeop", "pty", "socket", "ctypes", "types",
        "functools", "operator", "pickle", "_pickle", "marshal", "shelve", "dill",
        "multiprocessing", "threading", "signal", "webbrowser", "platform", "inspect",
        "pdb", "timeit", "tempfile", "pathlib", "io", "_io", "codecs", "asyncio",
        "torch._dynamo", "torch.jit", "torch.package", "torch.hub", "torch.ops",
        "numpy.testing", "numpy.f2py", "numpy.distutils", "setuptools", "pip",
    }
)  # fmt: skip


class RefusedPickleError(pickle.UnpicklingError):
    """The file asks for something no checkpoint needs (a code-running global, an
    instruction outside the checkpoint subset); it is refused, nothing of it ran."""


class Dropped:
    """Placeholder for an object of a class the file names but weights loading does not
    allow (a trainer's settings, a NumPy scalar...). Building, calling, filling or
    setting it does nothing; its name is recorded in the unpickler's ``skipped``."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<dropped {self.name or 'object'}>"


class _DroppedName:
    """What a disallowed global name resolves to: calling it or creating an instance of
    it gives a :class:`Dropped` (the name's own code is never imported)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Dropped:
        return Dropped(self.name)


# Built-in constructors of plain values that Python's own pickling names (a protocol-2
# ``frozenset`` is a call of ``builtins.frozenset``) besides those weights loading allows.
_PLAIN_BUILTINS = {
    f"builtins.{t.__name__}": t
    for t in (frozenset, set, tuple, list, dict, int, float, complex, str, bool, slice)
}


def _allowed_globals() -> dict[str, Any]:
    from torch._weights_only_unpickler import _get_allowed_globals, _get_user_allowed_globals

    return {**_PLAIN_BUILTINS, **_get_allowed_globals(), **_get_user_allowed_globals()}


def _is_code_module(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[: i + 1]) in CODE_MODULES for i in range(len(parts)))


# One byte per opcode; the names are those of the pickle module.
_OP = {name: getattr(pickle, name)[0] for name in (
    "PROTO", "STOP", "FRAME", "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "NEWOBJ",
    "NEWOBJ_EX", "MARK", "POP", "POP_MARK", "DUP", "APPEND", "APPENDS", "SETITEM",
    "SETITEMS", "ADDITEMS", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_TUPLE",
    "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "FROZENSET", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "BINUNICODE",
    "SHORT_BINUNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "SHORT_BINBYTES",
    "BINBYTES", "BINBYTES8", "BYTEARRAY8", "BINPERSID", "BINGET", "LONG_BINGET", "BINPUT",
    "LONG_BINPUT", "MEMOIZE",
)}  # fmt: skip
_NAMES = {v: k for k, v in _OP.items()}
_MAX_PROTOCOL = 5


class Unpickler:
    """Restricted unpickler with the interface ``torch.load`` expects of
    ``pickle_module.Unpickler`` (``find_class`` may be overridden, ``persistent_load``
    assigned).

    Args:
        file: a binary file object (``read``, ``readline``).
        encoding: how Python 2 byte strings (``SHORT_BINSTRING``) are decoded;
            ``"bytes"`` keeps them as bytes.
    """

    def __init__(self, file: BinaryIO, *, encoding: str = "ASCII", **_: Any) -> None:
        self._read = file.read
        self._readline = file.readline
        self.encoding = encoding
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.skipped: set[str] = set()
        self._allowed = _allowed_globals()
        self._callable_ids = {id(v) for v in self._allowed.values()}

    # -- hooks torch.load overrides ---------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        """The object a global name stands for: an allowed one, else a placeholder."""
        if self.proto < 3:  # Python 2 names, as Python's unpickler maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in self._allowed:
            return self._allowed[key]
        if _is_code_module(module):
            raise RefusedPickleError(
                f"it names {key} while loading, which can run code: this is not a plain "
                "checkpoint and ramir refuses it (nothing of it ran)"
            )
        self.skipped.add(key)
        return _DroppedName(key)

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickleError("it refers to external objects (a persistent id)")

    # -- reading ----------------------------------------------------------------------
    def _take(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("the pickle data ends too early (truncated file?)")
        return data

    def _line(self) -> str:
        line = self._readline()
        if not line.endswith(b"\n"):
            raise pickle.UnpicklingError("the pickle data ends too early (truncated file?)")
        return line[:-1].decode("utf-8")

    def _callable(self, obj: Any) -> bool:
        return isinstance(obj, _DroppedName) or id(obj) in self._callable_ids

    def load(self) -> Any:  # noqa: C901 - one dispatch over the opcodes, read top to bottom
        """Read one pickle and return the object it builds."""
        stack: list[Any] = []
        marks: list[list[Any]] = []
        memo = self.memo
        take = self._take
        unpack = struct.unpack

        def pop_mark() -> list[Any]:
            nonlocal stack
            if not marks:
                raise pickle.UnpicklingError("malformed pickle: no MARK")
            items = stack
            stack = marks.pop()
            return items

        while True:
            key = self._read(1)
            if not key:
                raise pickle.UnpicklingError("the pickle data ends too early (truncated file?)")
            op = key[0]
            if op == _OP["PROTO"]:
                self.proto = take(1)[0]
                if self.proto > _MAX_PROTOCOL:
                    raise RefusedPickleError("unsupported pickle protocol")
            elif op == _OP["FRAME"]:
                take(8)  # a frame length: the data follows inline
            elif op == _OP["STOP"]:
                if len(stack) != 1 or marks:
                    raise pickle.UnpicklingError("malformed pickle at STOP")
                return stack[0]
            # globals and the instructions that call or build
            elif op == _OP["GLOBAL"]:
                module = self._line()
                name = self._line()
                stack.append(self.find_class(module, name))
            elif op == _OP["STACK_GLOBAL"]:
                name, module = stack.pop(), stack.pop()
                if not (isinstance(module, str) and isinstance(name, str)):
                    raise pickle.UnpicklingError("malformed pickle: STACK_GLOBAL")
                stack.append(self.find_class(module, name))
            elif op == _OP["REDUCE"]:
                args = stack.pop()
                func = stack[-1]
                if not self._callable(func) or type(args) is not tuple:
                    raise RefusedPickleError(f"it calls {_describe(func)}, which is not allowed")
                _check_allocation(func, args)
                stack[-1] = func(*args)
            elif op in (_OP["NEWOBJ"], _OP["NEWOBJ_EX"]):
                kwargs = stack.pop() if op == _OP["NEWOBJ_EX"] else {}
                args = stack.pop()
                cls = stack.pop()
                if isinstance(cls, _DroppedName):
                    stack.append(Dropped(cls.name))
                    continue
                if not (isinstance(cls, type) and self._callable(cls)) or type(args) is not tuple:
                    raise RefusedPickleError(f"it creates {_describe(cls)}, which is not allowed")
                _check_allocation(cls, args)
                import torch

                if cls is torch.nn.Parameter:
                    stack.append(torch.nn.Parameter(*args, **kwargs))
                else:
                    stack.append(cls.__new__(cls, *args, **kwargs))
            elif op == _OP["BUILD"]:
                state = stack.pop()
                _build(stack[-1], state, self._callable_ids)
            elif op == _OP["BINPERSID"]:
                pid = stack.pop()
                if type(pid) not in (tuple, int):
                    raise RefusedPickleError("it refers to a persistent object that is not storage")
                if type(pid) is tuple and pid and _ascii(pid[0]) != "storage":
                    raise RefusedPickleError("it refers to a persistent object that is not storage")
                stack.append(self.persistent_load(pid))
            # containers
            elif op == _OP["MARK"]:
                marks.append(stack)
                stack = []
            elif op == _OP["POP"]:
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif op == _OP["POP_MARK"]:
                pop_mark()
            elif op == _OP["DUP"]:
                stack.append(stack[-1])
            elif op == _OP["EMPTY_TUPLE"]:
                stack.append(())
            elif op == _OP["TUPLE"]:
                items = pop_mark()
                stack.append(tuple(items))
            elif op == _OP["TUPLE1"]:
                stack[-1] = (stack[-1],)
            elif op == _OP["TUPLE2"]:
                stack[-2:] = [(stack[-2], stack[-1])]
            elif op == _OP["TUPLE3"]:
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            elif op == _OP["EMPTY_LIST"]:
                stack.append([])
            elif op == _OP["EMPTY_DICT"]:
                stack.append({})
            elif op == _OP["EMPTY_SET"]:
                stack.append(set())
            elif op == _OP["FROZENSET"]:
                items = pop_mark()
                stack.append(frozenset(items))
            elif op == _OP["APPEND"]:
                item = stack.pop()
                _extend(stack[-1], [item])
            elif op == _OP["APPENDS"]:
                items = pop_mark()
                _extend(stack[-1], items)
            elif op == _OP["SETITEM"]:
                value, k = stack.pop(), stack.pop()
                _set_items(stack[-1], [k, value])
            elif op == _OP["SETITEMS"]:
                items = pop_mark()
                _set_items(stack[-1], items)
            elif op == _OP["ADDITEMS"]:
                items = pop_mark()
                target = stack[-1]
                if type(target) is set:
                    target.update(items)
                elif not isinstance(target, Dropped):
                    raise RefusedPickleError(f"it adds items to {_describe(target)}")
            # plain values
            elif op == _OP["NONE"]:
                stack.append(None)
            elif op == _OP["NEWTRUE"]:
                stack.append(True)
            elif op == _OP["NEWFALSE"]:
                stack.append(False)
            elif op == _OP["BININT"]:
                stack.append(unpack("<i", take(4))[0])
            elif op == _OP["BININT1"]:
                stack.append(take(1)[0])
            elif op == _OP["BININT2"]:
                stack.append(unpack("<H", take(2))[0])
            elif op == _OP["LONG1"]:
                stack.append(int.from_bytes(take(take(1)[0]), "little", signed=True))
            elif op == _OP["LONG4"]:
                n = unpack("<i", take(4))[0]
                if not 0 <= n <= 1 << 16:
                    raise RefusedPickleError("it holds an integer too large for a checkpoint")
                stack.append(int.from_bytes(take(n), "little", signed=True))
            elif op == _OP["BINFLOAT"]:
                stack.append(unpack(">d", take(8))[0])
            elif op == _OP["SHORT_BINUNICODE"]:
                stack.append(str(take(take(1)[0]), "utf-8", "surrogatepass"))
            elif op == _OP["BINUNICODE"]:
                stack.append(str(take(unpack("<I", take(4))[0]), "utf-8", "surrogatepass"))
            elif op == _OP["BINUNICODE8"]:
                stack.append(str(take(unpack("<Q", take(8))[0]), "utf-8", "surrogatepass"))
            elif op in (_OP["SHORT_BINSTRING"], _OP["BINSTRING"]):
                n = take(1)[0] if op == _OP["SHORT_BINSTRING"] else unpack("<i", take(4))[0]
                if n < 0:
                    raise pickle.UnpicklingError("malformed pickle: negative length")
                data = take(n)
                stack.append(data if self.encoding == "bytes" else data.decode(self.encoding))
            elif op == _OP["SHORT_BINBYTES"]:
                stack.append(take(take(1)[0]))
            elif op == _OP["BINBYTES"]:
                stack.append(take(unpack("<I", take(4))[0]))
            elif op == _OP["BINBYTES8"]:
                stack.append(take(unpack("<Q", take(8))[0]))
            elif op == _OP["BYTEARRAY8"]:
                stack.append(bytearray(take(unpack("<Q", take(8))[0])))
            # the memo
            elif op in (_OP["BINGET"], _OP["LONG_BINGET"]):
                i = take(1)[0] if op == _OP["BINGET"] else unpack("<I", take(4))[0]
                if i not in memo:
                    raise pickle.UnpicklingError("malformed pickle: unknown memo entry")
                stack.append(memo[i])
            elif op in (_OP["BINPUT"], _OP["LONG_BINPUT"]):
                i = take(1)[0] if op == _OP["BINPUT"] else unpack("<I", take(4))[0]
                memo[i] = stack[-1]
            elif op == _OP["MEMOIZE"]:
                memo[len(memo)] = stack[-1]
            else:
                name = _NAMES.get(op) or _protocol0_name(op)
                raise RefusedPickleError(
                    f"it uses the pickle instruction {name}, which checkpoints do not need"
                )


# Allowed callables that allocate as many bytes or elements as an integer argument says.
_MAX_ALLOCATION = 1 << 20


def _check_allocation(func: Any, args: tuple[Any, ...]) -> None:
    """Refuse ``bytearray(10**12)`` and storages of a declared size built by a call
    (checkpoints get their storages' bytes from the file, never from such a call)."""
    name = getattr(func, "__name__", "")
    if (func is bytearray or name.endswith("Storage")) and any(
        isinstance(a, int) and a > _MAX_ALLOCATION for a in args
    ):
        raise RefusedPickleError(f"it asks {name} to allocate a declared size")


def _protocol0_name(op: int) -> str:
    for name in dir(pickle):
        value = getattr(pickle, name)
        if name.isupper() and isinstance(value, bytes) and len(value) == 1 and value[0] == op:
            return name
    return f"0x{op:02x}"


def _ascii(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _describe(obj: Any) -> str:
    if isinstance(obj, _DroppedName):
        return obj.name
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return f"an object of type {type(obj).__name__}"


def _extend(target: Any, items: list[Any]) -> None:
    if type(target) is list:
        target.extend(items)
    elif not isinstance(target, Dropped):
        raise RefusedPickleError(f"it appends to {_describe(target)}")


def _set_items(target: Any, items: list[Any]) -> None:
    if type(target) in (dict, OrderedDict, Counter):
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]
    elif not isinstance(target, Dropped):
        raise RefusedPickleError(f"it sets items of {_describe(target)}")


def _build(inst: Any, state: Any, allowed_ids: set[int]) -> None:
    """``BUILD``: set an object's state, for the types weights loading builds."""
    import torch

    if isinstance(inst, Dropped):
        return
    if type(inst) is torch.Tensor:  # the legacy format's tensors
        inst.set_(*state)
    elif type(inst) is torch.nn.Parameter:
        inst.__setstate__(state)
    elif type(inst) is OrderedDict and isinstance(state, dict):
        inst.__dict__.update(state)
    elif id(type(inst)) in allowed_ids and hasattr(inst, "__setstate__"):
        inst.__setstate__(state)
    else:
        raise RefusedPickleError(f"it sets the state of {_describe(inst)}, which is not allowed")


def load(file: BinaryIO, *, encoding: str = "ASCII", **kwargs: Any) -> Any:
    """Read one pickle from ``file`` with :class:`Unpickler`."""
    return Unpickler(file, encoding=encoding).load()


def loads(data: bytes, *, encoding: str = "ASCII", **kwargs: Any) -> Any:
    """Read one pickle from ``data`` with :class:`Unpickler`."""
    return load(io.BytesIO(data), encoding=encoding)


def pickle_module() -> types.ModuleType:
    """A fresh module to pass as ``torch.load(..., pickle_module=...)``: its ``load`` and
    ``Unpickler`` are this module's, and its ``skipped`` set collects the names that
    became placeholders during that load."""
    skipped: set[str] = set()

    class _Recording(Unpickler):
        def __init__(self, file: BinaryIO, **kwargs: Any) -> None:
            super().__init__(file, **kwargs)
            self.skipped = skipped

    def _load(file: BinaryIO, **kwargs: Any) -> Any:
        return _Recording(file, **kwargs).load()

    module = types.ModuleType("ramir_safe_unpickle")
    module.Unpickler = _Recording  # type: ignore[attr-defined]
    module.load = _load  # type: ignore[attr-defined]
    module.skipped = skipped  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module

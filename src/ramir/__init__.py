"""ramir: all-in-one blind image restoration with RAM (Restore Anything with Masks).

>>> import ramir
>>> model = ramir.load_model("model.safetensors")  # doctest: +SKIP
>>> restored = ramir.restore(model, "photo.jpg", tile=512)  # doctest: +SKIP

Note: ``ramir.restore`` is the function; import the module's other names with
``from ramir.restore import ...``.

``import ramir`` is light: ``load_model`` and ``restore`` (and with them PyTorch) are
imported on first use, so that ``ramir --help`` and ``ramir --version`` answer at once.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from ramir._version import __version__

__all__ = ["load_model", "restore", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ramir.checkpoint import load_model
    from ramir.restore import restore


def __getattr__(name: str) -> Any:
    """Import ``load_model`` / ``restore`` on first use (PEP 562)."""
    if name == "load_model":
        from ramir.checkpoint import load_model as value
    elif name == "restore":
        from ramir.restore import restore as value
    else:
        raise AttributeError(f"module 'ramir' has no attribute {name!r}")
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The ``ramir`` package object: keeps ``ramir.restore`` the function.

    Importing the sub-module ``ramir.restore`` makes Python set the package attribute
    ``restore`` to that module; this refuses that one assignment, so ``ramir.restore(...)``
    is the function however the sub-module was first imported (the module itself stays
    in ``sys.modules["ramir.restore"]``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "restore" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""ramir: all-in-one blind image restoration with RAM (Restore Anything with Masks).

>>> import ramir
>>> model = ramir.load_model("model.safetensors")  # doctest: +SKIP
>>> restored = ramir.restore(model, "photo.jpg", tile=512)  # doctest: +SKIP

``ramir.restore`` is :func:`ramir.inference.restore.restore` and ``ramir.load_model`` is
:func:`ramir.checkpoint.load_model`; inference's other names (tiling, files and folders,
ONNX export) live in :mod:`ramir.inference`.

``import ramir`` is light: ``load_model`` and ``restore`` (and with them PyTorch) are
imported on first use, so that ``ramir --help`` and ``ramir --version`` answer at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ramir._version import __version__

__all__ = ["load_model", "restore", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ramir.checkpoint import load_model
    from ramir.inference.restore import restore


def __getattr__(name: str) -> Any:
    """Import ``load_model`` / ``restore`` on first use (PEP 562)."""
    if name == "load_model":
        from ramir.checkpoint import load_model as value
    elif name == "restore":
        from ramir.inference.restore import restore as value
    else:
        raise AttributeError(f"module 'ramir' has no attribute {name!r}")
    globals()[name] = value
    return value

"""ramir: all-in-one blind image restoration with RAM (Restore Anything with Masks).

>>> import ramir
>>> model = ramir.load_model("model.safetensors")  # doctest: +SKIP
>>> restored = ramir.restore(model, "photo.jpg", tile=512)  # doctest: +SKIP

Note: ``ramir.restore`` is the function; import the module's other names with
``from ramir.restore import ...``.
"""

__version__ = "0.1.0"

from ramir.checkpoint import load_model  # noqa: E402  (needs __version__)
from ramir.restore import restore  # noqa: E402

__all__ = ["load_model", "restore", "__version__"]

"""ramir: all-in-one blind image restoration with RAM (Restore Anything with Masks).

>>> import ramir
>>> model = ramir.load_model("model.safetensors")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from ramir.checkpoint import load_model  # noqa: E402  (needs __version__)

__all__ = ["load_model", "__version__"]

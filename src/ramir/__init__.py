"""ramir: all-in-one blind image restoration with RAM (Restore Anything with Masks)."""

__version__ = "0.1.0"

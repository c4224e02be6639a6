"""Data: image I/O, benchmark dataset readers, the task mixture and test sets."""

from ramir.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    LoadedImage,
    list_images,
    read_image,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "LoadedImage",
    "list_images",
    "read_image",
    "write_image",
]

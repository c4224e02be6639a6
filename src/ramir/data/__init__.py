"""Data: image I/O, benchmark dataset readers, the multi-task mixture and test sets.

* :mod:`ramir.data.io` — :func:`read_image` / :func:`write_image` (gray, alpha, 16-bit,
  EXIF), :func:`list_images`.
* :mod:`ramir.data.datasets` — readers for the published layouts (:func:`scan`).
* :mod:`ramir.data.config` — :class:`DataConfig` / :class:`DatasetSpec` schemas.
* :mod:`ramir.data.mixture` — :class:`MixtureDataset` (training stream),
  :class:`PairedTestSet` and :func:`SyntheticPairs` (fixed evaluation sets).
* :mod:`ramir.data.photos` — real photos bundled with scikit-image, train/test split.
"""

from ramir.data.config import DataConfig, DatasetSpec, load_data_config
from ramir.data.datasets import DatasetError, Pair, Scan, layouts, scan
from ramir.data.io import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    LoadedImage,
    list_images,
    read_array,
    read_image,
    write_image,
)
from ramir.data.mixture import (
    MixtureDataset,
    PairedTestSet,
    SyntheticPairs,
    build_mixture,
    build_test_set,
    build_test_sets,
)
from ramir.data.photos import materialize_sample_photos, sample_photos

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "LoadedImage",
    "list_images",
    "read_array",
    "read_image",
    "write_image",
    "DatasetError",
    "Pair",
    "Scan",
    "layouts",
    "scan",
    "DataConfig",
    "DatasetSpec",
    "load_data_config",
    "MixtureDataset",
    "PairedTestSet",
    "SyntheticPairs",
    "build_mixture",
    "build_test_set",
    "build_test_sets",
    "sample_photos",
    "materialize_sample_photos",
]

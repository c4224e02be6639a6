"""Data: image I/O, benchmark dataset readers, the multi-task mixture and test sets.

* :mod:`ramir.data.read` — :func:`read_image` / :func:`read_array` (gray, alpha, 16-bit,
  EXIF, ICC profiles, size limits); :mod:`ramir.data.write` — :func:`write_image` (the
  result like its input); :mod:`ramir.data.listing` — :func:`list_images`;
  :mod:`ramir.data.pixels` — integer pixels to floats.
* :mod:`ramir.data.datasets` — readers for the published layouts (:func:`scan`).
* :mod:`ramir.data.config` — :class:`DataConfig` / :class:`DatasetSpec` schemas.
* :mod:`ramir.data.sources` — :class:`Source` (a dataset of a config, scanned, ready to load).
* :mod:`ramir.data.mixture` — :class:`MixtureDataset` (training stream).
* :mod:`ramir.data.testsets` — :class:`PairedTestSet` and :func:`synthetic_pairs` (fixed
  evaluation sets).
* :mod:`ramir.data.photos` — real photos bundled with scikit-image, train/test split.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> sub-module. Imported on first use (PEP 562), so that reading an image
# (ramir.data.read) does not load the degradations and SciPy that the data configs need.
_EXPORTS = {
    "DataConfig": "config",
    "DatasetSpec": "config",
    "load_data_config": "config",
    "DatasetError": "datasets",
    "Pair": "datasets",
    "Scan": "datasets",
    "layouts": "datasets",
    "scan": "datasets",
    "IMAGE_EXTENSIONS": "listing",
    "ImageReadError": "read",
    "LoadedImage": "read",
    "list_images": "listing",
    "read_array": "read",
    "read_image": "read",
    "write_image": "write",
    "MixtureDataset": "mixture",
    "PairedTestSet": "testsets",
    "synthetic_pairs": "testsets",
    "build_mixture": "mixture",
    "build_test_set": "testsets",
    "build_test_sets": "testsets",
    "materialize_sample_photos": "photos",
    "sample_photos": "photos",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ramir.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ramir.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


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
    "synthetic_pairs",
    "build_mixture",
    "build_test_set",
    "build_test_sets",
    "sample_photos",
    "materialize_sample_photos",
]

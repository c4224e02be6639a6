"""The fixed evaluation sets: deterministic whole-image (or centre-cropped) pairs.

:class:`PairedTestSet` wraps a :class:`~ramir.data.sources.Source`; :func:`build_test_set`
and :func:`build_test_sets` build the ``test`` section of a data config, and
:func:`synthetic_pairs` a set from a folder of clean images. Items::

    {"lq": (3, H, W) float32 in [0, 1], "gt": (3, H, W) float32 in [0, 1],
     "task": str, "index": int, "name": str, "key": str}

A synthetic degradation is seeded with ``(seed, image key)`` only, so an image's
degradation does not change when other images are added or removed.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ramir import degradations
from ramir.data import transforms
from ramir.data.config import TASK_OF_DEGRADATION, DataConfig, DatasetSpec
from ramir.data.datasets import Pair, scan_clean_folder
from ramir.data.pixels import array_to_tensor, to_float01
from ramir.data.sources import Source, build_source

__all__ = ["PairedTestSet", "synthetic_pairs", "build_test_set", "build_test_sets"]

# The domain tag of the test sets' seed streams (ramir.data.mixture uses 0 and 1).
_TEST = 2


class PairedTestSet(Dataset):
    """A fixed evaluation set: whole images (or centre crops), deterministic.

    Items: ``{"lq", "gt"}`` ``(3, H, W)`` float32 in ``[0, 1]`` (sizes vary: use batch size
    1), ``"task"``, ``"index"``, ``"name"`` (the set), ``"key"`` (the image's name).
    Synthetic degradations use a generator seeded with ``(seed, image key)``, so an
    image's degradation does not change when other images are added or removed.
    """

    def __init__(
        self, source: Source, *, seed: int = 0, center_crop: int | None = None, name: str = ""
    ) -> None:
        self.source = source
        self.seed = int(seed)
        self.center_crop = center_crop
        self.name = name or source.name
        self.task = source.task

    def __len__(self) -> int:
        return len(self.source)

    def keys(self) -> list[str]:
        return [p.key for p in self.source.pairs]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        pair = self.source.pairs[index]
        gt_raw, lq_raw = self.source.load_pair(index)
        if self.center_crop is not None:
            gt_raw = transforms.center_crop(gt_raw, self.center_crop, channels_last=True)
            if lq_raw is not None:
                lq_raw = transforms.center_crop(lq_raw, self.center_crop, channels_last=True)
        gt = to_float01(gt_raw)
        lq = gt if lq_raw is None else to_float01(lq_raw)
        if self.source.degradation is not None:
            rng = np.random.default_rng([self.seed, _TEST, zlib.crc32(pair.key.encode())])
            lq = self.source.degradation(lq, rng)
        return {
            "lq": array_to_tensor(lq),
            "gt": array_to_tensor(gt),
            "task": self.task,
            "index": index,
            "name": self.name,
            "key": pair.key,
        }


def synthetic_pairs(
    folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    degradation: str,
    *,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    center_crop: int | None = None,
    task: str | None = None,
    recursive: bool = True,
    cache: bool = False,
) -> PairedTestSet:
    """A fixed test set from clean images: ``lq = degradation(gt)`` with a fixed seed.

    Args:
        folder: a folder of clean images, or a list of image files.
        degradation: a name from ``ramir.degradations.names()``.
        params: its keyword parameters (e.g. ``{"sigma": 25}``); unset ones are drawn from
            their ranges with the fixed seed.
        seed: the seed; each image's degradation depends on ``(seed, image key)`` only.
        center_crop: centre crop size (``None``: whole images).
        task: task label (default from the degradation).
    """
    if isinstance(folder, (str, os.PathLike)):
        s = scan_clean_folder(Path(folder), recursive=recursive).require()
        pairs = s.pairs
    else:
        paths = [Path(p) for p in folder]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"image files not found: {', '.join(missing)}")
        pairs = [Pair(gt=p, lq=None, key=p.stem) for p in paths]
    deg = degradations.Degradation(degradation, dict(params or {}))
    label = task or TASK_OF_DEGRADATION.get(degradation, degradation)
    src = Source(name=f"{label}", task=label, pairs=pairs, degradation=deg, cache=cache)
    return PairedTestSet(src, seed=seed, center_crop=center_crop, name=label)


def build_test_set(spec: DatasetSpec, cfg: DataConfig) -> PairedTestSet:
    """The evaluation set of ``spec`` (raises :class:`DatasetError` on problems)."""
    src = build_source(spec, cfg, test=True)
    seed = cfg.seed if spec.seed is None else spec.seed
    return PairedTestSet(src, seed=seed, center_crop=spec.center_crop, name=spec.name)


def build_test_sets(cfg: DataConfig) -> dict[str, PairedTestSet]:
    """All evaluation sets of ``cfg``, by name, in config order."""
    return {spec.name: build_test_set(spec, cfg) for spec in cfg.test}

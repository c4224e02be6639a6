"""A sub-dataset of a data config, scanned and ready to load: :class:`Source`.

:func:`build_source` runs the reader of a :class:`~ramir.data.config.DatasetSpec`
(:func:`scan_spec`) and gives its pairs, task and degradation as a :class:`Source`, which
reads the pixels (``(H, W, 3)`` uint8/uint16, optionally cached). The training mixture
(:mod:`ramir.data.mixture`) and the fixed test sets (:mod:`ramir.data.testsets`) are
built on sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ramir import degradations
from ramir.data.config import DataConfig, DatasetSpec
from ramir.data.datasets import DatasetError, Pair, Scan, scan
from ramir.data.read import read_array
from ramir.data.store import PixelStore

__all__ = ["Source", "build_source", "scan_spec"]


@dataclass
class Source:
    """A scanned sub-dataset ready to load: pairs, task, optional degradation, cache.

    ``degradation`` is applied to ``gt`` for pairs without ``lq`` (synthetic), and on
    top of ``lq`` for real pairs if given.
    """

    name: str
    task: str
    pairs: list[Pair]
    degradation: degradations.Degradation | None = None
    cache: bool = False
    on_size_mismatch: str = "error"
    _store: dict[Path, np.ndarray] | PixelStore = field(
        default_factory=dict, repr=False, init=False
    )

    def __post_init__(self) -> None:
        if not self.pairs:
            raise DatasetError(f"dataset {self.name!r} has no images")
        if self.degradation is None and any(p.lq is None for p in self.pairs):
            raise DatasetError(
                f"dataset {self.name!r} holds clean images only; give it a 'degradation'"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, path: Path) -> np.ndarray:
        """``(H, W, 3)`` uint8/uint16 pixels of ``path`` (cached if ``cache``)."""
        if self.cache:
            hit = self._store.get(path)
            if hit is not None:
                return hit
        pixels = read_array(path).pixels
        if self.cache and isinstance(self._store, dict):  # a PixelStore stays bounded
            self._store[path] = pixels
        return pixels

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Integer ``(gt, lq)`` pixels of pair ``i`` (``lq`` None if synthetic), same size."""
        pair = self.pairs[i]
        gt = self.read(pair.gt)
        if pair.lq is None:
            return gt, None
        lq = self.read(pair.lq)
        if gt.shape[:2] != lq.shape[:2]:
            if self.on_size_mismatch != "crop":
                raise DatasetError(
                    f"dataset {self.name!r}: size mismatch: {pair.lq} is "
                    f"{lq.shape[0]}x{lq.shape[1]} but {pair.gt} is {gt.shape[0]}x{gt.shape[1]}; "
                    "set on_size_mismatch: crop to use their common top-left region"
                )
            h, w = min(gt.shape[0], lq.shape[0]), min(gt.shape[1], lq.shape[1])
            gt, lq = gt[:h, :w], lq[:h, :w]
        return gt, lq


def scan_spec(spec: DatasetSpec, cfg: DataConfig, *, test: bool = False) -> Scan:
    """Run the reader of ``spec`` (roots resolved against ``cfg``); problems are collected."""
    layout, root, options = spec.layout, spec.resolve_root(cfg.root_dir), dict(spec.options)
    override = cfg.clean_test_root if test else cfg.clean_root
    if layout == "skimage_photos" and override:
        layout, root, options = "clean_folder", Path(os.path.expanduser(override)), {}
    return scan(layout, root, **options)


def build_source(spec: DatasetSpec, cfg: DataConfig, *, test: bool = False) -> Source:
    """Scan ``spec`` and build its :class:`Source`; raises :class:`DatasetError` on problems."""
    s = scan_spec(spec, cfg, test=test).require(spec.name)
    deg = None
    if spec.degradation is not None:
        deg = degradations.Degradation(spec.degradation, dict(spec.params))
    elif s.degradation is not None:
        deg = degradations.Degradation(*s.degradation)
    return Source(
        name=spec.name,
        task=spec.task_name(),
        pairs=s.pairs,
        degradation=deg,
        cache=spec.cache,
        on_size_mismatch=spec.on_size_mismatch,
    )

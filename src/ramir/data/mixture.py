"""The multi-task training stream.

:class:`MixtureDataset` samples the sub-datasets of a :class:`~ramir.data.config.DataConfig`
in balance (sample ``i`` comes from sub-dataset ``i mod n``, like the reference's
``RAMDataset``; or by weights), takes aligned random crops, random flips, degrades clean
sources (:class:`~ramir.data.sources.Source`) on the fly and returns::

    {"lq": (3, p, p) float32 in [0, 1], "gt": (3, p, p) float32 in [0, 1],
     "task": str, "index": int}

Values are **not** normalised (the training loop applies the model's normalisation).

Reproducibility: a sample is a pure function of ``(seed, epoch, index)``. Every random
choice (which image, crop, flips, degradation parameters and noise) comes from generators
seeded with ``(seed, epoch, index)``; nothing depends on worker ids, call order or global
RNG state. So any ``DataLoader`` (any ``num_workers``) and any sampler, including
``DistributedSampler``, see the same sample for the same index. Call
:meth:`MixtureDataset.set_epoch` before each epoch (with a ``DistributedSampler``, next
to ``sampler.set_epoch``); the epoch lives in shared memory, so persistent workers see it.

Within an epoch, round-robin sampling walks each sub-dataset in a random order (a fresh
permutation per epoch and per pass), so every image is used before any repeats.

The fixed evaluation sets are in :mod:`ramir.data.testsets`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ramir import degradations
from ramir.data.config import DataConfig
from ramir.data.datasets import DatasetError, Pair
from ramir.data.pixels import array_to_tensor, to_float01
from ramir.data.read import read_array
from ramir.data.sources import Source, build_source
from ramir.data.store import PixelStore
from ramir.data.transforms import tone_shift

__all__ = ["SCENE_TONE_EXEMPT", "MixtureDataset", "build_mixture"]

# Domain tags keep the seed streams of different uses apart (ramir.data.testsets: 2).
_SAMPLE, _ORDER = 0, 1

# name (and task) of the identity source that ``DataConfig.identity`` adds
IDENTITY = "identity"

SCENE_TONE_EXEMPT = frozenset({IDENTITY, "haze", "low_light"})
"""Tasks and degradations (also as a step of a chain) that ``DataConfig.scene_tone``
leaves alone: they change the photo's global tone themselves, so a toned scene would make
their target ambiguous (identity has ``identity_tone``)."""


def _tones_scene(src: Source) -> bool:
    """Whether ``scene_tone`` may tone the clean crops of ``src``: a source degraded on
    the fly whose task and degradation (every step of a chain) are not exempt."""
    deg = src.degradation
    if deg is None or src.task in SCENE_TONE_EXEMPT or deg.name in SCENE_TONE_EXEMPT:
        return False
    steps = deg.params.get("steps", []) if deg.name == "chain" else []  # validated mappings
    return not any(step["name"] in SCENE_TONE_EXEMPT for step in steps)


class MixtureDataset(Dataset):
    """The multi-task training stream (see the module docstring).

    Args:
        cfg: the data config.
        sources: pre-built sources (default: built from ``cfg.datasets``, plus the identity
            task if ``cfg.identity``).
    """

    def __init__(self, cfg: DataConfig, sources: Sequence[Source] | None = None) -> None:
        self.cfg = cfg
        if sources is None:
            if not cfg.datasets:
                raise DatasetError("the data config lists no training datasets")
            built = [build_source(spec, cfg) for spec in cfg.datasets]
            if cfg.identity:
                built.append(_identity_source(cfg, built))
            sources = built
        self.sources: list[Source] = list(sources)
        shared: dict[Path, np.ndarray] = {}
        for src in self.sources:  # sources reading the same files share one cache
            if src.cache:
                shared.update(src._store)
                src._store = shared
        self.store: PixelStore | None = None
        if not self.sources:
            raise DatasetError("a mixture needs at least one source")
        self.tasks = [s.task for s in self.sources]
        self.weights = np.array([_weight(cfg, s.name) for s in self.sources], dtype=np.float64)
        if cfg.sampling == "weighted" and self.weights.sum() <= 0:
            raise DatasetError("all dataset weights are 0")
        sizes = [len(s) for s in self.sources]
        if cfg.epoch_length is not None:
            self.length = cfg.epoch_length
        elif cfg.sampling == "official_prefix":  # the release: min size x types x 10
            self.length = len(self.sources) * min(sizes) * 10
        elif cfg.sampling == "round_robin":
            self.length = len(self.sources) * max(sizes)
        else:
            self.length = sum(sizes)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._orders: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self.deferred = [
            _device_version(s) if cfg.degrade_on == "device" else None for s in self.sources
        ]
        self.scene_toned = [_tones_scene(s) for s in self.sources]  # per source, once

    def __len__(self) -> int:
        return self.length

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns (shared with workers)."""
        self._epoch[0] = int(epoch)

    def preload(self, max_bytes: int | None = None) -> int:
        """Decode every image of the sources with ``cache: true`` once, into a shared
        :class:`~ramir.data.store.PixelStore` of at most ``max_bytes`` (default
        ``cfg.cache_max_mb``); return how many images it holds.

        Call it before creating ``DataLoader`` workers: every worker, forked or spawned,
        then reads patches from the same memory-mapped pixels instead of decoding (and
        keeping) its own copy of every photo. Samples are unchanged. Calling it again
        keeps the store; :meth:`close` removes it.
        """
        if self.store is not None:
            return len(self.store)
        cached = [s for s in self.sources if s.cache]
        paths = [
            path
            for src in cached
            for pair in src.pairs
            for path in (pair.gt, pair.lq)
            if path is not None
        ]
        if not paths:
            return 0
        bound = int(self.cfg.cache_max_mb * 2**20) if max_bytes is None else int(max_bytes)
        known = dict(cached[0]._store)  # images decoded before (shared by cached sources)

        def read(path: Path) -> np.ndarray:
            hit = known.get(path)
            return hit if hit is not None else read_array(path).pixels

        self.store = PixelStore.build(paths, read, max_bytes=bound, directory=self.cfg.cache_dir)
        for src in cached:
            src._store = self.store
        return len(self.store)

    def close(self) -> None:
        """Remove the shared image store of :meth:`preload` (sources decode per sample
        again until the next ``preload``)."""
        if self.store is not None:
            shared: dict[Path, np.ndarray] = {}
            for src in self.sources:
                if src.cache:
                    src._store = shared
            self.store.close()
            self.store = None

    def describe(self) -> str:
        """One line per source: name, task, images."""
        lines = [f"{len(self.sources)} sources, {self.length} samples/epoch ({self.cfg.sampling})"]
        for s, w in zip(self.sources, self.weights, strict=True):
            deg = f", degradation {s.degradation.name}" if s.degradation is not None else ""
            wt = f", weight {w:g}" if self.cfg.sampling == "weighted" else ""
            if self.cfg.sampling == "official_prefix":
                wt = f", only the first {self.prefix_length(self.sources.index(s))} seen"
            lines.append(f"  {s.name}: task {s.task}, {len(s)} images{deg}{wt}")
        return "\n".join(lines)

    def _order(self, epoch: int, k: int, cycle: int) -> np.ndarray:
        key = (epoch, k, cycle)
        order = self._orders.get(key)
        if order is None:
            rng = np.random.default_rng([self.cfg.seed, _ORDER, epoch, k, cycle])
            order = rng.permutation(len(self.sources[k]))
            self._orders[key] = order
            while len(self._orders) > 4 * len(self.sources) + 4:
                self._orders.popitem(last=False)
        return order

    def locate(self, index: int, epoch: int | None = None) -> tuple[int, int]:
        """``(source number, pair number)`` that sample ``index`` of ``epoch`` uses."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.sources)
        if self.cfg.sampling == "round_robin":
            k, j = index % n, index // n
            size = len(self.sources[k])
            return k, int(self._order(epoch, k, j // size)[j % size])
        if self.cfg.sampling == "official_prefix":
            k = index % n
            return k, (index // n) % self.prefix_length(k)
        rng = np.random.default_rng([self.cfg.seed, _ORDER, epoch, index])
        k = int(rng.choice(n, p=self.weights / self.weights.sum()))
        return k, int(rng.integers(len(self.sources[k])))

    def prefix_length(self, k: int) -> int:
        """``official_prefix``: how many files of source ``k`` an epoch sees."""
        streams = self.cfg.official_streams
        per_stream = -(-self.length // (len(self.sources) * streams))  # ceil
        return max(1, min(len(self.sources[k]), per_stream))

    def sample(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        """Sample ``index`` of ``epoch`` (default: the current epoch); pure."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        epoch = self.epoch if epoch is None else epoch
        k, i = self.locate(index, epoch)
        src = self.sources[k]
        aug_seq, deg_seq = np.random.SeedSequence([self.cfg.seed, _SAMPLE, epoch, index]).spawn(2)
        aug_rng, deg_rng = np.random.default_rng(aug_seq), np.random.default_rng(deg_seq)
        gt_raw, lq_raw = src.load_pair(i)
        p = self.cfg.patch_size
        h, w = gt_raw.shape[:2]
        if h < p or w < p:
            pair = src.pairs[i]
            raise DatasetError(
                f"dataset {src.name!r}: {pair.lq or pair.gt} is {h}x{w}, smaller than "
                f"patch_size {p}; lower patch_size or remove the image"
            )
        y, x = int(aug_rng.integers(0, h - p + 1)), int(aug_rng.integers(0, w - p + 1))
        gt = to_float01(gt_raw[y : y + p, x : x + p])
        lq = None if lq_raw is None else to_float01(lq_raw[y : y + p, x : x + p])
        flips = aug_rng.random(3)
        ops = []
        if self.cfg.hflip and flips[0] < 0.5:
            ops.append(lambda a: a[:, ::-1])
        if self.cfg.vflip and flips[1] < 0.5:
            ops.append(lambda a: a[::-1])
        if self.cfg.rot90 and flips[2] < 0.5:
            ops.append(lambda a: a.transpose(1, 0, 2))
        for op in ops:
            gt = op(gt)
            lq = None if lq is None else op(lq)
        gt = np.ascontiguousarray(gt)
        if src.task == IDENTITY and self.cfg.identity_tone > 0 and lq is None:
            if aug_rng.random() < self.cfg.identity_tone:
                gt = tone_shift(gt, aug_rng)
        elif self.cfg.scene_tone > 0 and lq is None and self.scene_toned[k]:
            if aug_rng.random() < self.cfg.scene_tone:
                gt = tone_shift(gt, aug_rng)  # the scene itself; degraded below
        lq = gt if lq is None else np.ascontiguousarray(lq)
        if src.degradation is not None and self.deferred[k] is None:
            lq = src.degradation(lq, deg_rng)
        item = {
            "lq": array_to_tensor(lq),
            "gt": array_to_tensor(gt),
            "task": src.task,
            "index": index,
        }
        if self.cfg.degrade_on == "device":
            item["source"] = k
        return item

    def device_degradations(self) -> list[Any]:
        """Per source, the batched degradation (:mod:`ramir.degradations.device`) that the
        training loop applies to its samples on the device, or ``None`` where
        :meth:`sample` degrades on the CPU (``cfg.degrade_on: cpu``, the identity task,
        or a degradation without a batched version). Samples carry ``"source"``."""
        return list(self.deferred)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.sample(int(index))


def _device_version(src: Source) -> Any:
    """The batched version of ``src``'s degradation, or ``None`` (none, identity, or no
    batched version)."""
    from ramir.degradations import device

    deg = src.degradation
    if deg is None or deg.name == IDENTITY or not device.has_device_version(deg.name):
        return None
    return device.batch_version(deg)


def _weight(cfg: DataConfig, name: str) -> float:
    for s in cfg.datasets:
        if s.name == name:
            return s.weight
    return cfg.identity_weight if name == IDENTITY else 1.0


def _identity_source(cfg: DataConfig, built: list[Source]) -> Source:
    clean = [s for s in built if all(p.lq is None for p in s.pairs)]
    if cfg.identity_from is not None:
        base = next(s for s in built if s.name == cfg.identity_from)
    elif clean:
        base = clean[0]
    else:
        base = built[0]
    pairs = [Pair(gt=p.gt, lq=None, key=p.key) for p in base.pairs]
    return Source(
        name=IDENTITY,
        task=IDENTITY,
        pairs=pairs,
        degradation=degradations.Degradation(IDENTITY),
        cache=base.cache,
    )


def build_mixture(cfg: DataConfig) -> MixtureDataset:
    """The training stream of ``cfg`` (scans every dataset; raises on any problem)."""
    return MixtureDataset(cfg)

"""The training data stream: one persistent loader for the whole run, resumable at any
iteration, with its batches checked in the workers and copied to the device ahead of use.

:func:`data_stream` builds a run's stream from these parts:

* :class:`StreamSampler` yields every batch of the run, epoch after epoch, as lists of
  ``(epoch, index)`` keys: epoch ``e`` is the order a ``DistributedSampler`` (``shuffle``,
  ``drop_last``, seed ``seed``) gives this rank for epoch ``e``, cut into batches. It
  starts at any global iteration, so a resumed run meets the same batches as an
  uninterrupted one without loading the ones already done.
* :func:`make_loader` builds **one** ``DataLoader`` over it for the whole run: workers are
  started once, not once per epoch, and keep their state (open files, the shared image
  store of :meth:`ramir.data.mixture.MixtureDataset.preload`). Each key carries its
  epoch, so a worker that runs ahead into the next epoch still makes the right samples:
  a dataset with ``sample(index, epoch)`` (the training mixture; a pure function) is
  asked for exactly that; any other gets ``set_epoch(epoch)`` (when it has one) in the
  process that loads the item, before its first item of each epoch.
* :func:`collate_checked` runs in the workers: it stacks the samples and refuses a batch
  whose ``lq`` or ``gt`` hold NaN/Inf (naming the items), so the training step never
  reads values back from the device to check them.
* :class:`BatchDegrader` degrades the samples of a batch on the training device, with
  the batched degradations of :mod:`ramir.degradations.device`, when the dataset left
  them to it (``data.degrade_on: device``);
* :class:`DevicePrefetcher` copies each batch to a CUDA device from pinned memory on a
  side stream, overlapping the step queued before it, and says how long the loop
  waited for data; on a CPU it hands batches through.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.data._utils.collate import default_collate

from ramir.data.datasets import DatasetError
from ramir.training import distributed as ddp
from ramir.training.config import TrainSection
from ramir.training.inputs import mix_seed

__all__ = [
    "data_stream",
    "Stream",
    "StreamSampler",
    "KeyedDataset",
    "collate_checked",
    "check_finite",
    "make_loader",
    "DevicePrefetcher",
    "BatchDegrader",
]

Key = tuple[int, int]
"""``(epoch, index)`` of one sample."""


class StreamSampler(Sampler[list[Key]]):
    """Every batch of a run from global iteration ``start_iter`` on, endlessly.

    Args:
        length: the dataset's size.
        batch_size: samples per batch on this rank.
        rank, world_size: this process's share (as ``DistributedSampler``).
        seed: the order's seed: epoch ``e`` is ``DistributedSampler(seed=seed)``'s order
            after ``set_epoch(e)``, this rank's part, cut into ``iters_per_epoch``
            batches (the last, incomplete one dropped).
        start_iter: iterations already done; the first batch is iteration
            ``start_iter + 1`` of the run.

    Raises:
        ValueError: the dataset holds fewer than one batch per rank.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        start_iter: int = 0,
    ) -> None:
        self.length, self.batch_size = int(length), int(batch_size)
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.start_iter = int(start_iter)
        self.iters_per_epoch = (self.length // world_size) // self.batch_size
        if self.iters_per_epoch < 1:
            raise ValueError(
                f"the training set has {self.length} images, fewer than one global batch "
                f"(train.batch_size {batch_size} x {world_size} processes); "
                "lower train.batch_size or use more data"
            )

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's sample indices of ``epoch`` (``iters_per_epoch`` batches' worth)."""
        sampler = DistributedSampler(
            range(self.length),  # type: ignore[arg-type]
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        sampler.set_epoch(epoch)
        return list(sampler)[: self.iters_per_epoch * self.batch_size]

    def position(self, iteration: int) -> tuple[int, int]:
        """``(epoch, batch within it)`` of 1-based global ``iteration``."""
        return divmod(iteration - 1, self.iters_per_epoch)

    def __iter__(self) -> Iterator[list[Key]]:
        epoch, skip = divmod(self.start_iter, self.iters_per_epoch)
        b = self.batch_size
        while True:
            order = self.epoch_order(epoch)
            for k in range(skip, self.iters_per_epoch):
                yield [(epoch, i) for i in order[k * b : (k + 1) * b]]
            epoch, skip = epoch + 1, 0

    def __len__(self) -> int:  # a DataLoader asks; the stream has no end
        return 2**62


class KeyedDataset(Dataset):
    """``dataset`` indexed by ``(epoch, index)`` keys (see the module docstring)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.pure = callable(getattr(dataset, "sample", None))
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        epoch, index = key
        if self.pure:
            return self.dataset.sample(index, epoch)  # type: ignore[attr-defined]
        if epoch != self._epoch:
            set_epoch = getattr(self.dataset, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
            self._epoch = epoch
        return self.dataset[index]


def check_finite(batch: Mapping[str, Any]) -> None:
    """Raise a :class:`DatasetError` naming the items whose ``lq`` or ``gt`` hold NaN/Inf.

    ``batch["lq"]``, ``batch["gt"]``: CPU tensors ``(B, C, H, W)``; ``batch["index"]``
    (optional) names the items.
    """
    for key in ("lq", "gt"):
        x = batch[key]
        if bool(torch.isfinite(x).all()):
            continue
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        if "index" in batch:
            items = torch.as_tensor(batch["index"])[bad].tolist()
            which = f"items {items}"
        else:
            which = f"batch positions {bad.nonzero().flatten().tolist()}"
        raise DatasetError(
            f"the training set's {which} hold NaN or Inf values in {key!r}; "
            "fix or remove those images (or the dataset code that made them)"
        )


def collate_checked(samples: Sequence[Any]) -> Any:
    """``default_collate`` of ``samples``, then :func:`check_finite` (in the worker)."""
    batch = default_collate(list(samples))
    check_finite(batch)
    return batch


def make_loader(
    dataset: Dataset,
    sampler: StreamSampler,
    *,
    num_workers: int,
    pin_memory: bool,
    seed: int,
    prefetch_factor: int | None = None,
) -> DataLoader:
    """The one ``DataLoader`` of a run: batches of ``sampler`` from ``dataset``.

    Args:
        dataset: items ``{"lq", "gt"}`` ``(3, H, W)`` float in [0, 1], more keys allowed.
        sampler: the run's :class:`StreamSampler`.
        num_workers: worker processes (0: load in this process).
        pin_memory: pin batches in page-locked memory (for CUDA copies).
        seed: seeds the workers' base seed (not the global RNG, whose stream the
            training step owns).
        prefetch_factor: batches each worker prepares ahead (default 2; needs workers).
    """
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["prefetch_factor"] = prefetch_factor or 2
    return DataLoader(
        KeyedDataset(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_checked,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(int(seed)),
        **kwargs,
    )


_DEVICE_KEYS = ("lq", "gt")


class DevicePrefetcher:
    """Batches from ``loader`` with ``lq``/``gt`` on ``device``.

    On CUDA the copy runs on a side stream (``non_blocking``, from the pinned memory the
    loader made): :meth:`next` is called right after the previous step's kernels were
    queued, so the copy overlaps that step on the GPU, and the step's stream waits for
    the copy on the device, never the host. The workers and the loader's pinning thread
    prepare the following batches meanwhile. Other entries (``index``, ``task``) stay on
    the CPU. On a CPU device batches are handed through.

    Attributes:
        wait_s: seconds :meth:`next` spent waiting for the loader, in total.
    """

    def __init__(self, loader: DataLoader, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.iterator: Iterator[Any] | None = iter(loader)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.wait_s = 0.0

    def next(self) -> dict[str, Any]:
        """The next batch (``lq``, ``gt`` on the device)."""
        assert self.iterator is not None, "the prefetcher was closed"
        t = time.perf_counter()
        batch = next(self.iterator)
        self.wait_s += time.perf_counter() - t
        if self.stream is None:
            return batch
        current = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.stream):  # its own memory pool: no wait for `current`
            moved = {
                k: v.to(self.device, non_blocking=True) if k in _DEVICE_KEYS else v
                for k, v in batch.items()
            }
        current.wait_stream(self.stream)
        for k in _DEVICE_KEYS:  # the side stream's memory now belongs to the step
            moved[k].record_stream(current)
        return moved

    def close(self) -> None:
        """Stop the loader's workers."""
        it, self.iterator = self.iterator, None
        shutdown = getattr(it, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()


class BatchDegrader:
    """Degrade a batch's samples on its device, each by its source's batched degradation.

    Args:
        specs: per source number, a callable ``(x (N, C, H, W) in [0, 1], generator) ->
            float32 (N, C, H, W)`` (a :class:`ramir.degradations.device.BatchDegradation`),
            or ``None`` for sources whose samples arrive degraded.
        seed, rank: the run's seed and this process's rank; the draws of iteration ``t``
            come from one generator on the batch's device seeded by ``(seed, t, rank)``,
            so a resumed run degrades its batches as an uninterrupted one.
    """

    def __init__(self, specs: Sequence[Any], seed: int, rank: int = 0) -> None:
        self.specs, self.seed, self.rank = list(specs), int(seed), int(rank)

    def __bool__(self) -> bool:
        return any(s is not None for s in self.specs)

    def __call__(self, batch: Mapping[str, Any], iteration: int) -> torch.Tensor:
        """``batch["lq"]`` ``(B, C, H, W)`` in [0, 1] with every sample of a source that
        has a spec degraded (sources in increasing order); ``batch["source"]``: the
        samples' source numbers, a CPU tensor (read on the host, no device sync)."""
        lq = batch["lq"]
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(torch.as_tensor(batch["source"]).tolist()):
            if self.specs[k] is not None:
                groups.setdefault(int(k), []).append(i)
        if not groups:
            return lq
        g = torch.Generator(lq.device).manual_seed(mix_seed(self.seed, iteration, self.rank, 5))
        out = lq.clone()
        for k in sorted(groups):
            idx = torch.as_tensor(groups[k]).to(lq.device, non_blocking=True)
            out[idx] = self.specs[k](lq.index_select(0, idx), g).to(lq.dtype)
        return out


# ----------------------------------------------------------------------------- the run's stream


class Stream(DevicePrefetcher):
    """The prefetcher, with the epoch length the loop reports."""

    def __init__(self, loader: DataLoader, device: torch.device, iters_per_epoch: int) -> None:
        super().__init__(loader, device)
        self.iters_per_epoch = iters_per_epoch


def data_stream(
    dataset: Dataset,
    tc: TrainSection,
    info: ddp.DistInfo,
    start_iter: int,
    closing: contextlib.ExitStack,
) -> Stream:
    """This process's batches from iteration ``start_iter + 1`` on, from one persistent
    loader, ``lq``/``gt`` on the device (the loader's workers are stopped by ``closing``).

    The order is a pure function of (seed, epoch): resuming skips the batches already
    done without loading them. The workers' base seed comes from a generator seeded by
    ``(seed, rank)``, not from the global RNG, whose stream (dropout, stochastic depth)
    must not depend on where a run was resumed. A training mixture first decodes its
    cached photos into the image store its workers share (``preload``). Each batch is
    checked finite in the workers, before it reaches the device: a check in every
    forward would make a GPU wait for the host at each step.
    """
    sampler = StreamSampler(
        len(dataset),  # type: ignore[arg-type]
        tc.batch_size,
        rank=info.rank,
        world_size=info.world_size,
        seed=tc.seed,
        start_iter=start_iter,
    )
    preload = getattr(dataset, "preload", None)
    if callable(preload) and getattr(dataset, "store", False) is None:
        preload()  # the store is removed when training ends
        closing.callback(dataset.close)  # type: ignore[attr-defined]
    loader = make_loader(
        dataset,
        sampler,
        num_workers=tc.num_workers,
        pin_memory=info.device.type == "cuda",
        seed=(tc.seed + 1000 * info.rank) * 100_003,
        prefetch_factor=tc.prefetch_factor,
    )
    stream = Stream(loader, info.device, sampler.iters_per_epoch)
    closing.callback(stream.close)
    return stream


def first_item_size(dataset: Dataset, min_size: int) -> tuple[int, int]:
    """``(H, W)`` of the training set's first item, at least ``min_size``."""
    h, w = dataset[0]["lq"].shape[-2:]
    m = max(min_size, 1)
    return max(int(h), m), max(int(w), m)

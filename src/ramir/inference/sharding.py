"""Splitting inference work: same-size images grouped into batches, groups balanced over
``torchrun`` ranks by size, and decoding/encoding overlapped with the network.

* :func:`group_same_size` puts images that are restored whole and have the same size
  into groups of at most ``cap`` (one network call each); other images are groups of
  one (their tiles are batched instead). Groups depend only on the list of images, not
  on the number of processes, so a run on N ranks computes exactly what one process
  computes.
* :func:`balance` spreads groups over ranks by cost (pixels), largest first, each to the
  least loaded rank, so one rank does not get all the large images.
* :func:`prefetch` decodes the next group in a reader thread while the current one is
  restored; :class:`Writer` encodes results in a writer thread. PIL, tifffile and
  PyTorch release the GIL while they work, so a GPU does not wait on them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

__all__ = ["Writer", "balance", "group_same_size", "prefetch"]

T = TypeVar("T")
U = TypeVar("U")


def group_same_size(
    sizes: Sequence[tuple[int, int] | None], whole: Sequence[bool], cap: int
) -> list[list[int]]:
    """Indices of ``sizes`` grouped for batching.

    Args:
        sizes: ``(height, width)`` of each image, ``None`` where unknown.
        whole: whether each image is restored in one piece (not tiled); only those are
            grouped.
        cap: the most images in one group (``1``: no grouping).

    Returns:
        Groups of indices, each in increasing order, ordered by their first index:
        images of one size fill groups of ``cap`` in list order; tiled images and images
        of unknown size are alone.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    groups: list[list[int]] = []
    open_group: dict[tuple[int, int], list[int]] = {}
    for i, (size, one_piece) in enumerate(zip(sizes, whole, strict=True)):
        if size is None or not one_piece or cap == 1:
            groups.append([i])
            continue
        group = open_group.get(size)
        if group is None or len(group) >= cap:
            group = []
            open_group[size] = group
            groups.append(group)
        group.append(i)
    return sorted(groups, key=lambda g: g[0])


def balance(costs: Sequence[float], parts: int) -> list[list[int]]:
    """Split items over ``parts`` ranks so that their summed costs are close.

    Largest first, each to the least loaded rank (ties: the item with the lower index
    first, the lower rank first): the heaviest rank is at most 4/3 of the best split
    (Graham's bound) and never more than one item above the average. Deterministic.

    Returns:
        For each rank, its item indices in increasing order.
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    loads = [0.0] * parts
    shares: list[list[int]] = [[] for _ in range(parts)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(parts), key=lambda r: (loads[r], r))
        loads[rank] += costs[i]
        shares[rank].append(i)
    return [sorted(s) for s in shares]


_END = object()


def prefetch(
    fn: Callable[[T], U], items: Sequence[T], *, ahead: int = 1
) -> Iterator[tuple[T, U | None, BaseException | None]]:
    """``(item, fn(item), None)`` for each item in order, or ``(item, None, error)`` where
    ``fn`` raised; with ``ahead >= 1`` a reader thread computes up to ``ahead`` results
    before they are asked for (at most ``ahead + 1`` results exist at once: the one in
    use and those read ahead). ``ahead=0`` calls ``fn`` inline.

    Leaving the loop early (``break``, an exception) stops the reader after its current
    item.
    """
    if ahead <= 0:
        for item in items:
            try:
                yield item, fn(item), None
            except Exception as e:  # noqa: BLE001 - handed to the caller
                yield item, None, e
        return

    slots = threading.Semaphore(ahead + 1)
    results: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        for item in items:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            try:
                results.put((item, fn(item), None))
            except Exception as e:  # noqa: BLE001 - handed to the caller
                results.put((item, None, e))
        results.put(_END)

    reader = threading.Thread(target=read, name="ramir-reader", daemon=True)
    reader.start()
    try:
        while True:
            got = results.get()
            if got is _END:
                return
            yield got
            slots.release()  # the caller is done with this one
    finally:
        stop.set()
        reader.join(timeout=60)


class Writer(Generic[T]):
    """Runs write jobs in order in one background thread (``threaded``), or at once.

    ``submit`` blocks while ``pending`` jobs wait, so results waiting to be encoded
    stay bounded. Each job's result or exception is in the returned ``Future``.
    ``close()`` waits for every job; ``close(cancel=True)`` drops those not started.
    """

    def __init__(self, *, threaded: bool, pending: int = 2) -> None:
        self.threaded = threaded
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=max(1, pending))
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="ramir-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _END:
                return
            future, fn, args = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - kept in the future
                    future.set_exception(e)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        if not self.threaded:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(fn(*args))
            except Exception as e:  # noqa: BLE001 - kept in the future
                future.set_exception(e)
            return future
        self._jobs.put((future, fn, args))
        return future

    def close(self, *, cancel: bool = False) -> None:
        if self._thread is None:
            return
        if cancel:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not _END:
                    job[0].cancel()
        self._jobs.put(_END)
        self._thread.join()
        self._thread = None

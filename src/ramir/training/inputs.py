"""Input makers: how one training stage turns a batch into (network input, target, mask).

An input maker is any callable ``(lq, gt, iteration, keys) -> (inp, target, mask)`` where
``lq``/``gt`` are ``(B, 3, H, W)`` in the model's normalised space, ``iteration`` is the
1-based step and ``keys`` the samples' dataset indices ``(B,)`` (or ``None``); ``mask`` is
``None`` for whole inputs or ``(1|B, H, W)`` with 1 = hidden, which the loop passes to
the model (the model puts its mask token there; zeros in normalised space by default).

Masks are drawn on the batch's device (no host-to-device copy per step) and are a pure
function of the device type and ``(seed, iteration)`` (shared masks; with ``per_rank``, of
``(seed, iteration, rank)`` for ranks after the first) or of ``(seed, iteration, dataset
index)`` (per-sample masks): a resumed run draws the same masks, and with per-sample masks
two processes with batch B draw the same as one with batch 2B.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ramir.masking import random_mask
from ramir.training.config import TrainSection

__all__ = ["InputMaker", "WholeInput", "MaskedInput", "make_input_maker", "mix_seed"]

InputMaker = Callable[
    [torch.Tensor, torch.Tensor, int, "torch.Tensor | None"],
    "tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]",
]

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 steps)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (int(v) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x & ((1 << 63) - 1)


class WholeInput:
    """Fine-tuning and plain paired training: the network sees ``lq`` whole."""

    masked = False

    def __call__(
        self, lq: torch.Tensor, gt: torch.Tensor, iteration: int, keys: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        return lq, gt, None


class MaskedInput:
    """Masked pretraining: hide ``ceil(ratio * cells)`` random cells of the input.

    Args:
        ratio, patch_size, shared: see :func:`ramir.masking.random_mask`.
        seed: the run's seed.
        rank: this process's rank; with ``shared`` masks, ranks after the first draw their
            own mask (rank 0 draws what a single process draws).
        source: ``lq`` (RAM) or ``gt`` (the Table 4 ablation: masked clean images);
            the target is ``gt`` either way.
    """

    masked = True

    def __init__(
        self,
        ratio: float = 0.5,
        patch_size: int = 1,
        shared: bool = True,
        seed: int = 0,
        source: str = "lq",
        rank: int = 0,
    ) -> None:
        if source not in ("lq", "gt"):
            raise ValueError(f"MaskedInput source must be 'lq' or 'gt', got {source!r}")
        self.ratio, self.patch_size, self.shared = ratio, patch_size, shared
        self.seed, self.source, self.rank = seed, source, rank

    def mask(
        self,
        height: int,
        width: int,
        iteration: int,
        keys: torch.Tensor | None,
        batch: int,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The ``(1|B, H, W)`` float mask of ``iteration`` in {0, 1}, drawn on ``device``
        by a generator of that device (a CUDA mask needs no copy from the host; the
        same seed draws other masks on CUDA than on the CPU). ``keys`` (per-sample
        masks) is read on the host: keep it on the CPU."""
        device = torch.device(device)
        kw = {"ratio": self.ratio, "patch_size": self.patch_size, "shared": True}
        if self.shared:
            parts = (self.seed, iteration) if self.rank == 0 else (self.seed, iteration, -self.rank)
            g = torch.Generator(device).manual_seed(mix_seed(*parts))
            return random_mask(height, width, generator=g, **kw)
        ids = keys.tolist() if keys is not None else list(range(batch))
        if len(ids) != batch:
            raise ValueError(f"got {len(ids)} sample keys for a batch of {batch}")
        rows = []
        for k in ids:
            g = torch.Generator(device).manual_seed(mix_seed(self.seed, iteration, 1 + int(k)))
            rows.append(random_mask(height, width, generator=g, **kw))
        return torch.cat(rows)

    def __call__(
        self, lq: torch.Tensor, gt: torch.Tensor, iteration: int, keys: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = lq.shape
        m = self.mask(h, w, iteration, keys, b, lq.device)
        return (lq if self.source == "lq" else gt), gt, m


def make_input_maker(cfg: TrainSection, rank: int = 0) -> WholeInput | MaskedInput:
    """The input maker of ``train.input`` (``whole``, ``masked`` or ``masked_gt``) for the
    process of rank ``rank``. ``adaptive`` (RAM++) gives whole inputs: its mask is drawn
    by the generator network inside the step (:mod:`ramir.training.rampp`)."""
    if cfg.input in ("whole", "adaptive"):
        return WholeInput()
    source = "gt" if cfg.input == "masked_gt" else "lq"
    m = cfg.mask
    rank = rank if m.per_rank else 0
    return MaskedInput(m.ratio, m.patch_size, m.shared, seed=cfg.seed, source=source, rank=rank)

"""The mask path of MAC (docs/method.md#mac): positions, reveal orders, soft masks.

Along a path of ``N`` steps that starts with ``1 - r`` of the pixels revealed,

* step ``t = 0..N-1`` has ``alpha_t = (1 - r) + r * t / N``;
* the pixel of rank ``i`` in an image's reveal order gets the soft mask
  ``sigmoid(k * (alpha_t - i / (H*W)))`` if ``i < ceil(alpha_t * H * W)``, else 0.

:class:`MaskPath` keeps what every chunk of path steps needs on the device (the inverse
permutations, the positions and the revealed counts), so that building the masks of a
chunk copies nothing from the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["MaskPath", "check_order", "mask_path_alphas", "random_orders", "soft_reveal_masks"]


def mask_path_alphas(steps: int, start_ratio: float) -> list[float]:
    """``alpha_t = (1 - r) + r * t / N`` for ``t = 0..N-1`` (Python floats, as the reference)."""
    return [1 - start_ratio + start_ratio * t / steps for t in range(steps)]


def random_orders(
    n_images: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One random reveal order (a permutation of the ``H*W`` pixels) per image: ``(B, H*W)`` long."""
    orders = torch.stack(
        [torch.randperm(height * width, generator=generator) for _ in range(n_images)]
    )
    return orders.to(device) if device is not None else orders


def _ranks(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutations: ``ranks[b, p]`` is the position of pixel ``p`` in ``order[b]``."""
    b, n = order.shape
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    return ranks


class MaskPath:
    """The soft masks of one mask path, built chunk by chunk on the device of ``order``.

    Args:
        order: ``(B, H*W)`` long, each row a permutation of the pixel indices
            (row-major ``y * W + x``).
        alphas: the ``N`` path positions.
        sharpness: ``k``.
        height, width: image size.
    """

    def __init__(
        self,
        order: torch.Tensor,
        alphas: Sequence[float],
        sharpness: float,
        height: int,
        width: int,
    ) -> None:
        n = height * width
        if order.dim() != 2 or order.shape[1] != n:
            raise ValueError(
                f"order must be (B, {n}) for {height}x{width} images, got {tuple(order.shape)}"
            )
        self.height, self.width, self.n_images = height, width, order.shape[0]
        self.sharpness = sharpness
        dev = order.device
        self.ranks = _ranks(order).to(torch.float64).unsqueeze(1)  # (B, 1, n)
        # (1, N, 1) each, copied to the device once for the whole path
        self.alphas = torch.tensor(list(alphas), dtype=torch.float64).view(1, -1, 1).to(dev)
        counts = [math.ceil(n * float(x)) for x in alphas]
        self.counts = torch.tensor(counts, dtype=torch.float64).view(1, -1, 1).to(dev)
        self.zero = torch.zeros((), dtype=torch.float64, device=dev)

    def __len__(self) -> int:
        return self.alphas.shape[1]

    def masks(self, t0: int, c: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Steps ``t0 .. t0 + c - 1``: ``(B, c, H, W)`` in ``[0, 1]`` (float64 maths, then ``dtype``)."""
        a = self.alphas[:, t0 : t0 + c]
        soft = 1.0 / (1.0 + torch.exp(-self.sharpness * (a - self.ranks / self.ranks.shape[-1])))
        masks = torch.where(self.ranks < self.counts[:, t0 : t0 + c], soft, self.zero)
        return masks.to(dtype).view(self.n_images, a.shape[1], self.height, self.width)


def soft_reveal_masks(
    order: torch.Tensor,
    alphas: Sequence[float],
    sharpness: float,
    height: int,
    width: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The soft masks of the mask path (1 = revealed), vectorised over images and steps.

    Pixel of rank ``i`` in ``order[b]``: ``sigmoid(k * (alpha - i / n))`` if
    ``i < ceil(alpha * n)`` else 0, with ``n = H * W`` and ``k = sharpness`` (computed in
    float64, then cast to ``dtype``).

    Args:
        order: ``(B, H*W)`` long, each row a permutation of the pixel indices
            (row-major ``y * W + x``).
        alphas: the ``c`` path positions.
        sharpness: ``k``.
        height, width: image size.
        dtype: output dtype.

    Returns:
        ``(B, c, H, W)`` in ``[0, 1]``.
    """
    return MaskPath(order, alphas, sharpness, height, width).masks(0, len(alphas), dtype)


def check_order(order: torch.Tensor, n_images: int, n_pixels: int) -> torch.Tensor:
    """``order`` as long after checking it is ``(n_images, n_pixels)`` rows of permutations."""
    if not isinstance(order, torch.Tensor) or order.dtype not in (torch.int64, torch.int32):
        raise TypeError("order must be an integer (long) tensor (B, H*W) of reveal orders")
    if tuple(order.shape) != (n_images, n_pixels):
        raise ValueError(
            f"order must have shape (B, H*W) = ({n_images}, {n_pixels}), got {tuple(order.shape)}"
        )
    ref = torch.arange(n_pixels, device=order.device).expand(n_images, n_pixels)
    if not torch.equal(order.sort(dim=1).values.long(), ref):
        raise ValueError("each row of order must be a permutation of 0..H*W-1")
    return order.long()

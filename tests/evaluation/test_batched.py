"""Batches of tiles and of same-size images: the same results as one at a time."""

from __future__ import annotations

import pytest
import torch

import ramir
from ramir.errors import UsageError
from ramir.inference.batching import apply_in_batches, check_batch_size
from ramir.inference.restore import restore_tensor
from ramir.inference.tiling import tiled_apply
from ramir.models import build_model


def _image(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(b, 3, h // 8 + 2, w // 8 + 2, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear").clamp(0, 1)


@pytest.fixture(scope="module")
def active_nafnet() -> torch.nn.Module:
    """A tiny NAFNet whose blocks (and their global pooling) do something."""
    torch.manual_seed(3)
    model = build_model("nafnet_tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.5)
    return model.eval()


@pytest.mark.parametrize("ensemble", ["none", "x8"])
def test_batched_tiles_equal_one_tile_at_a_time(active_nafnet, ensemble):
    """Global context replayed for every tile of a batch; two images at once; x8's
    quarter turns of non-square tiles."""
    x = _image(2, 70, 90)
    x[..., :35, :45] *= 0.3
    kw = dict(tile=32, tile_overlap=8, ensemble=ensemble)
    one = restore_tensor(active_nafnet, x, **kw)
    for batch_size in (3, 10, 64):  # 3 x 4 tiles of 2 images: 1, 5 (uneven) and 12 a call
        calls: list[int] = []
        hook = active_nafnet.register_forward_pre_hook(
            lambda m, inp, calls=calls: calls.append(inp[0].shape[0])
        )
        try:
            batched = restore_tensor(active_nafnet, x, batch_size=batch_size, **kw)
        finally:
            hook.remove()
        torch.testing.assert_close(batched, one, atol=2e-5, rtol=0)
        assert max(calls) == 2 * min(12, max(1, batch_size // 2))  # images x tiles a call
    naive = restore_tensor(active_nafnet, x, global_context=False, batch_size=8, **kw)
    assert float((naive - one).abs().max()) > 1e-3  # the context matters for this model


def test_batched_whole_images_equal_one_at_a_time(active_nafnet):
    x = _image(5, 40, 48, seed=1)
    one = torch.cat([restore_tensor(active_nafnet, x[i : i + 1]) for i in range(5)])
    for batch_size in (1, 2, "auto"):
        out = restore_tensor(active_nafnet, x, batch_size=batch_size)
        torch.testing.assert_close(out, one, atol=2e-5, rtol=0)
    tiled = ramir.restore(active_nafnet, x[0], tile=24, tile_overlap=6, batch_size=4)
    assert tiled.shape == (3, 40, 48)


def test_a_batch_that_runs_out_of_memory_is_halved_and_retried():
    seen: list[int] = []

    def fn(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate")
        return batch * 2

    parts = [torch.full((1, 1, 2, 2), float(j)) for j in range(7)]
    out: dict[int, torch.Tensor] = {}
    size = apply_in_batches(fn, 7, parts.__getitem__, out.__setitem__, batch_size=8)
    assert size == 2 and seen == [7, 4, 2, 2, 2, 1]
    assert all(torch.equal(out[j], parts[j] * 2) for j in range(7))
    x = torch.rand(1, 3, 40, 40)
    torch.testing.assert_close(
        tiled_apply(fn, x, 16, 4, batch_size=8), tiled_apply(lambda t: t * 2, x, 16, 4)
    )

    def cuda_oom(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return batch * 2

    assert apply_in_batches(cuda_oom, 7, parts.__getitem__, out.__setitem__, batch_size=3) == 1

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not retried
        apply_in_batches(broken, 3, parts.__getitem__, out.__setitem__, batch_size=2)


def test_batch_size_must_be_positive_or_auto():
    assert check_batch_size("auto") == "auto" and check_batch_size(4) == 4
    for bad in (0, -2, 1.5, "8", True):
        with pytest.raises(UsageError, match="batch_size must be"):
            check_batch_size(bad)
    with pytest.raises(UsageError, match="batch_size must be >= 1"):
        restore_tensor(torch.nn.Identity(), torch.rand(1, 3, 8, 8), batch_size=0)

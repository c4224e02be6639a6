"""MAC on CUDA waits for the host a fixed number of times per call, not per batch of path
steps (marked ``gpu``; run with ``python -m pytest -m gpu tests/attribution/test_mac_cuda.py``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ramir.attribution import mask_attribution_conductance, random_orders
from ramir.models import build_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _syncs(model: torch.nn.Module, lq: torch.Tensor, order: torch.Tensor, steps: int) -> int:
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, *a, **k: seen.append(str(m))
        torch.cuda.set_sync_debug_mode("warn")
        try:
            mask_attribution_conductance(model, lq, steps=steps, order=order, chunk=2)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in m for m in seen)


def test_host_syncs_do_not_grow_with_the_path_steps() -> None:
    torch.manual_seed(0)
    model = build_model("nafnet_tiny").cuda().eval()
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(2, 3, 16, 16, generator=g).cuda()
    order = random_orders(2, 16, 16, generator=g).cuda()
    _syncs(model, lq, order, 4)  # warm-up (cuDNN, allocator)
    short, long = _syncs(model, lq, order, 4), _syncs(model, lq, order, 16)  # 2 vs 8 batches
    assert long == short, (short, long)

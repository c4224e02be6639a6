"""bf16 autocast forward and backward for every backbone, on the CPU and (marked ``gpu``)
on CUDA: finite, and close to the fp32 result."""

from __future__ import annotations

import pytest
import torch

from ramir.models import build_model, list_models

# a tiny size of each backbone (16x16 inputs)
TINY = {
    "nafnet": dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    "ram_swinir": dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4),
    "ram_promptir": dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "swinir": dict(img_size=16, embed_dim=12, depths=[1], num_heads=[2], window_size=4),
    "restormer": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1]),
    "promptir": dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "adasam_restormer_woskip": dict(
        dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1]
    ),
}
# restores images, but only from DINOv2 features of a Hugging Face model ramir does not ship
NEEDS_OUTSIDE_WEIGHTS = {"restormer_rfr"}


def test_every_backbone_that_restores_images_is_covered():
    assert set(list_models(restoring=True)) == set(TINY) | NEEDS_OUTSIDE_WEIGHTS


def _step(name: str, device: str, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and flattened parameter gradients of one masked-L1-like step."""
    torch.manual_seed(0)
    model = build_model(name, **TINY[name]).to(device).train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, model.in_chans, 16, 16, generator=g).to(device)
    y = torch.rand(2, model.out_chans, 16, 16, generator=g).to(device)
    mask = (torch.rand(1, 16, 16, generator=g) < 0.5).float().to(device)
    model.eval()  # no dropout or stochastic depth: the two precisions see one network
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = model(x, mask)
    (out.float() - y).abs().mean().backward()
    grads = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
    return out.detach().float().cpu(), grads.cpu()


def _check(name: str, device: str) -> None:
    out16, g16 = _step(name, device, torch.bfloat16)
    out32, g32 = _step(name, device, None)
    assert torch.isfinite(out16).all() and torch.isfinite(g16).all()
    assert torch.linalg.norm(out16 - out32) / torch.linalg.norm(out32) < 0.05
    cos = torch.nn.functional.cosine_similarity(g16, g32, dim=0)
    assert cos > 0.98, f"bf16 gradients point elsewhere (cosine {cos:.3f})"


@pytest.mark.parametrize("name", sorted(TINY))
def test_bf16_forward_and_backward_on_the_cpu(name):
    _check(name, "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(TINY))
def test_bf16_forward_and_backward_on_cuda(name):
    _check(name, "cuda")

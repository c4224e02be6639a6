import math

import pytest
import torch

from ramir.masking import apply_mask, random_mask


@pytest.mark.parametrize("h,w,ratio", [(64, 64, 0.5), (37, 29, 0.5), (16, 16, 0.75), (5, 7, 0.3)])
def test_exact_hidden_count(h, w, ratio):
    m = random_mask(h, w, ratio=ratio, generator=torch.Generator().manual_seed(0))
    assert m.shape == (1, h, w)
    assert int(m.sum()) == math.ceil(ratio * h * w)
    assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_patch_granularity_hides_whole_patches():
    m = random_mask(32, 32, ratio=0.5, patch_size=8, generator=torch.Generator().manual_seed(1))
    assert m.shape == (1, 32, 32)
    blocks = m[0].reshape(4, 8, 4, 8).permute(0, 2, 1, 3).reshape(16, 64)
    # every 8x8 block is all hidden or all visible, and exactly half the blocks are hidden
    assert torch.all((blocks.sum(1) == 0) | (blocks.sum(1) == 64))
    assert int((blocks.sum(1) == 64).sum()) == 8


def test_patch_grid_crops_to_odd_sizes():
    m = random_mask(30, 21, ratio=0.5, patch_size=4, generator=torch.Generator().manual_seed(2))
    assert m.shape == (1, 30, 21)


def test_shared_vs_per_sample():
    g = torch.Generator().manual_seed(3)
    shared = random_mask(16, 16, batch_size=4, shared=True, generator=g)
    per = random_mask(16, 16, batch_size=4, shared=False, generator=g)
    assert shared.shape == (1, 16, 16)
    assert per.shape == (4, 16, 16)
    assert not torch.equal(per[0], per[1])
    assert torch.all(per.sum((1, 2)) == 128)


def test_generator_makes_masks_reproducible():
    a = random_mask(20, 20, generator=torch.Generator().manual_seed(7))
    b = random_mask(20, 20, generator=torch.Generator().manual_seed(7))
    c = random_mask(20, 20, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [1.0, 1.2, -0.1])
def test_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        random_mask(8, 8, ratio=ratio)


def test_apply_mask_zero_and_tensor_token():
    x = torch.rand(2, 3, 8, 8) + 1.0
    m = random_mask(8, 8, generator=torch.Generator().manual_seed(0))
    y = apply_mask(x, m)
    hidden = m[0].bool()
    assert torch.all(y[:, :, hidden] == 0)
    assert torch.equal(y[:, :, ~hidden], x[:, :, ~hidden])
    token = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    z = apply_mask(x, m, token)
    assert torch.all(z[:, 1, hidden] == 2.0)


def test_apply_mask_shape_errors():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="does not match the image size"):
        apply_mask(x, torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="must be 1 or the image batch"):
        apply_mask(x, torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        apply_mask(x, torch.zeros(8, 8))

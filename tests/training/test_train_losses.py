import pytest
import torch

from ramir.masking import random_mask
from ramir.training.losses import l1_loss, masked_l1_loss, psnr_loss


def test_masked_l1_matches_the_design_formula():
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    mask = random_mask(8, 8, ratio=0.5, batch_size=2, shared=False, generator=g)
    hidden = mask.unsqueeze(1).expand_as(pred).bool()
    expected = (pred - gt).abs()[hidden].sum() / (mask.sum() * 3)
    assert torch.allclose(masked_l1_loss(pred, gt, mask), expected)


def test_shared_mask_counts_hidden_pixels_once_per_image():
    g = torch.Generator().manual_seed(1)
    pred, gt = torch.randn(3, 3, 6, 6, generator=g), torch.randn(3, 3, 6, 6, generator=g)
    shared = random_mask(6, 6, ratio=0.5, generator=g)  # (1, H, W)
    per_sample = shared.expand(3, -1, -1)
    assert torch.allclose(masked_l1_loss(pred, gt, shared), masked_l1_loss(pred, gt, per_sample))
    # 18 hidden pixels x 3 images x 3 channels
    diff = (pred - gt).abs() * shared.unsqueeze(1)
    assert torch.allclose(masked_l1_loss(pred, gt, shared), diff.sum() / (18 * 3 * 3))


def test_masked_loss_ignores_visible_pixels():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    gt = torch.randn(2, 3, 8, 8, generator=g)
    mask = random_mask(8, 8, ratio=0.5, generator=g)
    masked_l1_loss(pred, gt, mask).backward()
    visible = (mask == 0).unsqueeze(1).expand_as(pred)
    assert pred.grad is not None
    assert torch.all(pred.grad[visible] == 0)
    assert torch.all(pred.grad[~visible] != 0)
    # changing visible predictions does not change the loss
    with torch.no_grad():
        moved = pred + 5.0 * visible
    assert torch.allclose(masked_l1_loss(moved, gt, mask), masked_l1_loss(pred.detach(), gt, mask))


def test_l1_is_the_mean_absolute_error_and_shapes_are_checked():
    pred, gt = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    assert l1_loss(pred, gt).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        l1_loss(pred, torch.ones(1, 3, 2, 3))
    with pytest.raises(ValueError, match="mask"):
        masked_l1_loss(pred, gt, torch.ones(1, 3, 3))


def test_psnr_loss_is_minus_the_mean_psnr_of_the_images():
    g = torch.Generator().manual_seed(3)
    gt = torch.rand(2, 3, 16, 16, generator=g)
    pred = gt + 0.1 * torch.randn(2, 3, 16, 16, generator=g)
    pred[1] = gt[1] + 0.01 * torch.randn(3, 16, 16, generator=g)
    mse = ((pred - gt) ** 2).mean(dim=(1, 2, 3))
    psnr = -10 * torch.log10(mse)  # peak 1
    assert torch.allclose(psnr_loss(pred, gt, eps=1e-12), -psnr.mean(), atol=1e-4)


def test_psnr_loss_pulls_every_image_with_the_same_weight_per_decibel():
    """Under L1 an image with 100x smaller errors gets a 100x smaller gradient; under the
    PSNR loss, the same gradient relative to its error (the property the fine-tuning of
    small-error tasks such as JPEG relies on)."""
    g = torch.Generator().manual_seed(4)
    gt = torch.rand(2, 3, 8, 8, generator=g)
    e = torch.randn(3, 8, 8, generator=g)
    pred = torch.stack([gt[0] + 0.1 * e, gt[1] + 0.001 * e]).requires_grad_(True)
    psnr_loss(pred, gt, eps=1e-12).backward()
    grad = pred.grad
    # relative to each image's error, the pull is the same
    assert torch.allclose(grad[0] * 0.1, grad[1] * 0.001, rtol=1e-2)
    pred.grad = None
    l1_loss(pred, gt).backward()
    assert torch.allclose(pred.grad[0], pred.grad[1])  # L1: the same sign-pull, 100x weaker


def test_psnr_loss_checks_its_inputs():
    with pytest.raises(ValueError, match="same shape"):
        psnr_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="eps"):
        psnr_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), eps=0.0)
    assert torch.isfinite(psnr_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)))

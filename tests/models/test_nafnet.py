"""NAFNet backbone, plus the input checks every backbone shares (RestorationModel)."""

from __future__ import annotations

import pytest
import torch
from skimage import data as skdata

from ramir.masking import apply_mask
from ramir.models import build_model, count_parameters
from ramir.models.nafnet import NAFNet


@pytest.fixture(scope="module")
def small(reference_weights) -> NAFNet:
    """A 2-level NAFNet whose blocks are all active (beta/gamma are not zero)."""
    return reference_weights(build_model("nafnet_tiny")).eval()


def test_defaults_are_small_and_pad_to_sixteen():
    model = build_model("nafnet")
    assert count_parameters(model) == 1_137_203
    assert model.input_multiple == 16 and model.min_size == 9
    assert model.normalization.name == "imagenet"
    assert len(model.encoders) == len(model.decoders) == 4


def test_input_multiple_follows_the_number_of_levels():
    assert build_model("nafnet", enc_blk_nums=[1, 1], dec_blk_nums=[2, 2]).input_multiple == 4
    assert build_model("nafnet", enc_blk_nums=[], dec_blk_nums=[]).input_multiple == 1


@pytest.mark.parametrize("size", [(9, 9), (17, 23), (33, 40), (64, 64)])
def test_odd_sizes_keep_their_shape(size):
    model = build_model("nafnet").eval()
    lq = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(lq)
    assert out.shape == lq.shape
    assert torch.isfinite(out).all()


def test_fresh_model_is_identity_plus_a_conv_path():
    # beta/gamma start at zero (megvii's init): every NAFBlock is the identity, so the
    # output depends only on intro, downs, ups and ending; with those zero it is the input.
    model = build_model("nafnet").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("intro", "ending")):
                p.zero_()
        lq = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(model(lq), lq, rtol=0, atol=0)


def test_masked_forward_depends_only_on_visible_pixels(small):
    gen = torch.Generator().manual_seed(1)
    lq = torch.randn(2, 3, 21, 18, generator=gen)
    mask = (torch.rand(2, 21, 18, generator=gen) < 0.5).float()  # one mask per sample
    noise = torch.randn(lq.shape, generator=gen) * 10
    changed = torch.where(mask.bool()[:, None], noise, lq)
    with torch.no_grad():
        out = small(lq, mask)
        out_changed = small(changed, mask)
        out_token = small(apply_mask(lq, mask))  # hidden = zeros in normalised space
        out_plain = small(lq)
    torch.testing.assert_close(out, out_changed, rtol=0, atol=0)
    torch.testing.assert_close(out, out_token, rtol=0, atol=0)
    assert not torch.allclose(out, out_plain)


def test_batch_items_are_independent(small):
    lq = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(small(lq)[1:2], small(lq[1:2]), rtol=0, atol=1e-5)


def test_adam_steps_reduce_l1_on_a_real_image():
    torch.manual_seed(0)  # NAFNet's default init of the convolutions
    gen = torch.Generator().manual_seed(0)
    crop = skdata.astronaut()[100:132, 200:232]  # uint8 (32, 32, 3)
    gt01 = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0
    lq01 = (gt01 + 0.1 * torch.randn(gt01.shape, generator=gen)).clamp(0, 1)
    model = build_model("nafnet_tiny")
    norm = model.normalization
    lq, gt = norm.normalize(lq01), norm.normalize(gt01)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        loss = (model(lq) - gt).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_parameter_names_are_stable_and_follow_megvii():
    model = build_model("nafnet", width=4, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])
    block = [
        "beta", "gamma", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
        "conv3.weight", "conv3.bias", "sca.1.weight", "sca.1.bias", "conv4.weight",
        "conv4.bias", "conv5.weight", "conv5.bias", "norm1.weight", "norm1.bias",
        "norm2.weight", "norm2.bias",
    ]  # fmt: skip
    expected = (
        ["intro.weight", "intro.bias", "ending.weight", "ending.bias"]
        + [f"encoders.0.0.{n}" for n in block]
        + [f"decoders.0.0.{n}" for n in block]
        + [f"middle_blks.0.{n}" for n in block]
        + ["ups.0.0.weight", "downs.0.weight", "downs.0.bias"]
    )
    assert [n for n, _ in model.named_parameters()] == expected
    shapes = dict((n, tuple(p.shape)) for n, p in model.named_parameters())
    assert shapes["downs.0.weight"] == (8, 4, 2, 2)
    assert shapes["ups.0.0.weight"] == (16, 8, 1, 1)
    assert shapes["middle_blks.0.sca.1.weight"] == (8, 8, 1, 1)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        NAFNet(enc_blk_nums=[1, 1], dec_blk_nums=[1])
    with pytest.raises(ValueError, match="unknown normalization"):
        NAFNet(normalization="zscore")
    assert build_model("nafnet_tiny", normalization="none").normalization.name == "none"


# -- bad input: checks every backbone inherits from RestorationModel ------------------


@pytest.mark.parametrize(
    "lq, message",
    [
        (torch.zeros(3, 16, 16), "4-D"),
        (torch.zeros(1, 1, 3, 16, 16), "4-D"),
        (torch.zeros(1, 1, 16, 16), "3 channels"),
        (torch.zeros(1, 4, 16, 16), "3 channels"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.int64), "floating-point"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.full((1, 3, 16, 16), float("inf")), "NaN or Inf"),
        (torch.zeros(1, 3, 2, 16), "minimum"),
    ],
)
def test_bad_inputs_raise_clear_errors(small, lq, message):
    with pytest.raises((ValueError, TypeError), match=message):
        small(lq)


def test_smaller_than_minimum_raises_for_default_nafnet():
    model = build_model("nafnet")
    with pytest.raises(ValueError, match="minimum 9x9"):
        model(torch.zeros(1, 3, 8, 40))


def test_bad_mask_raises(small):
    lq = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="does not match"):
        small(lq, torch.zeros(1, 16, 15))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        small(lq, torch.zeros(16, 16))


def test_non_tensor_input_raises(small):
    with pytest.raises(TypeError, match="torch.Tensor"):
        small([[0.0]])


def _active(model: NAFNet, seed: int) -> NAFNet:
    """Every parameter random (beta/gamma too, so that every block acts)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


@pytest.mark.parametrize(
    "kwargs, factor",
    [
        ({}, 2),  # the shipped layout's kind: 2 levels of the tiny variant, ImageNet, reflect
        ({"normalization": "none", "padding": "zeros"}, 3),  # megvii's conventions
        ({"local_stats": 16}, 2),  # NAFNetLocal's test-time pooling
    ],
)
def test_widen_keeps_the_output_and_multiplies_the_width(kwargs, factor):
    from ramir.models.nafnet import widen

    narrow = _active(build_model("nafnet_tiny", **kwargs), seed=3)
    wide = widen(narrow, factor, seed=1)
    assert wide.intro.weight.shape[0] == factor * narrow.intro.weight.shape[0]
    assert wide.arch_kwargs == {**narrow.arch_kwargs, "width": factor * 8}
    # a 1x1 conv grows with the square of the width: about factor**2 more parameters
    ratio = count_parameters(wide) / count_parameters(narrow)
    assert factor**2 * 0.8 < ratio < factor**2 * 1.05
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert (a - x).abs().mean() > 0.05  # the narrow net does change its input
    torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)


def test_widen_breaks_the_symmetry_of_the_copies_only_with_a_split():
    """Equal shares keep both copies of a channel identical under gradient descent (they
    get the same gradient); random shares make them learn different features."""
    from ramir.models.nafnet import widen

    narrow = _active(build_model("nafnet_tiny"), seed=4)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))

    def copy_gap(split: float) -> float:
        wide = widen(narrow, 2, seed=0, split=split).train()
        (wide(x) - target).abs().mean().backward()
        g = wide.intro.weight.grad  # (16, 3, 3, 3): rows c and c + 8 are copies
        return float((g[:8] - g[8:]).abs().max() / g.abs().max())

    assert copy_gap(0.0) < 1e-5
    assert copy_gap(0.5) > 1e-2
    # the shares are seeded
    a = widen(narrow, 2, seed=5).state_dict()["encoders.0.0.conv1.weight"]
    b = widen(narrow, 2, seed=5).state_dict()["encoders.0.0.conv1.weight"]
    c = widen(narrow, 2, seed=6).state_dict()["encoders.0.0.conv1.weight"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_widen_refuses_bad_arguments():
    from ramir.models.nafnet import widen

    narrow = build_model("nafnet_tiny")
    with pytest.raises(ValueError, match="integer >= 2"):
        widen(narrow, 1)
    with pytest.raises(ValueError, match="split"):
        widen(narrow, 2, split=1.0)
    with pytest.raises(ValueError, match="needs a NAFNet"):
        widen(build_model("ram_swinir_tiny"), 2)

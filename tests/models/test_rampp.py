"""RAM++'s two networks by their behaviour: what the AdaSAM generator hides and how, what
the pretraining network sees of a masked input, the losses' edge cases, files."""

from __future__ import annotations

import doctest

import pytest
import torch

import ramir.rampp
from ramir import load_model
from ramir.checkpoint import save_model
from ramir.models import build_model
from ramir.rampp import pretrain_forward, pretrain_losses

GEN = {"img_size": 16, "patch_size": 4, "embed_dim": 16}
NET = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1]}


def _images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def gen():
    torch.manual_seed(0)
    return build_model("adasam", **GEN).eval()


def test_the_module_example_runs():
    assert doctest.testmod(ramir.rampp).failed == 0


def test_mask_hides_the_given_ratio_per_image_without_gradient(gen):
    x = _images(3, 16, 16)
    draw = gen(x, generator=torch.Generator().manual_seed(0))
    assert draw.mask.shape == (3, 1, 16, 16) and not draw.mask.requires_grad
    assert set(draw.mask.unique().tolist()) == {0.0, 1.0}
    assert draw.mask.sum((1, 2, 3)).tolist() == [128.0] * 3  # half of 256 pixels
    assert not torch.equal(draw.mask[0], draw.mask[1])  # one draw per image
    assert draw.pixel_probs.requires_grad and draw.token_probs.shape == (3, 16)
    # every pixel carries its token's probability; per image they sum to patch_size^2
    tokens = draw.pixel_probs[:, 0, ::4, ::4].reshape(3, 16)
    torch.testing.assert_close(tokens, draw.token_probs)
    torch.testing.assert_close(draw.pixel_probs.sum((1, 2, 3)), torch.full((3,), 16.0))


def test_explicit_generator_decides_the_mask(gen):
    x = _images(2, 16, 16)
    a = gen(x, generator=torch.Generator().manual_seed(5)).mask
    b = gen(x, generator=torch.Generator().manual_seed(5)).mask
    c = gen(x, generator=torch.Generator().manual_seed(6)).mask
    torch.manual_seed(123)
    noise = torch.rand(1000)  # the global RNG moves; a seeded generator's draw does not
    d = gen(x, generator=torch.Generator().manual_seed(5)).mask
    assert torch.equal(a, b) and torch.equal(a, d) and not torch.equal(a, c)
    assert noise.numel() == 1000


def test_likely_tokens_are_hidden_more_often(gen):
    """The scorer's logits decide: make token 0 far likelier than the rest (by its
    position entry along the scorer's weight) and its pixels are hidden first."""
    with torch.no_grad():
        w = gen.get_token_probs[1].weight[0]
        gen.pos_embed_probs[0, 0] += 20 * w / w.norm()
    x = _images(1, 16, 16)
    g = torch.Generator().manual_seed(0)
    hidden = torch.stack([gen(x, generator=g).mask[0, 0] for _ in range(20)]).mean(0)
    assert gen.token_probs(x)[0, 0] > 0.5
    assert hidden[:4, :4].min() == 1.0  # token 0's 16 pixels: hidden in every draw
    assert hidden[4:, 4:].mean() < 0.6


def test_other_sizes_are_refused_with_the_reason(gen):
    with pytest.raises(ValueError, match="constructor's size only: 16x16.*got 24x24"):
        gen(_images(1, 24, 24))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        build_model("adasam", img_size=18, patch_size=4, embed_dim=16)
    with pytest.raises(ValueError, match="divisible by 8 heads"):
        build_model("adasam", img_size=16, patch_size=4, embed_dim=12)
    assert gen.restores_images is False  # for commands that restore images to refuse it


def test_training_mode_dropout_changes_the_probabilities(gen):
    x = _images(1, 16, 16)
    with torch.no_grad():
        evals = [gen.token_probs(x) for _ in range(2)]
        gen.train()
        trains = [gen.token_probs(x) for _ in range(2)]
    assert torch.equal(evals[0], evals[1]) and not torch.equal(trains[0], trains[1])


def test_pretraining_network_has_no_residual_and_ignores_hidden_pixels():
    torch.manual_seed(0)
    net = build_model("adasam_restormer_woskip", **NET).eval()
    x = _images(2, 19, 23)  # odd: reflect-padded to 32 x 32 inside, cropped back
    mask = (torch.rand(2, 1, 19, 23, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    changed = torch.where(mask.bool(), x + 5.0, x)  # other values under the mask
    with torch.no_grad():
        a, b = net(x, mask), net(changed, mask)
        torch.testing.assert_close(a, b)  # the network never sees hidden pixels
        assert a.shape == x.shape
        torch.nn.init.zeros_(net.output.weight)
        assert net(x).abs().max() == 0  # no global residual: a zero output conv gives 0
    restormer = build_model("restormer", **NET, normalization="imagenet").eval()
    with torch.no_grad():
        torch.nn.init.zeros_(restormer.output.weight)
        torch.testing.assert_close(restormer(x), x)  # Restormer's residual, for contrast


def test_pretraining_network_refuses_bad_inputs_with_reasons():
    net = build_model("adasam_restormer_woskip", **NET).eval()
    x = _images(1, 16, 16)
    with pytest.raises(ValueError, match="minimum 9x9"):
        net(_images(1, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(x, torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="mask_tokens without a mask"):
        net(x, None, torch.zeros_like(x))
    assert net.normalization.name == "imagenet"


def test_losses_edge_cases():
    pred = _images(1, 8, 8)
    gt = _images(1, 8, 8, seed=1)
    none = torch.zeros(1, 1, 8, 8)
    l_pix, l_prob = pretrain_losses(pred, gt, none, torch.full((1, 1, 8, 8), 0.1))
    assert l_pix.item() == 0.0 and l_prob.item() == 0.0  # nothing hidden: 0, not NaN
    with pytest.raises(ValueError, match="mask must be"):
        pretrain_losses(pred, gt, torch.zeros(1, 8, 9), torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        pretrain_losses(pred, gt[..., :7], none, none)
    # a badly restored hidden pixel: raising its probability lowers the probability loss
    full = torch.ones(1, 1, 8, 8)
    low, high = torch.full((1, 1, 8, 8), 0.01), torch.full((1, 1, 8, 8), 0.02)
    assert pretrain_losses(pred, gt, full, high)[1] < pretrain_losses(pred, gt, full, low)[1]


def test_pretrain_forward_sends_each_loss_to_its_own_network():
    torch.manual_seed(0)
    gen = build_model("adasam", **GEN)
    net = build_model("adasam_restormer_woskip", **NET)
    lq, gt = _images(2, 16, 16), _images(2, 16, 16, seed=1)
    out = pretrain_forward(net, gen, lq, gt, rng=torch.Generator().manual_seed(0))
    out.l_pix.backward(retain_graph=True)
    assert all(p.grad is None for p in gen.parameters())
    assert net.output.weight.grad is not None
    net.zero_grad()
    out.l_prob.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in net.parameters())
    assert gen.get_token_probs[1].weight.grad.abs().max() > 0


@pytest.mark.parametrize("learnable", [True, False])
def test_ramir_files_of_both_networks_round_trip(tmp_path, learnable):
    torch.manual_seed(0)
    gen = build_model("adasam", **GEN, use_learnable_pos_emb=learnable)
    net = build_model("adasam_restormer_woskip", **NET)
    for model, name in ((gen, "gen.safetensors"), (net, "net.safetensors")):
        loaded = load_model(save_model(model, tmp_path / name))
        assert loaded.arch_name == model.arch_name
        for (k, v), (k2, v2) in zip(
            model.state_dict().items(), loaded.state_dict().items(), strict=True
        ):
            assert k == k2 and torch.equal(v, v2), k
    assert ("pos_embed_probs" in dict(gen.named_parameters())) == learnable


@pytest.mark.parametrize("command", ["restore", "serve", "export"])
def test_commands_that_restore_refuse_the_mask_generator(tmp_path, command, capsys):
    """The AdaSAM generator loads (``ramir info`` describes it) but restores nothing:
    restore, serve and export say so in one line instead of failing inside the model."""
    import numpy as np
    from PIL import Image

    from ramir.cli import main

    torch.manual_seed(0)
    path = save_model(build_model("adasam", img_size=32, patch_size=8, embed_dim=16),
                      tmp_path / "gen.safetensors")  # fmt: skip
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    argv = {
        "restore": ["restore", str(photo), "--model", str(path), "-o", str(tmp_path / "o")],
        "serve": ["serve", "--model", str(path), "--port", "0", "--device", "cpu"],
        "export": ["export", "--model", str(path), "-o", str(tmp_path / "m.onnx")],
    }[command]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "does not restore images" in err and "Traceback" not in err

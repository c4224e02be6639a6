"""RAM-SwinIR: official parameter layout, reference outputs, fast vs plain attention,
masking, loading official state dicts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from ramir.masking import apply_mask
from ramir.models import build_model, count_parameters, model_kwargs
from ramir.models.ram_swinir import RAMSwinIR
from ramir.models.swin import WindowAttention

ATOL = 1e-4  # against the official outputs
FAST_ATOL = 1e-5  # fast vs plain attention


def _tiny_args(manifest: dict) -> dict:
    return dict(manifest["ram_swinir_tiny"]["constructor_args"])


@pytest.fixture(scope="module")
def tiny(backbone_manifest, reference_weights) -> RAMSwinIR:
    """The manifest's tiny RAM-SwinIR with the reference weights, in eval mode."""
    model = build_model("ram_swinir", **_tiny_args(backbone_manifest))
    return reference_weights(model).eval()


@pytest.fixture(params=["fast", "plain"])
def tiny_impl(tiny, request) -> Iterator[RAMSwinIR]:
    """``tiny`` with attention ``request.param``; back to ``"fast"`` after the test, also
    when it fails (``tiny`` is shared by the module)."""
    tiny.set_attention_impl(request.param)
    try:
        yield tiny
    finally:
        tiny.set_attention_impl("fast")


@pytest.fixture(scope="module")
def full() -> RAMSwinIR:
    """The full-size model with default arguments (construction only)."""
    return build_model("ram_swinir")


def _small(**kwargs) -> RAMSwinIR:
    """A small random model (two RSTBs of two blocks, window 4)."""
    args = dict(
        img_size=16, embed_dim=12, depths=[2, 2], num_heads=[2, 3], window_size=4, mlp_ratio=2
    )
    args.update(kwargs)
    torch.manual_seed(0)
    return build_model("ram_swinir", **args)


# -- layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["ram_swinir_tiny", "ram_swinir"])
def test_parameter_names_shapes_and_order_equal_official(backbone_manifest, full, key):
    entry = backbone_manifest[key]
    if key == "ram_swinir":
        # The paper's full size is our default: the official arguments equal our defaults.
        defaults = model_kwargs("ram_swinir")
        for name, value in entry["constructor_args"].items():
            ours = defaults[name]
            assert (list(ours) if isinstance(ours, tuple) else ours) == value, name
        model = full
    else:
        model = build_model("ram_swinir", **entry["constructor_args"])
    ours = [(n, list(p.shape)) for n, p in model.named_parameters()]
    official = [(s["name"], s["shape"]) for s in entry["state_dict"] if s["kind"] == "parameter"]
    assert ours == official
    assert count_parameters(model) == entry["n_params"]
    # Buffers: relative_position_index is rebuilt (same shape, not saved); attn_mask is
    # not kept at all (masks are computed per input size).
    buffers = {n: list(b.shape) for n, b in model.named_buffers()}
    for s in entry["state_dict"]:
        if s["kind"] == "buffer" and s["name"].endswith("relative_position_index"):
            assert buffers.pop(s["name"]) == s["shape"]
    assert buffers == {}
    assert list(model.state_dict()) == [n for n, _ in official]


def test_full_size_defaults_have_paper_parameter_count(full):
    model = full
    assert count_parameters(model) == 11_512_131
    assert model.input_multiple == 8 and model.min_size == 8
    assert model.normalization.name == "imagenet"
    assert model.conv_first.kernel_size == (1, 1)
    assert len(model.layers) == 6 and all(len(r.residual_group.blocks) == 6 for r in model.layers)
    shifts = [b.shift_size for b in model.layers[0].residual_group.blocks]
    assert shifts == [0, 4, 0, 4, 0, 4]


def test_relative_position_index_equals_swin_definition():
    attn = WindowAttention(dim=4, window_size=3, num_heads=2)
    idx = attn.relative_position_index
    coords = [(i, j) for i in range(3) for j in range(3)]
    for a, (i1, j1) in enumerate(coords):
        for b, (i2, j2) in enumerate(coords):
            assert idx[a, b] == (i1 - i2 + 2) * 5 + (j1 - j2 + 2)


def _official_state_dict(entry: dict, fill) -> dict[str, torch.Tensor]:
    sd = {}
    for s in entry["state_dict"]:
        if s["kind"] == "parameter":
            sd[s["name"]] = fill(s["shape"])
        elif s["name"].endswith("relative_position_index"):
            sd[s["name"]] = torch.zeros(s["shape"], dtype=torch.long)
        else:  # attn_mask
            sd[s["name"]] = torch.full(s["shape"], -100.0)
    return sd


@pytest.mark.parametrize("wrapper", ["params", "params_ema"])
def test_full_size_official_state_dict_loads_without_missing_or_unexpected(
    backbone_manifest, full, wrapper
):
    entry = backbone_manifest["ram_swinir"]
    model = full
    gen = torch.Generator().manual_seed(0)
    sd = _official_state_dict(entry, lambda shape: torch.randn(shape, generator=gen))
    checkpoint = {wrapper: {"module." + k: v for k, v in sd.items()}}
    # What a BasicSR loader does: unwrap, strip the prefix, drop recomputed buffers.
    state = {k.removeprefix("module."): v for k, v in checkpoint[wrapper].items()}
    buffers = {s["name"] for s in entry["state_dict"] if s["kind"] == "buffer"}
    params_only = {k: v for k, v in state.items() if k not in buffers}
    result = model.load_state_dict(params_only, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, p in model.named_parameters():
        assert torch.equal(p, sd[name]), name
    # The buffers of an official dict may also be passed as they are: they are ignored
    # and the rebuilt index stays correct.
    result = model.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    attn = model.layers[0].residual_group.blocks[1].attn
    assert attn.relative_position_index.max() == 15 * 15 - 1


def test_small_img_size_shrinks_window_and_disables_shift_like_official():
    model = build_model("ram_swinir", img_size=6, embed_dim=8, depths=[2], num_heads=[2])
    blocks = model.layers[0].residual_group.blocks
    assert model.input_multiple == 6 and model.min_size == 6
    assert [b.shift_size for b in blocks] == [0, 0]
    assert blocks[0].attn.relative_position_bias_table.shape == (11 * 11, 2)


# -- official outputs -----------------------------------------------------------------------
@pytest.mark.parametrize("case", [0, 1])
def test_tiny_reproduces_official_outputs(tiny_impl, backbone_vectors, case):
    prefix = f"ram_swinir_tiny__case{case}__"
    lq = torch.from_numpy(backbone_vectors[prefix + "input"])
    with torch.no_grad():
        out = tiny_impl(lq)
    assert out.shape == lq.shape  # case 1: a batch of 2 at 37x29, padded and cropped
    np.testing.assert_allclose(out.numpy(), backbone_vectors[prefix + "output"], atol=ATOL, rtol=0)


def test_tiny_reproduces_official_masked_output(tiny_impl, backbone_vectors):
    prefix = "ram_swinir_tiny__case0__"
    lq = torch.from_numpy(backbone_vectors[prefix + "input"])
    mask = torch.from_numpy(backbone_vectors[prefix + "mask"])[None]  # (1, H, W), 1 = hidden
    assert 0 < mask.sum() < mask.numel()
    with torch.no_grad():
        out = tiny_impl(lq, mask)
    np.testing.assert_allclose(
        out.numpy(), backbone_vectors[prefix + "masked_output"], atol=ATOL, rtol=0
    )


# -- fast vs plain --------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(4, 4), (8, 12), (13, 7), (20, 20)])
def test_fast_attention_equals_plain(size):
    model = _small().eval()
    lq = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    mask = (torch.rand(1, *size, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    with torch.no_grad():
        fast = [model(lq), model(lq, mask)]
        model.set_attention_impl("plain")
        plain = [model(lq), model(lq, mask)]
    for f, p in zip(fast, plain, strict=True):
        torch.testing.assert_close(f, p, rtol=0, atol=FAST_ATOL)


def test_fast_attention_gradients_equal_plain():
    model = _small(drop_path_rate=0.0).train()
    lq = torch.randn(2, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    grads = {}
    for impl in ("fast", "plain"):
        model.set_attention_impl(impl)
        model.zero_grad()
        model(lq).square().mean().backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["fast"].keys() == grads["plain"].keys()
    assert "mask_token" not in grads["fast"]  # the zero token does not use the parameter
    assert len(grads["fast"]) == len(list(model.parameters())) - 1
    for name, g in grads["plain"].items():
        torch.testing.assert_close(grads["fast"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_cached_bias_follows_parameter_updates():
    model = _small().eval()
    lq = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(lq)
        assert torch.equal(model(lq), before)  # cached bias, same numbers
        table = model.layers[0].residual_group.blocks[1].attn.relative_position_bias_table
        table.add_(torch.randn(table.shape, generator=torch.Generator().manual_seed(5)))
        after = model(lq)
        model.set_attention_impl("plain")
        plain = model(lq)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, plain, rtol=0, atol=FAST_ATOL)


def test_plans_cached_in_inference_mode_serve_autograd_later():
    model = _small().eval()
    for p in model.parameters():
        p.requires_grad_(False)  # as in attribution: input gradients only
    lq = torch.randn(1, 3, 12, 20, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        expected = model(lq)
    lq.requires_grad_(True)
    out = model(lq)
    out.sum().backward()
    assert lq.grad is not None and torch.isfinite(lq.grad).all()
    torch.testing.assert_close(out.detach(), expected, rtol=0, atol=FAST_ATOL)


def test_every_parametrised_module_runs_once_per_forward():
    model = _small().eval()
    calls: dict[str, int] = {}
    owners = {n.rpartition(".")[0] for n, _ in model.named_parameters()} - {""}
    for name, module in model.named_modules():
        if name in owners:
            module.register_forward_hook(
                lambda m, i, o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
            )
    with torch.no_grad():
        model(torch.randn(1, 3, 8, 12))
    assert calls == {name: 1 for name in owners}


def test_gradient_checkpointing_gives_the_same_gradients():
    lq = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    grads = []
    for flag in (False, True):
        model = _small(drop_path_rate=0.0, use_checkpoint=flag).train()
        model(lq).mean().backward()
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_float64_fast_equals_plain_closely():
    model = _small().double().eval()
    lq = torch.randn(1, 3, 12, 8, dtype=torch.float64)
    with torch.no_grad():
        fast = model(lq)
        plain = model.set_attention_impl("plain")(lq)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)


# -- masking --------------------------------------------------------------------------------
def test_zero_mask_token_is_default_and_hidden_pixels_do_not_matter(tiny):
    gen = torch.Generator().manual_seed(6)
    lq = torch.randn(2, 3, 19, 26, generator=gen)
    mask = (torch.rand(1, 19, 26, generator=gen) < 0.5).float()
    other = torch.where(mask.bool()[:, None], torch.randn(lq.shape, generator=gen), lq)
    assert tiny.mask_token_mode == "zero" and not tiny.mask_token.requires_grad
    with torch.no_grad():
        out = tiny(lq, mask)
        torch.testing.assert_close(tiny(other, mask), out, rtol=0, atol=0)
        torch.testing.assert_close(tiny(apply_mask(lq, mask)), out, rtol=0, atol=0)


def test_learnable_mask_token_is_used_tiled_and_trained():
    model = _small(mask_token="learnable").eval()  # img_size 16: token (1, 3, 16, 16)
    assert model.mask_token.requires_grad
    lq = torch.randn(1, 3, 20, 36)
    token = model.mask_token_for(lq)
    assert token.shape == (1, 3, 20, 36)
    torch.testing.assert_close(token[..., 16:20, 16:32], model.mask_token[..., :4, :])
    mask = torch.ones(1, 20, 36)
    out = model(lq, mask)
    with torch.no_grad():
        expected = model(token.detach().expand_as(lq).clone())
    torch.testing.assert_close(out, expected, rtol=0, atol=FAST_ATOL)
    out.mean().backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert model.extra_metadata()["mask_token"] == "learnable"


# -- errors ---------------------------------------------------------------------------------
def test_image_smaller_than_one_window_is_rejected(tiny):
    with pytest.raises(ValueError, match="minimum 8x8"):
        tiny(torch.zeros(1, 3, 7, 32))
    with torch.no_grad():
        assert tiny(torch.zeros(1, 3, 8, 9)).shape == (1, 3, 8, 9)


def test_bad_inputs_are_rejected(tiny):
    with pytest.raises(ValueError, match="4-D"):
        tiny(torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="3 channels"):
        tiny(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="NaN"):
        tiny(torch.full((1, 3, 16, 16), float("nan")))


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="patch_size=1"):
        RAMSwinIR(patch_size=2)
    with pytest.raises(ValueError, match="upscale"):
        RAMSwinIR(upscale=2)
    with pytest.raises(ValueError, match="upsampler"):
        RAMSwinIR(upsampler="pixelshuffle")
    with pytest.raises(ValueError, match="img_range"):
        RAMSwinIR(img_range=255.0)
    with pytest.raises(ValueError, match="mask_token"):
        RAMSwinIR(mask_token="random")
    with pytest.raises(ValueError, match="attn_impl"):
        RAMSwinIR(embed_dim=6, depths=[1], num_heads=[1], attn_impl="flash")
    with pytest.raises(ValueError, match="same length"):
        RAMSwinIR(depths=[2, 2], num_heads=[2])
    with pytest.raises(ValueError, match="divisible"):
        RAMSwinIR(embed_dim=10, depths=[1], num_heads=[3])
    with pytest.raises(ValueError, match="resi_connection"):
        RAMSwinIR(embed_dim=6, depths=[1], num_heads=[1], resi_connection="2conv")
    with pytest.raises(TypeError, match="valid arguments"):
        build_model("ram_swinir", dim=48)


def test_three_conv_residual_connection_runs():
    model = _small(resi_connection="3conv").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 8))
    assert out.shape == (1, 3, 8, 8) and torch.isfinite(out).all()


# -- full size ------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_size_forward_fast_equals_plain():
    model = build_model("ram_swinir").eval()
    lq = torch.randn(1, 3, 40, 33, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        fast = model(lq)
        plain = model.set_attention_impl("plain")(lq)
    assert fast.shape == lq.shape and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, plain, rtol=0, atol=FAST_ATOL)

"""RAM-PromptIR: official parameter layout, reference outputs, masking, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramir.masking import apply_mask
from ramir.models import build_model, count_parameters
from ramir.models.ram_promptir import RAMPromptIR

ATOL = 1e-4


@pytest.fixture(scope="module")
def tiny(backbone_manifest, reference_weights) -> RAMPromptIR:
    """The manifest's tiny RAM-PromptIR with the reference weights, in eval mode."""
    model = build_model(
        "ram_promptir", **backbone_manifest["ram_promptir_tiny"]["constructor_args"]
    )
    return reference_weights(model).eval()


def _manifest_params(entry: dict) -> list[tuple[str, list[int]]]:
    return [(s["name"], s["shape"]) for s in entry["state_dict"] if s["kind"] == "parameter"]


@pytest.mark.parametrize("key", ["ram_promptir_tiny", "ram_promptir"])
def test_parameter_names_shapes_and_order_equal_official(backbone_manifest, key):
    entry = backbone_manifest[key]
    model = build_model("ram_promptir", **entry["constructor_args"])
    ours = [(n, list(p.shape)) for n, p in model.named_parameters()]
    assert ours == _manifest_params(entry)
    assert count_parameters(model) == entry["n_params"]
    assert list(model.state_dict()) == [s["name"] for s in entry["state_dict"]]


def test_full_size_defaults_have_paper_parameter_count():
    model = build_model("ram_promptir")
    assert count_parameters(model) == 35_376_967
    assert model.input_multiple == 16
    assert model.normalization.name == "imagenet"


@pytest.mark.parametrize("case", [0, 1])
def test_tiny_reproduces_official_outputs(tiny, backbone_vectors, case):
    prefix = f"ram_promptir_tiny__case{case}__"
    lq = torch.from_numpy(backbone_vectors[prefix + "input"])
    expected = backbone_vectors[prefix + "output"]
    with torch.no_grad():
        out = tiny(lq)
    assert out.shape == lq.shape  # case 1 is an odd size (45x38): padded and cropped back
    np.testing.assert_allclose(out.numpy(), expected, atol=ATOL, rtol=0)


def test_tiny_reproduces_official_masked_output(tiny, backbone_vectors):
    prefix = "ram_promptir_tiny__case0__"
    lq = torch.from_numpy(backbone_vectors[prefix + "input"])
    mask = torch.from_numpy(backbone_vectors[prefix + "mask"])[None]  # (1, H, W), 1 = hidden
    assert 0 < mask.sum() < mask.numel()
    with torch.no_grad():
        out = tiny(lq, mask)
    np.testing.assert_allclose(
        out.numpy(), backbone_vectors[prefix + "masked_output"], atol=ATOL, rtol=0
    )


def test_masked_forward_ignores_hidden_pixels_and_adds_masked_input(tiny):
    gen = torch.Generator().manual_seed(0)
    lq = torch.randn(2, 3, 20, 27, generator=gen)
    mask = (torch.rand(1, 20, 27, generator=gen) < 0.5).float()
    other = torch.where(mask.bool()[:, None], torch.randn(lq.shape, generator=gen), lq)
    with torch.no_grad():
        out = tiny(lq, mask)
        out_other = tiny(other, mask)
        out_zeroed = tiny(apply_mask(lq, mask))
    torch.testing.assert_close(out, out_other, rtol=0, atol=0)
    torch.testing.assert_close(out, out_zeroed, rtol=0, atol=0)


def test_batch_items_are_independent(tiny):
    lq = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        both = tiny(lq)
        first = tiny(lq[:1])
    torch.testing.assert_close(both[:1], first, rtol=0, atol=1e-5)


def test_backward_reaches_every_parameter(backbone_manifest):
    model = build_model(
        "ram_promptir", **backbone_manifest["ram_promptir_tiny"]["constructor_args"]
    )
    lq = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    model(lq).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_full_size_prefixed_state_dict_loads_without_missing_or_unexpected(backbone_manifest):
    entry = backbone_manifest["ram_promptir"]
    model = build_model("ram_promptir", **entry["constructor_args"])
    checkpoint = {
        "module." + s["name"]: torch.full(s["shape"], 0.5 if s["kind"] == "parameter" else 0.0)
        for s in entry["state_dict"]
    }
    stripped = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    result = model.load_state_dict(stripped, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert torch.all(model.output.weight == 0.5)


def test_decoder_false_is_rejected_with_a_reason():
    with pytest.raises(ValueError, match="decoder=True"):
        RAMPromptIR(decoder=False)


def test_bad_constructor_arguments_are_rejected():
    with pytest.raises(ValueError, match="4 entries"):
        RAMPromptIR(num_blocks=[1, 1, 1])
    with pytest.raises(ValueError, match="LayerNorm_type"):
        RAMPromptIR(LayerNorm_type="Batch")
    with pytest.raises(TypeError, match="valid arguments"):
        build_model("ram_promptir", embed_dim=48)


def test_image_smaller_than_minimum_is_rejected(tiny):
    with pytest.raises(ValueError, match="minimum"):
        tiny(torch.zeros(1, 3, 8, 32))


def test_bias_free_layer_norm_variant_runs():
    model = RAMPromptIR(
        dim=48, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, LayerNorm_type="BiasFree"
    ).eval()
    assert not any(n.endswith("norm1.body.bias") for n, _ in model.named_parameters())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 16, 16))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


@pytest.mark.slow
def test_full_size_forward_shape():
    model = build_model("ram_promptir").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 40, 33))
    assert out.shape == (1, 3, 40, 33) and torch.isfinite(out).all()

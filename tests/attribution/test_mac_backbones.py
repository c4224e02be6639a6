"""MAC on the real (tiny) backbones: batched == reference way, chunk independence."""

from __future__ import annotations

import pytest
import torch

from ramir.attribution import list_layers, mask_attribution_conductance, random_orders
from ramir.attribution.reference import mac_reference
from ramir.models import build_model


def _build(name: str, **kwargs) -> torch.nn.Module:
    try:
        return build_model(name, **kwargs)
    except NotImplementedError:  # pragma: no cover - while a backbone is being written
        pytest.skip(f"{name} is not implemented yet")


def _rel(a: dict[str, float], b: dict[str, float]) -> float:
    assert list(a) == list(b)
    return max(abs(a[k] - b[k]) / abs(b[k]) for k in b if b[k] != 0)


def _check(model: torch.nn.Module, size: int, steps: int) -> None:
    lq = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    order = random_orders(2, size, size, generator=torch.Generator().manual_seed(1))
    ref = mac_reference(model, lq, steps=steps, order=order)
    for chunk in (1, 3):
        got = mask_attribution_conductance(model, lq, steps=steps, order=order, chunk=chunk)
        assert _rel(got, ref) < 1e-5, chunk
    assert sum(v > 0 for v in ref.values()) == len(ref)


@pytest.mark.parametrize("attn_impl", ["fast", "plain"])
def test_ram_swinir_tiny(reference_weights, attn_impl: str) -> None:
    model = _build("ram_swinir_tiny")
    reference_weights(model)
    model.set_attention_impl(attn_impl)
    assert "mask_token" not in list_layers(model)  # root-owned: not a layer
    _check(model, 16, 5)
    assert model.attn_impl == attn_impl


def test_nafnet_tiny() -> None:
    torch.manual_seed(0)
    model = build_model("nafnet_tiny")
    with torch.no_grad():  # NAFNet zero-inits its residual scales; make every layer live
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.5)
    _check(model, 16, 5)


@pytest.mark.slow
def test_ram_promptir_tiny(reference_weights) -> None:
    model = build_model("ram_promptir_tiny")
    reference_weights(model)
    _check(model, 16, 4)


@pytest.mark.slow
def test_full_size_layer_counts() -> None:
    """The reference selects 26 of 263 (SwinIR, 10%) and 133 of 445 (PromptIR, 30%) layers."""
    assert len(list_layers(_build("ram_promptir"))) == 445
    assert len(list_layers(_build("ram_swinir"))) == 263


_SWIN = {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16}
_RESTORMER = {
    "dim": 8,
    "num_blocks": [1, 1, 1, 1],
    "num_refinement_blocks": 1,
    "heads": [1, 1, 1, 1],
}
_TINY = {
    "ram_swinir": _SWIN,
    "swinir": _SWIN,
    "nafnet": {"width": 8, "enc_blk_nums": [1], "middle_blk_num": 1, "dec_blk_nums": [1]},
    "restormer": _RESTORMER,
    # the prompt blocks are wired for dim 48
    "ram_promptir": {**_RESTORMER, "dim": 48},
    "promptir": {**_RESTORMER, "dim": 48},
    "adasam_restormer_woskip": _RESTORMER,
    # the mask generator (RAM++): its layers are per sample too; it runs at img_size only
    "adasam": {"img_size": 16, "patch_size": 4, "embed_dim": 16},
    # RAM++'s fine-tuning network: it runs with DINOv2 features only (its MAC is the
    # pretraining network's), so it is left out of the probe below
    "restormer_rfr": {**_RESTORMER, "dino_dim": 16, "gate_hidden": 8},
}
"""Small constructor arguments of every registered backbone, for the layout check."""


def test_every_backbone_has_a_layout_check() -> None:
    from ramir.models import list_models

    assert set(list_models()) <= set(_TINY), "add the new backbone to _TINY"


@pytest.mark.parametrize(
    "name",
    sorted({*_TINY, "ram_swinir_plain", "swinir_plain"} - {"ram_swinir", "swinir", "restormer_rfr"})
    + ["ram_swinir_fast", "swinir_fast"],
)
def test_declared_layout_matches_the_probe(name: str) -> None:
    """What a backbone declares (``per_sample_outputs``) is what its layers really do."""
    from ramir.attribution.layout import declared_per_sample, not_sample_major, probe_inputs

    arch = name.removesuffix("_plain").removesuffix("_fast")
    impl = name.rpartition("_")[2] if arch != name else None
    torch.manual_seed(0)
    model = _build(arch, **_TINY[arch]).eval()
    if impl is not None:
        model.set_attention_impl(impl)
    declared = declared_per_sample(model)
    if declared is None:
        pytest.skip(f"{type(model).__name__} does not declare per_sample_outputs")
    probe = probe_inputs(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), 4)
    mixed = not_sample_major(model, list_layers(model), probe)
    assert declared == (not mixed), mixed[:4]
    assert declared == (impl != "fast")

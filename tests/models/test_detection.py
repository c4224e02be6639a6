"""Checkpoint detection owned by the backbones: each module's detect and
kwargs_from_state_dict, the registry's detection order, and a backbone added in one file
(tests/models/toy_backbone.py, docs/adding-a-backbone.md)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import ramir
from ramir.checkpoint import CheckpointError, infer_arch, save_model
from ramir.models import (
    add_model,
    add_variant,
    build_model,
    detectors,
    list_models,
    list_variants,
    remove_model,
    restormer,
)
from ramir.models.restormer import Restormer

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "adding-a-backbone.md"

# The order docs/adding-a-backbone.md states: more specific layouts first.
ORDER = [
    "adasam",
    "restormer_rfr",
    "adasam_restormer_woskip",
    "ram_swinir",
    "swinir",
    "ram_promptir",
    "promptir",
    "restormer",
    "nafnet",
]

# Small sizes of every backbone (built on the meta device: shapes only).
SMALL = {
    "adasam": dict(img_size=16, patch_size=4, embed_dim=16),
    "restormer_rfr": dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1], dino_dim=16),
    "adasam_restormer_woskip": dict(dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1]),
    "ram_swinir": dict(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4),
    "swinir": dict(img_size=14, embed_dim=12, depths=[2, 1], num_heads=[2, 3], window_size=7),
    "ram_promptir": dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "promptir": dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1),
    "restormer": dict(dim=8, num_blocks=[1, 2, 1, 1], heads=[1, 2, 2, 4], bias=True),
    "nafnet": dict(width=8, middle_blk_num=2, enc_blk_nums=[1, 2], dec_blk_nums=[2, 1]),
}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _seeded(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def test_the_detection_order_asks_the_more_specific_layouts_first():
    assert [d.name for d in detectors()] == ORDER
    assert set(ORDER) == set(list_models())  # every shipped backbone detects its files


def test_the_guide_quotes_the_code_and_the_order_as_they_are():
    """docs/adding-a-backbone.md quotes NAFNet's detection verbatim and tables the order."""
    guide = GUIDE.read_text()
    quoted = guide.split("## How NAFNet's detection reads")[1].split("```python\n")[1]
    quoted = quoted.split("```")[0]
    assert quoted in (REPO / "src" / "ramir" / "models" / "nafnet.py").read_text()
    table = re.findall(r"^\| (\d+) \| `(\w+)` \|", guide, flags=re.MULTILINE)
    assert [name for _, name in table] == ORDER
    assert [int(i) for i, _ in table] == list(range(1, len(ORDER) + 1))


@pytest.mark.parametrize("name", ORDER)
def test_every_backbone_recognises_its_own_state_dict(name):
    """Each backbone's state dict is found as itself (the RAM++ pretraining network with
    its hint, as a file named RestormerWoSkip.pth gives), and its
    kwargs_from_state_dict rebuilds a network of the same shapes."""
    with torch.device("meta"):
        model = build_model(name, **SMALL[name])
    sd = model.state_dict()
    found, kwargs = infer_arch(sd, hint=name)
    assert found == name
    with torch.device("meta"):
        rebuilt = build_model(found, **kwargs)
    assert _shapes(rebuilt) == _shapes(model)
    without_hint = infer_arch(sd)[0]
    assert without_hint == ("restormer" if name == "adasam_restormer_woskip" else name)


@pytest.fixture
def toy():
    """tests/models/toy_backbone.py, imported (which registers it) and unregistered after."""
    sys.modules.pop("toy_backbone", None)
    module = importlib.import_module("toy_backbone")
    try:
        yield module
    finally:
        remove_model(module.NAME)
        sys.modules.pop("toy_backbone", None)


def test_a_backbone_added_in_one_module_is_detected_and_loaded(tmp_path, toy):
    """The toy backbone's module is the only file involved: ramir.load_model recognises
    a plain state dict of it (a release-style .pth) and ramir's own file of it."""
    model = _seeded(build_model("toy_resnet", width=6, num_blocks=3))
    x = torch.randn(2, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    assert detectors()[-1].name == "toy_resnet"  # asked after every shipped backbone

    release = tmp_path / "toy_release.pth"
    torch.save({"params": model.state_dict()}, release)
    loaded = ramir.load_model(release)
    assert isinstance(loaded, toy.ToyResNet) and not loaded.training
    assert loaded.arch_name == "toy_resnet"
    assert loaded.arch_kwargs == {"in_chans": 3, "width": 6, "num_blocks": 3}
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)

    ours = save_model(model, tmp_path / "toy.safetensors")
    with torch.no_grad():
        assert torch.equal(ramir.load_model(ours)(x), expected)

    # the shipped backbones' files are still theirs
    with torch.device("meta"):
        nafnet = build_model("nafnet_tiny")
    assert infer_arch(nafnet.state_dict())[0] == "nafnet"


def test_a_removed_backbone_is_gone_with_its_sizes_and_detector(toy):
    add_variant("toy_resnet_wide", "toy_resnet", width=32)
    sd = build_model("toy_resnet").state_dict()
    assert infer_arch(sd)[0] == "toy_resnet"
    remove_model("toy_resnet")
    assert "toy_resnet" not in list_models() and "toy_resnet_wide" not in list_variants()
    assert "toy_resnet" not in [d.name for d in detectors()]
    with pytest.raises(CheckpointError, match="cannot recognise the architecture"):
        infer_arch(sd)
    add_model("toy_resnet", toy.ToyResNet)  # re-added without detection for the fixture
    with pytest.raises(CheckpointError, match="cannot recognise"):
        infer_arch(sd)


class _Variant(Restormer):
    """A Restormer whose files have a plain Restormer's keys, told apart by a hint."""


def _variant_detect(state_dict, hint=None):
    return restormer.detect(state_dict) and hint is not None and "variant" in hint


def test_before_puts_a_detector_ahead_of_the_layout_it_extends():
    with torch.device("meta"):
        sd = build_model("restormer", **SMALL["restormer"]).state_dict()
    add_model(
        "restormer_variant",
        _Variant,
        detect=_variant_detect,
        kwargs_from_state_dict=restormer.kwargs_from_state_dict,
        before=["restormer", "nafnet"],
    )
    try:
        names = [d.name for d in detectors()]
        assert names.index("restormer_variant") == names.index("restormer") - 1
        assert infer_arch(sd, "my_variant.pth")[0] == "restormer_variant"
        assert infer_arch(sd, "other.pth")[0] == "restormer"
    finally:
        remove_model("restormer_variant")
    assert [d.name for d in detectors()] == ORDER


def test_registration_errors_name_the_problem():
    with pytest.raises(KeyError, match="before nope: no such detector; the detection order"):
        add_model("x", _Variant, detect=_variant_detect,
                  kwargs_from_state_dict=restormer.kwargs_from_state_dict, before="nope")  # fmt: skip
    with pytest.raises(ValueError, match="give both detect and kwargs_from_state_dict"):
        add_model("x", _Variant, detect=_variant_detect)
    with pytest.raises(KeyError, match="already registered"):
        add_model("nafnet", _Variant)
    assert "x" not in list_models() and [d.name for d in detectors()] == ORDER

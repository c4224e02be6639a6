"""Named sizes of the backbones (``ram_swinir_tiny``...): names ``build_model`` accepts."""

import json
from pathlib import Path

import pytest

from ramir.checkpoint import load_model, read_metadata, save_model
from ramir.errors import UnknownNameError
from ramir.models import (
    build_model,
    list_models,
    list_variants,
    model_kwargs,
    resolve_model,
)

MANIFEST = json.loads((Path(__file__).parents[1] / "data" / "backbone_manifest.json").read_text())

SPELLED_OUT = {
    "ram_swinir_tiny": (
        "ram_swinir",
        dict(
            img_size=32, embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=8, mlp_ratio=2
        ),
    ),
    "ram_promptir_tiny": ("ram_promptir", dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)),
    "nafnet_tiny": (
        "nafnet",
        dict(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    ),
    "nafnet_w16": (
        "nafnet",
        dict(width=16, middle_blk_num=2, enc_blk_nums=[1, 1, 2, 4], dec_blk_nums=[1, 1, 1, 1]),
    ),
}


def _shapes(model) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_named_size_is_listed_apart_from_the_base_names():
    variants = list_variants()
    assert set(variants) == set(SPELLED_OUT)
    assert not set(variants) & set(list_models())
    assert {n: (b, kw) for n, (b, kw) in variants.items()} == SPELLED_OUT
    variants["nafnet_tiny"][1]["enc_blk_nums"].append(9)  # a copy
    assert resolve_model("nafnet_tiny") == SPELLED_OUT["nafnet_tiny"]
    assert resolve_model("nafnet") == ("nafnet", {})


@pytest.mark.parametrize("name", sorted(SPELLED_OUT))
def test_named_size_builds_the_spelled_out_model(name):
    base, kwargs = SPELLED_OUT[name]
    model = build_model(name)
    assert _shapes(model) == _shapes(build_model(base, **kwargs))
    assert model.arch_name == base and model.arch_kwargs == kwargs
    assert model_kwargs(name) == {**model_kwargs(base), **kwargs}


@pytest.mark.parametrize("name", ["ram_swinir_tiny", "ram_promptir_tiny"])
def test_tiny_sizes_are_the_manifest_reference_networks(name):
    """The tiny reference networks of the test vectors (tests/data/backbone_manifest.json)."""
    args = MANIFEST[name]["constructor_args"]
    ours = {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs(name).items()}
    assert {k: ours[k] for k in args} == args


def test_keywords_override_a_named_size():
    model = build_model("ram_swinir_tiny", img_size=48, depths=[2], num_heads=[3])
    assert model.arch_name == "ram_swinir"
    assert model.arch_kwargs == {
        **SPELLED_OUT["ram_swinir_tiny"][1],
        "img_size": 48,
        "depths": [2],
        "num_heads": [3],
    }
    spelled = build_model("ram_swinir", **model.arch_kwargs)
    assert _shapes(model) == _shapes(spelled)
    assert build_model("nafnet_tiny", width=4).arch_kwargs["width"] == 4
    with pytest.raises(TypeError, match="model 'nafnet' got unknown argument"):
        build_model("nafnet_tiny", widht=4)


def test_checkpoint_of_a_named_size_names_the_base_architecture(tmp_path):
    model = build_model("nafnet_tiny", width=4)
    path = save_model(model, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    assert meta["arch"] == "nafnet"
    assert {k: meta["arch_kwargs"][k] for k in ("width", "enc_blk_nums")} == {
        "width": 4,
        "enc_blk_nums": [1, 1],
    }
    loaded = load_model(path)
    assert loaded.arch_name == "nafnet" and _shapes(loaded) == _shapes(model)


def test_unknown_name_lists_base_names_and_named_sizes():
    with pytest.raises(UnknownNameError) as e:
        build_model("ram_swinir_tinyy")
    msg = str(e.value)
    assert "unknown model 'ram_swinir_tinyy'" in msg
    for name in [*list_models(), *list_variants()]:
        assert name in msg
    with pytest.raises(KeyError, match="named size: .*nafnet_tiny"):
        model_kwargs("bogus")


def test_a_training_config_takes_a_named_size():
    from ramir.training.config import load_training_config

    cfg = load_training_config(
        Path(__file__).parents[2] / "configs" / "cpu" / "pretrain.yaml",
        overrides=["model.args.img_size=16"],
    )
    assert cfg.model.name == "ram_swinir_tiny"
    model = build_model(cfg.model.name, **cfg.model.args)
    assert model.arch_name == "ram_swinir" and model.arch_kwargs["img_size"] == 16


def test_a_named_size_as_arch_loads_a_ramir_checkpoint_of_that_base(tmp_path):
    from ramir.checkpoint import load_model, save_model
    from ramir.models import build_model

    path = save_model(build_model("nafnet_tiny"), tmp_path / "m.safetensors")
    assert load_model(path, arch="nafnet_tiny").arch_name == "nafnet"

"""Checkpoint round-trips, official BasicSR loading and clear errors."""

import json
from pathlib import Path

import pytest
import torch

from ramir.checkpoint import (
    CheckpointError,
    infer_arch,
    load_model,
    read_metadata,
    save_model,
)
from ramir.models import build_model, count_parameters

MANIFEST = json.loads((Path(__file__).parent / "data" / "backbone_manifest.json").read_text())


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_ours_round_trip_rebuilds_without_config(tmp_path):
    model = _randomize(build_model("ram_swinir_tiny")).eval()
    path = save_model(model, tmp_path / "m.safetensors", extra={"step": 12})
    meta = read_metadata(path)
    assert meta["arch"] == "ram_swinir"
    assert meta["arch_kwargs"]["embed_dim"] == 24
    assert meta["arch_kwargs"]["normalization"] == "imagenet"
    assert meta["extra"] == {"step": 12}
    loaded = load_model(path)
    assert not loaded.training
    x = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_arch_mismatch_with_our_format(tmp_path):
    model = build_model("ram_swinir_tiny")
    path = save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="holds a 'ram_swinir' model, not 'ram_promptir'"):
        load_model(path, arch="ram_promptir")


@pytest.mark.parametrize("wrapper", ["params", "params_ema", None])
def test_official_pth_prefers_ema_and_strips_module(tmp_path, wrapper):
    model = _randomize(build_model("ram_swinir_tiny"), seed=1)
    other = _randomize(build_model("ram_swinir_tiny"), seed=2)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    if wrapper == "params_ema":
        obj = {"params": other.state_dict(), "params_ema": sd}
    elif wrapper == "params":
        obj = {"params": sd}
    else:
        obj = sd
    torch.save(obj, tmp_path / "net.pth")
    loaded = load_model(tmp_path / "net.pth")
    assert loaded.arch_name == "ram_swinir"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", ["ram_swinir", "ram_promptir"])
def test_full_size_manifest_keys_load_and_arch_is_inferred(tmp_path, name):
    entry = MANIFEST[name]
    sd = {f"module.{e['name']}": torch.zeros(e["shape"]) for e in entry["state_dict"]}
    arch, kwargs = infer_arch({k[7:]: v for k, v in sd.items()})
    assert arch == name
    for k, v in kwargs.items():
        assert entry["constructor_args"][k] == v, k
    torch.save({"params_ema": sd}, tmp_path / "full.pth")
    model = load_model(tmp_path / "full.pth")
    assert count_parameters(model) == entry["n_params"]


def test_checkpoint_of_another_architecture_names_keys(tmp_path):
    tiny = MANIFEST["ram_promptir_tiny"]
    sd = {e["name"]: torch.zeros(e["shape"]) for e in tiny["state_dict"]}
    torch.save({"params": sd}, tmp_path / "promptir.pth")
    with pytest.raises(
        CheckpointError, match=r"does not fit model 'ram_swinir'.*missing: .*conv_first"
    ):
        load_model(tmp_path / "promptir.pth", arch="ram_swinir_tiny")


def test_wrong_shape_is_named(tmp_path):
    model = build_model("ram_swinir_tiny")
    sd = model.state_dict()
    sd["conv_last.bias"] = torch.zeros(4)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError, match=r"conv_last\.bias: checkpoint \(4,\) vs model \(3,\)"
    ):
        load_model(tmp_path / "bad.pth", arch="ram_swinir_tiny")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file(tmp_path, suffix):
    model = build_model("ram_swinir_tiny")
    good = tmp_path / f"good{suffix}"
    if suffix == ".safetensors":
        save_model(model, good)
    else:
        torch.save({"params": model.state_dict()}, good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_model(bad)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model("/nonexistent/model.safetensors")


def test_metadata_asking_for_a_huge_model_is_refused_before_building(tmp_path):
    """A few hundred bytes whose metadata says `width: 2048` (an 18-billion-parameter
    NAFNet) are refused from the header's shapes, without allocating the model."""
    import resource

    from safetensors.torch import save_file

    path = tmp_path / "bomb.safetensors"
    meta = {
        "format": "ramir-model",
        "format_version": "1",
        "ramir_version": "0.1.0",
        "arch": "nafnet",
        "arch_kwargs": json.dumps({"width": 2048}),
        "model_info": "{}",
        "extra": "{}",
    }
    save_file({"intro.weight": torch.zeros(1)}, str(path), metadata=meta)
    assert path.stat().st_size < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"far larger than the 1 tensors"):
        load_model(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # building it for real takes tens of GB


def _edited(tmp_path: Path, arch_kwargs_json: str) -> Path:
    """A real tiny NAFNet file whose metadata's constructor arguments were replaced."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_model(build_model("nafnet_tiny"), tmp_path / "real.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["arch_kwargs"] = arch_kwargs_json
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata=meta)
    return edited


@pytest.mark.parametrize(
    ("arch_kwargs", "message"),
    [
        ({"middle_blk_num": 100000}, r"middle_blk_num=100000 is over the bound of 65536"),
        ({"enc_blk_nums": [1] * 100}, r"'enc_blk_nums' has 100 entries"),
        ({"width": 1e400}, r"width=inf is not finite"),
        ({"width": {"a": {"b": {"c": {"d": 1}}}}}, r"nested too deeply"),
    ],
)
def test_metadata_values_are_bounded_before_any_module_is_built(tmp_path, arch_kwargs, message):
    path = _edited(tmp_path, json.dumps(arch_kwargs))
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_model_far_larger_than_its_file_stops_while_being_built(tmp_path):
    """Under the bounds, 60,000 middle blocks (a minute and gigabytes to build, even on
    the meta device) are refused after the first few blocks: the build has a budget of
    registered tensors tied to the file's tensor count."""
    path = _edited(tmp_path, json.dumps({"middle_blk_num": 60000}))
    with pytest.raises(CheckpointError, match="refused before building it"):
        load_model(path)


def test_deeply_nested_metadata_json_is_an_error(tmp_path):
    path = _edited(tmp_path, "[" * 100000 + "]" * 100000)
    with pytest.raises(CheckpointError, match="arch_kwargs"):
        load_model(path)


@pytest.mark.parametrize(
    ("arch", "dropped"),
    [
        ("ram_swinir_tiny", "layers.0.residual_group.blocks.0.mlp.fc1.weight"),
        ("ram_swinir_tiny", "layers.0.residual_group.blocks.0.attn.relative_position_bias_table"),
        ("ram_promptir_tiny", "patch_embed.proj.weight"),
        ("restormer", "output.weight"),
    ],
)
def test_a_partial_release_state_dict_is_an_error_not_a_traceback(tmp_path, arch, dropped):
    torch.manual_seed(0)
    kwargs = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
              "heads": [1, 1, 1, 1]} if arch == "restormer" else {}  # fmt: skip
    sd = build_model(arch, **kwargs).state_dict()
    del sd[dropped]
    torch.save({"params": sd}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial|cannot recognise"):
        load_model(tmp_path / "partial.pth")


def test_the_tar_format_of_old_pytorch_is_refused(tmp_path):
    import io
    import tarfile

    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as tar:
        for name in ("storages", "tensors", "pickle"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"."))
    with pytest.raises(CheckpointError, match="tar format of PyTorch 0.3"):
        load_model(path)


def test_plain_safetensors_state_dicts_load_like_official_files(tmp_path):
    """A safetensors file without ramir metadata is a bare state dict: its architecture is
    guessed from the weights, or given with arch= (as the error used to suggest in vain)."""
    from safetensors.torch import save_file

    model = build_model("nafnet")
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    for arch in (None, "nafnet"):
        loaded = load_model(path, arch=arch)
        assert loaded.arch_name == "nafnet"
        assert all(torch.equal(a, b) for a, b in zip(
            model.state_dict().values(), loaded.state_dict().values(), strict=True))  # fmt: skip


def test_bad_metadata_json_is_named(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    meta = {"format": "ramir-model", "arch": "nafnet", "arch_kwargs": "{width: 8}"}
    save_file({"x": torch.zeros(1)}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="metadata field 'arch_kwargs' is not valid JSON"):
        load_model(path)


def test_blend_is_the_weighted_mean_of_the_parameters(tmp_path):
    from ramir.checkpoint import blend_models

    a = _randomize(build_model("nafnet_tiny"), seed=1).eval()
    b = _randomize(build_model("nafnet_tiny"), seed=2).eval()
    pa = save_model(a, tmp_path / "a.safetensors")
    pb = save_model(b, tmp_path / "b.safetensors")
    mixed = blend_models([pa, pb], [0.75, 0.25])
    sa, sb, sm = a.state_dict(), b.state_dict(), mixed.state_dict()
    for k in sm:
        if sm[k].is_floating_point():
            torch.testing.assert_close(sm[k], 0.75 * sa[k] + 0.25 * sb[k])
    # all weight on one file is that file's model, output for output
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    only_b = blend_models([pa, pb], [0.0, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(only_b(x), b(x))
    # equal weights when none are given
    even = blend_models([pa, pb]).state_dict()
    k = next(k for k in sm if sm[k].is_floating_point() and sm[k].numel() > 1)
    torch.testing.assert_close(even[k], 0.5 * (sa[k] + sb[k]))


def test_blend_refuses_bad_weights_and_different_models(tmp_path):
    from ramir.checkpoint import blend_models
    from ramir.errors import UsageError

    pa = save_model(build_model("nafnet_tiny"), tmp_path / "a.safetensors")
    pb = save_model(_randomize(build_model("nafnet_tiny")), tmp_path / "b.safetensors")
    other = save_model(build_model("ram_swinir_tiny"), tmp_path / "s.safetensors")
    with pytest.raises(UsageError, match="two or more"):
        blend_models([pa])
    with pytest.raises(UsageError, match="one each"):
        blend_models([pa, pb], [1.0])
    with pytest.raises(UsageError, match="sum to 1"):
        blend_models([pa, pb], [0.7, 0.7])
    with pytest.raises(UsageError, match="sum to 1"):
        blend_models([pa, pb], [1.5, -0.5])
    with pytest.raises(CheckpointError, match="arch differ"):
        blend_models([pa, other], [0.5, 0.5])


def test_blend_cli_writes_the_mix_and_records_its_inputs(tmp_path, capsys):
    from ramir.checkpoint import file_sha256
    from ramir.cli import main

    a = _randomize(build_model("nafnet_tiny"), seed=1).eval()
    b = _randomize(build_model("nafnet_tiny"), seed=2).eval()
    pa = save_model(a, tmp_path / "a.safetensors")
    pb = save_model(b, tmp_path / "b.safetensors")
    out = tmp_path / "soup.safetensors"
    argv = ["blend", str(pa), str(pb), "--weights", "0.6", "0.4", "-o", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0.6 x a.safetensors + 0.4 x b.safetensors" in printed and str(tmp_path) not in printed
    mixed = load_model(out).state_dict()
    sa, sb = a.state_dict(), b.state_dict()
    k = next(k for k in mixed if mixed[k].is_floating_point() and mixed[k].numel() > 1)
    torch.testing.assert_close(mixed[k], 0.6 * sa[k] + 0.4 * sb[k])
    parts = read_metadata(out)["extra"]["blend"]
    assert [(p["file"], p["weight"]) for p in parts] == [
        ("a.safetensors", 0.6),
        ("b.safetensors", 0.4),
    ]
    assert parts[0]["sha256"] == file_sha256(pa)
    # bad requests fail with a message and write nothing
    bad = tmp_path / "bad.safetensors"
    for argv, message in (
        (["blend", str(pa), str(pb), "--weights", "0.9", "0.4", "-o", str(bad)], "sum to 1"),
        (["blend", str(pa), str(tmp_path / "nope.safetensors"), "-o", str(bad)], "no such"),
        (["blend", str(pa), str(pb), "-o", str(tmp_path / "x.pth")], ".safetensors file"),
        (["blend", str(pa), str(pb), "-o", str(pa)], "would overwrite"),
    ):
        assert main(argv) != 0
        assert message in capsys.readouterr().err
        assert not bad.exists()


def test_widen_cli_writes_a_wider_model_with_the_same_output(tmp_path, capsys):
    from ramir.checkpoint import file_sha256
    from ramir.cli import main

    narrow = _randomize(build_model("nafnet_tiny"), seed=3).eval()
    src = save_model(narrow, tmp_path / "small.safetensors")
    out = tmp_path / "wide.safetensors"
    assert main(["widen", "--model", str(src), "--factor", "2", "--seed", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "width 8 -> 16" in printed and str(tmp_path) not in printed
    wide = load_model(out)
    assert wide.arch_kwargs["width"] == 16
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x), atol=2e-5, rtol=1e-4)
    record = read_metadata(out)["extra"]["widened_from"]
    assert record == {"file": "small.safetensors", "sha256": file_sha256(src), "factor": 2,
                      "seed": 1}  # fmt: skip
    # bad requests fail with a message and write nothing
    swin = save_model(build_model("ram_swinir_tiny"), tmp_path / "swin.safetensors")
    bad = tmp_path / "bad.safetensors"
    for argv, message in (
        (["widen", "--model", str(src), "--factor", "1", "-o", str(bad)], "--factor"),
        (["widen", "--model", str(swin), "-o", str(bad)], "only NAFNet"),
        (["widen", "--model", str(src), "-o", str(src)], "overwrite the input"),
        (["widen", "--model", str(src), "-o", str(tmp_path / "w.pth")], ".safetensors"),
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and str(tmp_path) not in err
    assert not bad.exists()

"""RAM++ fine-tuning network (RestormerRFR) and its DINOv2 path against the official code.

Vectors: ``make_rampp_rfr_vectors.py`` (``tests/data/official/rampp/rfr_*.npz``), recorded
with the release's ``RestormerRFR`` (widths 1536/48 as it hard-codes them, one block per
level, seeded features) and its ``DinoFeatureModule`` with a tiny seeded DINOv2 (40
layers, width 16) and ``transformers`` 4.48.0 (its PIL ``BitImageProcessor``). The DINO
tests build that tiny model with ``save_pretrained`` into a temporary folder: nothing is
downloaded.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from make_rampp_rfr_vectors import (
    DINO_CONFIG,
    DINO_SEED,
    DINO_SIZES,
    NAMES,
    PREPROCESSOR,
    rfr_features,
)
from official_seeded import layout_of, load_case, seeded_parameters

from ramir import rampp
from ramir.checkpoint import infer_arch, load_model, load_state_dict
from ramir.models import build_model, count_parameters, restormer_rfr
from ramir.models.rampp_dino import dino_input_size, release_token_grid

TINY = dict(dim=8, dino_dim=16, gate_hidden=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)


def _close(got: torch.Tensor, expected, rtol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got.detach(), expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


# ----------------------------------------------------------------------------- network


def test_release_size_parameters_and_keys():
    with torch.device("meta"):
        model = build_model("restormer_rfr")
    sd = model.state_dict()
    assert count_parameters(model) == 81_757_117
    assert len(sd) == 545 and len(list(model.parameters())) == 542
    keys = list(sd)
    assert keys[0] == "patch_embed.proj.weight"
    assert keys[1] == "dr_adaptation1.adaptation.0.weight"  # DINO side before the encoder
    assert tuple(sd["dr_adaptation1.adaptation.0.weight"].shape) == (768, 1536, 3, 3)
    assert tuple(sd["dino_fusion_deep.gate_network.4.weight"].shape) == (2, 512)
    dino_side = [k for k in keys if k.startswith(restormer_rfr.DINO_SIDE)]
    assert len(dino_side) == 51 and len(keys) - len(dino_side) == 494
    assert sum(sd[k].numel() for k in dino_side if not k.endswith("5.temperature")) == 55_630_473


def test_shared_temperature_appears_twice_and_is_one_parameter():
    model = build_model("restormer_rfr", **TINY)
    for part in ("shallow", "mid", "deep"):
        fusion = getattr(model, f"dino_fusion_{part}")
        assert fusion.gate_network[5].temperature is fusion.temperature
        sd = model.state_dict()
        assert f"dino_fusion_{part}.gate_network.5.temperature" in sd
        assert f"dino_fusion_{part}.temperature" in sd
    # setting it through either key changes the gate's softmax
    x = torch.tensor([[1.0, 0.0]])
    soft = model.dino_fusion_mid.gate_network[5]
    before = soft(x)
    with torch.no_grad():
        model.dino_fusion_mid.temperature.fill_(0.25)
    assert soft(x)[0, 0] > before[0, 0] + 0.1


def _official_rfr():
    meta, layout, arrays = load_case("rampp/rfr_features")
    model = build_model("restormer_rfr", **meta["kwargs"]).eval()
    assert layout == layout_of(model)  # names, shapes, order, the shared temperature
    sd = seeded_parameters(layout, meta["seed"])
    for part in ("shallow", "mid", "deep"):  # a release file holds the shared one twice
        sd[f"dino_fusion_{part}.gate_network.5.temperature"] = sd[f"dino_fusion_{part}.temperature"]
    load_state_dict(model, sd)
    assert count_parameters(model) == meta["parameters"]
    return meta, arrays, model


def test_rfr_with_given_features_matches_official():
    """Widths 1536/48 (as the release hard-codes), 30 x 45 (padded 32 x 48, grid 4 x 6),
    two images: the output and the three fusion gates."""
    meta, arrays, model = _official_rfr()
    feats = rfr_features(meta["feature_seed"], *meta["feature_shape"])
    x = torch.from_numpy(arrays["input"])
    with torch.no_grad():
        _close(model(x, feats), arrays["output"])
        for part, (a, b) in {"shallow": (0, 3), "mid": (1, 4), "deep": (2, 5)}.items():
            w = getattr(model, f"dino_fusion_{part}").weights(feats[NAMES[a]], feats[NAMES[b]])
            _close(w, arrays[f"gate_{part}"])
            torch.testing.assert_close(w.sum(1), torch.ones(2))
    # the second image's output depends on its own features only
    other = {k: v.clone() for k, v in feats.items()}
    other["deep_feat2"][1] += 1.0
    with torch.no_grad():
        out, moved = model(x, feats), model(x, other)
    assert torch.equal(out[0], moved[0]) and (out[1] - moved[1]).abs().max() > 1e-4


def test_tiny_widths_run_and_features_are_checked():
    torch.manual_seed(0)
    model = build_model("restormer_rfr", **TINY).eval()
    x = torch.randn(2, 3, 37, 45)
    feats = {n: torch.randn(2, 16, 6, 6) for n in NAMES}  # padded 48 x 48 -> 6 x 6
    with torch.no_grad():
        out = model(x, feats)
    assert out.shape == (2, 3, 37, 45) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(2, 16, 6, 6\)"):
        model(x, {n: torch.randn(2, 16, 5, 6) for n in NAMES})
    with pytest.raises(ValueError, match="missing: deep_feat2"):
        model(x, {n: feats[n] for n in NAMES[:5]})
    with pytest.raises(ValueError, match="dino=DIR"):
        model(x)


def test_release_file_loads_by_shape(tmp_path):
    """A fine-tuning file ``{'params'}`` named as the release's, tiny widths: the sizes
    (dino_dim, gate width, blocks) come from the shapes."""
    torch.manual_seed(1)
    src = build_model("restormer_rfr", **{**TINY, "heads": [1, 2, 2, 4]}).eval()
    path = tmp_path / "RestormerRFR.pth"
    torch.save({"params": src.state_dict()}, path)
    arch, kwargs = infer_arch(src.state_dict(), "RestormerRFR.pth")
    assert arch == "restormer_rfr"
    assert {k: kwargs[k] for k in ("dim", "dino_dim", "gate_hidden", "heads", "num_blocks")} == {
        "dim": 8, "dino_dim": 16, "gate_hidden": 8, "heads": [1, 2, 2, 4],
        "num_blocks": [1, 1, 1, 1],
    }  # fmt: skip
    model = load_model(path)
    assert type(model).__name__ == "RestormerRFR" and model.dino is None
    x = torch.randn(1, 3, 20, 24)
    feats = {n: torch.randn(1, 16, 4, 4) for n in NAMES}
    with torch.no_grad():
        assert torch.equal(model(x, feats), src(x, feats))


# ----------------------------------------------------------------------------- DINO


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    """The recorder's tiny seeded DINOv2 and DINOv2-giant's processor file."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("dinov2_tiny")
    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**DINO_CONFIG)).eval()
    model.load_state_dict(seeded_parameters(layout_of(model), DINO_SEED), strict=False)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return folder


def _tiny_rfr(dino_dir, **kwargs):
    torch.manual_seed(2)
    return build_model("restormer_rfr", **TINY, dino=str(dino_dir), **kwargs).eval()


def test_dino_pixels_and_features_equal_the_official_extractor(dino_dir):
    """float16 DINO, four sizes: the processor's pixel values and the six features equal
    the release's ``DinoFeatureModule`` (transformers 4.48.0); 224 x 144 fails there."""
    meta, _, arrays = load_case("rampp/rfr_dino")
    assert meta["processor_class"] == "BitImageProcessor"
    model = _tiny_rfr(dino_dir)
    assert model.dino.model.dtype == torch.float16
    assert count_parameters(model) == count_parameters(build_model("restormer_rfr", **TINY))
    failed = {(h, w) for h, w, _ in meta["fails"]}
    assert failed == {(224, 144)}
    for i, (h, w) in enumerate(DINO_SIZES):
        if (h, w) in failed:
            continue
        x = torch.from_numpy(arrays[f"input_{i}"])
        pixels = rampp.dino_pixel_values(model, x)
        torch.testing.assert_close(pixels, torch.from_numpy(arrays[f"pixels_{i}"]), rtol=0, atol=0)
        feats = rampp.dino_features(model, x)
        assert list(feats) == NAMES
        for n in NAMES:
            torch.testing.assert_close(
                feats[n], torch.from_numpy(arrays[f"{n}_{i}"]), rtol=0, atol=0
            )


def test_model_runs_its_dino_and_given_features_agree(dino_dir):
    model = _tiny_rfr(dino_dir)
    x = torch.randn(1, 3, 37, 45).clamp(-2, 2)
    with torch.no_grad():
        own = model(x)
        given = model(x, rampp.dino_features(model, x))
    assert torch.equal(own, given) and own.shape == x.shape
    # DINO sits outside the network's parameters and state dict
    assert not any(k.startswith("dino.") or ".model." in k for k in model.state_dict())


def test_portrait_token_grid_release_fails_exact_works(dino_dir):
    assert release_token_grid(28 * 18, 252, 392) == (18, 28)  # landscape: fine
    with pytest.raises(ValueError, match="26\\*19 != 504"):
        release_token_grid(28 * 18, 392, 252)  # 224 x 144 portrait: the release's error
    assert dino_input_size(224, 144) == (392, 252)
    x = torch.randn(1, 3, 224, 144).clamp(-2, 2)
    model = _tiny_rfr(dino_dir)
    feats = rampp.dino_features(model, x)
    assert feats["deep_feat2"].shape == (1, 16, 28, 18)
    release = _tiny_rfr(dino_dir, token_grid="release")
    with pytest.raises(ValueError, match="token-grid recovery fails"):
        rampp.dino_features(release, x)


def test_release_training_features_starve_the_gates(dino_dir):
    """train_features='release': layer 33 in all six slots during training, so every gate
    weighs two equal maps and gets no gradient; the default feeds six distinct layers."""
    x = torch.randn(1, 3, 32, 32).clamp(-2, 2)
    grads = {}
    for mode in ("distinct", "release"):
        model = _tiny_rfr(dino_dir, dino_dtype="float32", train_features=mode).train()
        model(x).abs().mean().backward()
        grads[mode] = max(
            float(getattr(model, f"dino_fusion_{p}").gate_network[4].weight.grad.abs().max())
            for p in ("shallow", "mid", "deep")
        )
        model.eval()  # evaluation always uses the six layers
        assert rampp.dino_features(model, x)["shallow_feat1"].shape[1] == 16
    assert grads["distinct"] > 1e-8  # small at this random initialisation, but there
    assert grads["release"] < 1e-4 * grads["distinct"]  # rounding only (measured ~1e-6 x)
    feats = rampp.dino_features(model, x, layers=(33,) * 6)
    assert all(torch.equal(feats[n], feats["deep_feat1"]) for n in NAMES)


def test_load_model_with_dino_and_restore(tmp_path, dino_dir):
    import ramir

    torch.manual_seed(3)
    src = build_model("restormer_rfr", **TINY).eval()
    path = tmp_path / "RestormerRFR.pth"
    torch.save({"params": src.state_dict()}, path)
    model = ramir.load_model(path, dino=str(dino_dir), dino_dtype="float32")
    assert model.dino is not None and model.dino.model.dtype == torch.float32
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((3, 40, 36)).astype(np.float32))  # [0, 1]
    out = ramir.restore(model, img)
    assert out.shape == img.shape
    with torch.no_grad():
        expected = model.normalization.denormalize(model(model.normalization.normalize(img[None])))
    torch.testing.assert_close(out, expected[0].clamp(0, 1), atol=1e-5, rtol=0)


def test_cli_restore_with_dino(tmp_path, dino_dir):
    """``ramir restore --model RestormerRFR.pth --dino DIR photo.png``; without ``--dino``
    the error says what is missing."""
    from PIL import Image

    from ramir.cli import main

    torch.manual_seed(4)
    torch.save(
        {"params": build_model("restormer_rfr", **TINY).state_dict()}, tmp_path / "RestormerRFR.pth"
    )
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")

    def args(out: str) -> list[str]:
        return ["restore", str(tmp_path / "photo.png"), "-o", str(tmp_path / out), "-q",
                "--model", str(tmp_path / "RestormerRFR.pth")]  # fmt: skip

    assert main([*args("out"), "--dino", str(dino_dir)]) == 0
    assert Image.open(tmp_path / "out" / "photo.png").size == (20, 24)
    assert main(args("without")) != 0
    assert not (tmp_path / "without" / "photo.png").exists()


def test_save_and_load_ramir_checkpoint(tmp_path, dino_dir):
    """ramir's safetensors file keeps both temperature names (one tensor each) and not the
    DINO folder; loading with dino= attaches it again."""
    from ramir.checkpoint import read_metadata, save_model

    model = _tiny_rfr(dino_dir)
    with torch.no_grad():
        model.dino_fusion_deep.temperature.fill_(0.7)
    path = save_model(model, tmp_path / "rfr.safetensors")
    assert "dino" not in read_metadata(path)["arch_kwargs"]
    plain = load_model(path)
    assert plain.dino is None
    assert plain.dino_fusion_deep.gate_network[5].temperature is plain.dino_fusion_deep.temperature
    assert float(plain.dino_fusion_deep.temperature.detach()) == pytest.approx(0.7)
    again = load_model(path, dino=str(dino_dir))
    x = torch.randn(1, 3, 16, 16).clamp(-2, 2)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_release_size_file_layout_is_detected():
    """The release's full-size layout (meta tensors: shapes only) gives its arguments."""
    with torch.device("meta"):
        sd = build_model("restormer_rfr").state_dict()
    arch, kwargs = infer_arch(sd, "RestormerRFR_ratio0.3.pth")
    assert arch == "restormer_rfr"
    assert kwargs == {
        "inp_channels": 3, "out_channels": 3, "dim": 48, "num_blocks": [4, 6, 6, 8],
        "num_refinement_blocks": 4, "heads": [1, 2, 4, 8], "ffn_expansion_factor": 2.66,
        "bias": False, "LayerNorm_type": "WithBias", "dino_dim": 1536, "gate_hidden": 512,
    }  # fmt: skip
    # without the fusion gates it is the pretraining network (by its name) or a Restormer
    rest = {k: v for k, v in sd.items() if not k.startswith(restormer_rfr.DINO_SIDE)}
    assert infer_arch(rest, "RestormerWoSkip.pth")[0] == "adasam_restormer_woskip"
    assert infer_arch(rest, "restormer.pth")[0] == "restormer"

"""RAM++ against the official code: the AdaSAM generator, the pretraining network, the
two losses and one whole pretraining step equal vectors recorded with the release's
classes (``make_rampp_vectors.py``; ``tests/data/official/rampp``), and release-format
files of both networks load by their shapes.

Seeded masks: the release draws with ``torch.multinomial`` on PyTorch's global
generator right after ``torch.manual_seed(seed)``. In eval mode the draw is the first
random number used, so ramir's draw from ``torch.Generator().manual_seed(seed)`` must
pick the same pixels; in training mode dropout draws first, and ramir with the global
generator seeded the same must reproduce dropout and draw alike.
"""

from __future__ import annotations

import pytest
import torch
from official_seeded import load_case, seeded_parameters

from ramir import rampp
from ramir.checkpoint import infer_arch, load_state_dict, read_state_dict
from ramir.models import adasam, adasam_restormer, build_model, count_parameters

GENERATOR_CASES = ["adasam_learnable", "adasam_sinusoid"]
WOSKIP_CASES = ["woskip_withbias", "woskip_biasfree"]


def _close(got: torch.Tensor, expected, rtol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected)
    scale = float(expected.abs().max())
    torch.testing.assert_close(got.detach(), expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def _generator(case: str) -> tuple[dict, dict, adasam.AdaptiveMaskPixGenerator]:
    meta, layout, arrays = load_case(f"rampp/{case}")
    model = build_model("adasam", **meta["kwargs"])
    model.load_state_dict(seeded_parameters(layout, meta["seed"]), strict=False)
    assert count_parameters(model) == meta["parameters"]
    return meta, arrays, model


def _woskip(case: str) -> tuple[dict, dict, adasam_restormer.AdaSAMRestormerWoskip]:
    meta, layout, arrays = load_case(f"rampp/{case}")
    kwargs = {k: v for k, v in meta["kwargs"].items() if k != "img_size"}  # no-op here
    model = build_model("adasam_restormer_woskip", **kwargs).eval()
    load_state_dict(model, seeded_parameters(layout, meta["seed"]))
    assert count_parameters(model) == meta["parameters"]
    return meta, arrays, model


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_generator_probabilities_match_official(case):
    meta, arrays, model = _generator(case)
    x = torch.from_numpy(arrays["input"])
    model.eval()
    with torch.no_grad():
        probs = rampp.token_probs(model, x)
        pixels = rampp.pixel_probs(model, x)
    _close(probs, arrays["token_probs"])
    _close(pixels, arrays["pixel_probs"])
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    if "pos_table" in arrays:  # the fixed sinusoid table, computed here, not loaded
        _close(model.pos_embed_probs, arrays["pos_table"])
        assert "pos_embed_probs" not in dict(model.named_parameters())


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_seeded_mask_equals_official_draw(case):
    """Eval mode: a generator seeded like the release's global RNG hides the same pixels,
    and so does the global RNG itself."""
    meta, arrays, model = _generator(case)
    x = torch.from_numpy(arrays["input"])
    expected = torch.from_numpy(arrays["mask_eval"])
    model.eval()
    with torch.no_grad():
        draw = model(x, generator=torch.Generator().manual_seed(meta["eval_seed"]))
        torch.manual_seed(meta["eval_seed"])
        global_draw = model(x)
    assert torch.equal(draw.mask, expected)
    assert torch.equal(global_draw.mask, expected)
    assert draw.mask.sum((1, 2, 3)).tolist() == [meta["num_masked"]] * 2
    assert meta["num_masked"] == adasam.masked_pixels(
        meta["kwargs"]["img_size"], meta["kwargs"]["patch_size"], meta["kwargs"]["mask_ratio"]
    )


def test_training_mode_dropout_and_mask_equal_official():
    meta, arrays, model = _generator("adasam_learnable")
    x = torch.from_numpy(arrays["input"])
    model.train()
    with torch.no_grad():
        torch.manual_seed(meta["train_seed"])
        draw = model(x)
    _close(draw.pixel_probs, arrays["pixel_probs_train"])
    assert torch.equal(draw.mask, torch.from_numpy(arrays["mask_train"]))
    # dropout is on: the training-mode probabilities differ from the eval-mode ones
    assert (draw.pixel_probs - torch.from_numpy(arrays["pixel_probs"])).abs().max() > 1e-4


@pytest.mark.parametrize("case", WOSKIP_CASES)
def test_pretraining_network_matches_official(case):
    """Odd size (37 x 45, reflect-padded to 48 inside), with and without a mask."""
    _, arrays, model = _woskip(case)
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with torch.no_grad():
        _close(model(t["input"]), t["output"])
        _close(model(t["input"], t["mask"], t["tokens"]), t["output_mask_tokens"])
        _close(model(t["input"], t["mask"], torch.zeros_like(t["input"])), t["output_mask_zeros"])
        # the default token is zeros; a (B, H, W) mask is the same as (B, 1, H, W)
        _close(model(t["input"], t["mask"][:, 0]), t["output_mask_zeros"])
        _close(model(t["input_square"], t["mask_square"]), t["output_square"])


def test_losses_and_gradients_match_official():
    meta, _, arrays = load_case("rampp/losses")
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    pred = t["pred"].clone().requires_grad_(True)
    p_x = t["p_x"].clone().requires_grad_(True)
    for (w_pix, w_prob), values in zip(meta["weights"], t["values"], strict=True):
        l_pix, l_prob = rampp.pretrain_losses(pred, t["gt"], t["mask"], p_x, w_pix, w_prob)
        _close(torch.stack([l_pix, l_prob]), values.float())
    l_pix, l_prob = rampp.pretrain_losses(pred, t["gt"], t["mask"], p_x, 1.0, 1e-4)
    g_pred, g_p_none = torch.autograd.grad(l_pix, [pred, p_x], allow_unused=True)
    assert g_p_none is None  # the pixel loss does not reach the probabilities
    g_p, g_pred_none = torch.autograd.grad(l_prob, [p_x, pred], allow_unused=True)
    assert g_pred_none is None  # the probability loss sees a detached prediction
    _close(g_pred, t["grad_pred"])
    _close(g_p, t["grad_p_x"])


def test_pretraining_step_matches_official():
    """One step in training mode (dropout on): mask, prediction, losses and the gradients
    of both networks after one backward of l_pix + l_prob, as the release's
    ``optimize_parameters``."""
    meta, _, arrays = load_case("rampp/step")
    gen = build_model("adasam", **meta["generator"])
    gen_layout = load_case("rampp/adasam_learnable")[1]
    gen.load_state_dict(seeded_parameters(gen_layout, meta["generator_seed"]), strict=False)
    net_layout = load_case("rampp/woskip_withbias")[1]
    net_kwargs = {k: v for k, v in meta["net"].items() if k != "img_size"}
    net = build_model("adasam_restormer_woskip", **net_kwargs)
    load_state_dict(net, seeded_parameters(net_layout, meta["net_seed"]))
    gen.train()
    net.train()
    lq, gt = torch.from_numpy(arrays["lq"]), torch.from_numpy(arrays["gt"])
    torch.manual_seed(meta["step_seed"])
    out = rampp.pretrain_forward(net, gen, lq, gt, pixel_weight=1.0, prob_weight=1e-4)
    (out.l_pix + out.l_prob).backward()
    assert torch.equal(out.mask, torch.from_numpy(arrays["mask"]))
    _close(out.pred, arrays["output"], rtol=2e-5)
    _close(out.pixel_probs, arrays["pixel_probs"])
    _close(torch.stack([out.l_pix, out.l_prob]), torch.from_numpy(arrays["losses"]).float())
    nets = {"net_mask": dict(gen.named_parameters()), "net_g": dict(net.named_parameters())}
    for net_name, names in meta["grads"].items():
        for name in names:
            _close(nets[net_name][name].grad, arrays[f"grad:{net_name}:{name}"], rtol=1e-4)
    # a shift of every logit leaves the softmax alone: the scorer's bias gets no gradient
    assert gen.get_token_probs[1].bias.grad.abs().item() < 1e-9


# ----------------------------------------------------------------------------- files


def _release_file(tmp_path, name: str, sd: dict[str, torch.Tensor]):
    """A BasicSR pretraining file: ``{'params', 'params_ema'}`` (EMA slightly apart)."""
    path = tmp_path / name
    ema = {k: v + 1e-3 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"params": sd, "params_ema": ema}, path)
    return path, ema


def test_release_generator_file_loads_by_shape(tmp_path):
    meta, layout, arrays = load_case("rampp/adasam_learnable")
    sd = seeded_parameters(layout, meta["seed"])
    sd["mask_token"] = torch.zeros(layout[1]["shape"])  # the unused parameter, as stored
    path, ema = _release_file(tmp_path, "net_mask_10000.pth", sd)
    loaded = read_state_dict(path)  # params_ema, as every release file is read
    assert adasam.detect(loaded)
    arch, kwargs = "adasam", adasam.kwargs_from_state_dict(loaded)
    assert infer_arch(loaded, path.name) == (arch, kwargs)  # the registry asks adasam first
    for key in ("img_size", "patch_size", "in_chans", "embed_dim"):
        assert kwargs[key] == meta["kwargs"][key], key
    model = build_model(arch, **kwargs).eval()
    load_state_dict(model, loaded, str(path))
    assert torch.equal(model.get_token_probs[1].weight, ema["get_token_probs.1.weight"])
    model.load_state_dict(sd)  # the raw weights reproduce the recorded probabilities
    with torch.no_grad():
        _close(model.token_probs(torch.from_numpy(arrays["input"])), arrays["token_probs"])


def test_release_network_file_loads_by_shape(tmp_path):
    meta, layout, arrays = load_case("rampp/woskip_withbias")
    sd = seeded_parameters(layout, meta["seed"])
    path, _ = _release_file(tmp_path, "RestormerWoSkip.pth", sd)
    loaded = read_state_dict(path)
    assert not adasam_restormer.detect(loaded)  # the keys alone are Restormer's
    assert adasam_restormer.detect(loaded, path.name)
    arch, kwargs = "adasam_restormer_woskip", adasam_restormer.kwargs_from_state_dict(loaded)
    expected = {k: v for k, v in meta["kwargs"].items() if k != "img_size"}
    assert kwargs == expected
    assert infer_arch(loaded, path.name) == (arch, kwargs)
    assert adasam_restormer.detect(loaded, arch)  # an explicit arch is a hint too
    model = build_model(arch, **kwargs).eval()
    load_state_dict(model, {k: v for k, v in sd.items()}, str(path))
    with torch.no_grad():
        _close(model(torch.from_numpy(arrays["input"])), arrays["output"])
    # the same keys without a hint stay a plain Restormer (its detection is unchanged)
    assert infer_arch(loaded)[0] == "restormer"


def test_load_model_reads_both_release_files(tmp_path):
    """``ramir.load_model`` on the release's two files (docs/rampp.md#files)."""
    import ramir

    gen_meta, gen_layout, _ = load_case("rampp/adasam_learnable")
    gen_path, _ = _release_file(
        tmp_path, "net_mask_5000.pth", seeded_parameters(gen_layout, gen_meta["seed"])
    )
    net_meta, net_layout, _ = load_case("rampp/woskip_withbias")
    net_path, _ = _release_file(
        tmp_path, "RestormerWoSkip.pth", seeded_parameters(net_layout, net_meta["seed"])
    )
    gen = ramir.load_model(gen_path)
    net = ramir.load_model(net_path)
    assert gen.arch_name == "adasam" and net.arch_name == "adasam_restormer_woskip"
    assert count_parameters(gen) == gen_meta["parameters"]
    assert count_parameters(net) == net_meta["parameters"]
    plain = tmp_path / "restormer.pth"
    torch.save({"params": seeded_parameters(net_layout, net_meta["seed"])}, plain)
    assert ramir.load_model(plain).arch_name == "restormer"


def test_detectors_refuse_other_layouts():
    with torch.device("meta"):
        restormer = build_model("restormer", dim=8, num_blocks=[1, 1, 1, 1], heads=[1, 1, 1, 1])
        dual = build_model("restormer", inp_channels=6, dual_pixel_task=True, dim=8)
        gen = build_model("adasam", img_size=16, patch_size=4, embed_dim=16)
        prompt = build_model("ram_promptir_tiny")
    assert not adasam.detect(restormer.state_dict())
    assert not adasam.detect(prompt.state_dict())
    assert not adasam_restormer.detect(gen.state_dict(), "woskip")
    assert not adasam_restormer.detect(dual.state_dict(), "woskip")
    assert not adasam_restormer.detect(prompt.state_dict(), "woskip")
    assert adasam_restormer.detect(restormer.state_dict(), "woskip")


def test_release_sizes_and_key_layouts():
    """Parameter counts and key lists of the release's sizes (built without memory)."""
    with torch.device("meta"):
        gen = build_model("adasam")
        net = build_model("adasam_restormer_woskip")
        fixed = build_model("adasam", use_learnable_pos_emb=False)
    assert count_parameters(gen) == 7_431_937
    assert count_parameters(net) == 26_126_644
    sd = gen.state_dict()
    assert len(sd) == 17 and list(sd)[:3] == [
        "pos_embed_probs",
        "mask_token",
        "patch_embed.proj.weight",
    ]
    assert tuple(sd["pos_embed_probs"].shape) == (1, 256, 768)
    assert tuple(sd["get_token_probs.0.attn.qkv.weight"].shape) == (2304, 768)
    assert "get_token_probs.0.attn.qkv.bias" not in sd
    assert set(fixed.state_dict()) == set(sd)  # the fixed table is a persistent buffer
    assert len(net.state_dict()) == 494
    assert adasam.detect(sd)
    assert adasam.kwargs_from_state_dict(sd) == {"img_size": 128, "patch_size": 8, "in_chans": 3,
                                                 "embed_dim": 768, "mlp_ratio": 4.0,
                                                 "qkv_bias": False}  # fmt: skip
    with torch.device("meta"):
        restormer = build_model("restormer")
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in restormer.state_dict().items()
    }

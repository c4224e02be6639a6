"""The field's released models: files in their release formats load with
``ramir.load_model`` alone and reproduce the upstream forward.

Each case of ``tests/data/official`` was recorded with the upstream code
(``make_official_vectors.py``): a small model of the family with seeded weights, an input
photo crop whose size needs padding, and the upstream output. Here the same weights are
written in the release's file format (BasicSR ``{'params': ...}`` or PromptIR's Lightning
checkpoint) with *garbage* in the stored buffers (SwinIR's ``attn_mask`` and
``relative_position_index``: they must be recomputed, never trusted), loaded with
``ramir.load_model`` and run through ``ramir.restore``.
"""

from __future__ import annotations

import argparse
import functools
import logging

import numpy as np
import pytest
import torch
from official_seeded import case_names, load_case, seeded_parameters

import ramir
from ramir.checkpoint import CheckpointError, infer_arch
from ramir.models import build_model, count_parameters

CASES = case_names()
RGB_CASES = [c for c in CASES if c not in ("swinir_gray_dn", "restormer_dual_pixel")]


def test_every_family_has_a_case():
    families = {load_case(c)[0]["family"] for c in CASES}
    assert families == {"nafnet", "swinir", "restormer", "promptir"}


def release_state_dict(layout: list[dict], seed: int) -> dict[str, torch.Tensor]:
    """The release's state dict: seeded parameters, garbage in every stored buffer."""
    params = seeded_parameters(layout, seed)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for entry in layout:
        if entry["kind"] == "parameter":
            sd[entry["name"]] = params[entry["name"]]
        elif entry["name"].endswith("relative_position_index"):
            sd[entry["name"]] = torch.randint(0, 3, entry["shape"], generator=g)
        else:
            sd[entry["name"]] = torch.randn(entry["shape"], generator=g) * 100
    return sd


@functools.cache
def _case_weights(case: str) -> dict[str, torch.Tensor]:
    """The release state dict of ``case``, made once per test session (read-only use)."""
    meta, layout, _ = load_case(case)
    return release_state_dict(layout, meta["seed"])


def write_release(tmp_path, case: str) -> tuple[dict, object]:
    """Write case ``case``'s weights as its release does; ``(meta, path)``."""
    meta, _, _ = load_case(case)
    sd = _case_weights(case)
    if meta["release"] == "lightning":
        path = tmp_path / "model.ckpt"
        obj = {
            "epoch": 149,
            "global_step": 123,
            "pytorch-lightning_version": "2.0.9",
            "state_dict": {f"net.{k}": v for k, v in sd.items()},
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 149}}}},
            "callbacks": {"ModelCheckpoint{}": {"best_model_score": None, "dirpath": "ckpt"}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": []}],
            "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 149}],
            # A pickled Python object, as Lightning's hyper-parameters are: not weights.
            "hyper_parameters": argparse.Namespace(lr=2e-4),
        }
    else:
        path = tmp_path / f"{case}.pth"
        obj = {"params": sd}
    torch.save(obj, path)
    return meta, path


@pytest.mark.parametrize("case", CASES)
def test_release_loads_and_matches_upstream_forward(tmp_path, case):
    meta, path = write_release(tmp_path, case)
    _, _, arrays = load_case(case)
    model = ramir.load_model(path, **meta["load_kwargs"])
    assert model.arch_name == meta["family"]
    assert count_parameters(model) == meta["parameters"]
    x, expected = torch.from_numpy(arrays["input"]), torch.from_numpy(arrays["output"])
    assert x.shape[-1] % 8 and x.shape[-2] % 8 or case == "restormer_dual_pixel"
    with torch.no_grad():
        got = model(model.normalization.normalize(x) if x.shape[1] == 3 else x)
    if x.shape[1] == 3:
        got = model.normalization.denormalize(got)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, atol=2e-5 * max(scale, 1.0), rtol=1e-4)


@pytest.mark.parametrize("case", RGB_CASES)
def test_ramir_restore_matches_upstream(tmp_path, case):
    """``ramir.restore`` (the path of ``ramir restore``) = the clamped upstream output."""
    meta, path = write_release(tmp_path, case)
    _, _, arrays = load_case(case)
    model = ramir.load_model(path, **meta["load_kwargs"])
    got = ramir.restore(model, torch.from_numpy(arrays["input"]))
    expected = torch.from_numpy(arrays["output"]).clamp(0, 1)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_gray_model_restores_rgb_photos_as_gray(tmp_path):
    meta, path = write_release(tmp_path, "swinir_gray_dn")
    _, _, arrays = load_case("swinir_gray_dn")
    model = ramir.load_model(path)
    gray = torch.from_numpy(arrays["input"])  # the upstream input: luma of a photo
    rgb = gray.expand(-1, 3, -1, -1)  # an RGB photo whose luma is that
    got = ramir.restore(model, rgb)
    expected = torch.from_numpy(arrays["output"]).clamp(0, 1)
    assert got.shape == rgb.shape
    for c in range(3):
        torch.testing.assert_close(got[:, c : c + 1], expected, atol=1e-4, rtol=0)
    direct = ramir.restore(model, gray)  # a gray tensor in: a gray tensor out
    torch.testing.assert_close(direct, expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="RGB"):
        ramir.restore(ramir.load_model(write_release(tmp_path, "swinir_color_dn")[1]), gray)


def test_dual_pixel_model_is_refused_by_restore_with_a_reason(tmp_path):
    _, path = write_release(tmp_path, "restormer_dual_pixel")
    model = ramir.load_model(path)
    assert (model.in_chans, model.out_chans) == (6, 3)
    with pytest.raises(ValueError, match="dual-pixel"):
        ramir.restore(model, torch.rand(1, 3, 24, 32))


@pytest.mark.parametrize("case", CASES)
def test_sizes_are_inferred_from_the_keys(case):
    meta, layout, _ = load_case(case)
    arch, kwargs = infer_arch(release_state_dict(layout, meta["seed"]))
    assert arch == meta["family"]
    upstream = meta["kwargs"]
    names = {
        "nafnet": ["img_channel", "width", "middle_blk_num", "enc_blk_nums", "dec_blk_nums"],
        "swinir": ["in_chans", "embed_dim", "depths", "num_heads", "window_size",
                   "img_range", "resi_connection", "img_size", "mlp_ratio"],
        "restormer": ["inp_channels", "out_channels", "dim", "num_blocks", "heads", "bias",
                      "num_refinement_blocks", "LayerNorm_type", "dual_pixel_task",
                      "ffn_expansion_factor"],
        "promptir": ["dim", "num_blocks", "num_refinement_blocks", "heads"],
    }[arch]  # fmt: skip
    for name in names:
        assert kwargs[name] == upstream[name], name
    assert kwargs["normalization"] == "none"  # releases take RGB in [0, 1]
    if arch == "nafnet":
        assert kwargs["padding"] == "zeros"  # as megvii's forward pads


def test_nafnet_local_statistics_are_an_option_that_matters(tmp_path):
    """Without ``local_stats`` the same file runs NAFNet's global statistics, and the
    output differs from the NAFNetLocal one recorded upstream."""
    meta, path = write_release(tmp_path, "nafnet_local")
    _, _, arrays = load_case("nafnet_local")
    x, local = torch.from_numpy(arrays["input"]), torch.from_numpy(arrays["output"])
    with torch.no_grad():
        plain = ramir.load_model(path)(x)
    assert (plain - local).abs().mean() > 1e-2


def test_ffn_factor_is_inferred_for_other_widths():
    """A Restormer whose hidden widths come from another factor (2.0 here)."""
    model = build_model("restormer", dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                        heads=[1, 1, 1, 1], ffn_expansion_factor=2.0)  # fmt: skip
    arch, kwargs = infer_arch(model.state_dict())
    rebuilt = build_model(arch, **kwargs)
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }


def test_release_sizes():
    """Parameter counts of the released configurations (built without memory)."""
    with torch.device("meta"):
        promptir = build_model("promptir")
        restormer = build_model("restormer")
        swinir = build_model("swinir")
        nafnet = build_model("nafnet", width=32, enc_blk_nums=[2, 2, 4, 8], middle_blk_num=12,
                             dec_blk_nums=[2, 2, 2, 2])  # fmt: skip
    assert count_parameters(promptir) == 35_592_263  # "35.59M"
    assert count_parameters(restormer) == 26_126_644  # "26.13M"
    assert count_parameters(swinir) == 11_504_163
    assert count_parameters(nafnet) == 29_159_715  # NAFNet-SIDD-width32


def test_lightning_file_notes_what_it_ignores(tmp_path, caplog):
    _, path = write_release(tmp_path, "promptir")
    with caplog.at_level(logging.INFO, logger="ramir.checkpoint"):
        ramir.load_model(path)
    text = caplog.text
    assert "optimizer_states" in text and "argparse.Namespace" in text


def test_superresolution_swinir_is_refused_with_a_reason():
    sd = {
        "conv_first.weight": torch.zeros(8, 3, 3, 3),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": torch.zeros(225, 2),
        "conv_before_upsample.0.weight": torch.zeros(64, 8, 3, 3),
    }
    with pytest.raises(ValueError, match="super-resolution"):
        infer_arch(sd)


def test_official_swinir_fine_tunes_with_ram(tmp_path):
    """RAM on a released backbone: masked pretraining steps from its weights, MAC, and
    fine-tuning of the selected layers only (the others stay bit-identical)."""
    from ramir.attribution import freeze_except, mask_attribution_conductance, select_layers
    from ramir.masking import random_mask

    _, path = write_release(tmp_path, "swinir_color_dn")
    model = ramir.load_model(path)
    _, _, arrays = load_case("swinir_color_dn")
    gt = torch.from_numpy(arrays["input"])[..., :32, :32]
    noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(0))
    lq = (gt + 0.1 * noise).clamp(0, 1)
    g = torch.Generator().manual_seed(1)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(2):  # masked pretraining: L1 on the hidden pixels
        mask = random_mask(32, 32, ratio=0.5, generator=g)
        hidden = mask[:, None].expand_as(gt)
        loss = (model(lq, mask) - gt).abs()[hidden.bool()].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = mask_attribution_conductance(model, lq, steps=4, generator=g)
    chosen = select_layers(scores, 0.3)
    assert 0 < len(chosen) < len(scores)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    freeze_except(model, chosen)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    loss = (model(lq) - gt).abs().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and {k.rsplit(".", 1)[0] for k in changed} <= set(chosen)
    assert np.isfinite(loss.item())


def test_tiled_restore_with_global_context(tmp_path):
    """Tiles work for every family; for NAFNet (global channel means) the whole image's
    statistics bring the tiles closer to the whole-image result than each tile's own."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()[100:196, 150:262].copy()).permute(2, 0, 1)[None]
    img = img.float() / 255
    for case in RGB_CASES:
        meta, path = write_release(tmp_path, case)
        model = ramir.load_model(path, **meta["load_kwargs"])
        tiled = ramir.restore(model, img, tile=48, tile_overlap=16)
        assert tiled.shape == img.shape and bool(torch.isfinite(tiled).all()), case
        if case == "nafnet_sidd_style":
            whole = ramir.restore(model, img)
            own = ramir.restore(model, img, tile=48, tile_overlap=16, global_context=False)
            assert (tiled - whole).abs().mean() < 0.8 * (own - whole).abs().mean()


def test_swinir_test_script_padding_option(tmp_path):
    """``padding='symmetric'`` reproduces SwinIR's main_test_swinir.py, which feeds the
    network the image with its flipped copy appended (a whole window when the size is
    already a multiple), instead of the network's own reflect padding."""
    meta, path = write_release(tmp_path, "swinir_color_dn")
    _, _, arrays = load_case("swinir_color_dn")
    upstream_forward = ramir.load_model(path)  # reflect: the recorded upstream forward
    script = ramir.load_model(path, padding="symmetric")
    x = torch.from_numpy(arrays["input"])[..., :32, :37]  # 32: already a multiple of 8
    h, w = x.shape[-2:]
    padded = torch.cat([x, x.flip(-2)], dim=-2)[..., : h + 8, :]
    padded = torch.cat([padded, padded.flip(-1)], dim=-1)[..., : w + 3]
    with torch.no_grad():
        expected = upstream_forward(padded)[..., :h, :w]
        got = script(x)
        other = upstream_forward(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert (other - got).abs().max() > 1e-3  # the two paddings differ at the border


def test_cli_restores_a_release_with_model_args(tmp_path):
    """``ramir restore --model FILE --model-arg local_stats=16`` runs NAFNetLocal's
    statistics (the recorded upstream output), and ``ramir info`` names the family."""
    from PIL import Image

    from ramir.cli import main
    from ramir.data.read import read_image

    meta, path = write_release(tmp_path, "nafnet_local")
    _, _, arrays = load_case("nafnet_local")
    pixels = np.clip(np.rint(arrays["input"][0].transpose(1, 2, 0) * 255), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "in.png")
    x = torch.from_numpy(pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    args = ["restore", str(tmp_path / "in.png"), "--model", str(path), "-o", str(tmp_path / "o")]
    assert main([*args, "--model-arg", "local_stats=16", "-q"]) == 0
    got = read_image(tmp_path / "o" / "in.png").rgb[None]
    with torch.no_grad():
        model = ramir.load_model(path, local_stats=16)
        expected = model(x).clamp(0, 1)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6
    assert main(["info", "--model", str(path), "--model-arg", "local_stats=16", "--json"]) == 0
    assert main([*args, "--model-arg", "local_stats"]) == 1  # not KEY=VALUE: one-line error


def test_a_release_pretrains_from_its_file_with_name_and_init_only(tmp_path):
    """``model: {name: swinir, init: FILE}``: the training loop builds the network the
    file implies (sizes, img_range, [0, 1] input) and starts from its weights."""
    from ramir.config import from_dict
    from ramir.data import build_mixture
    from ramir.data.config import DataConfig
    from ramir.training import train
    from ramir.training.config import TrainingConfig

    _, path = write_release(tmp_path, "swinir_color_car")
    cfg = from_dict(
        TrainingConfig,
        {
            "model": {"name": "swinir", "init": str(path)},
            "train": {"total_iter": 2, "batch_size": 2, "device": "cpu", "seed": 0,
                      "input": "masked"},
            "logging": {"tensorboard": False, "progress": False, "plot": False},
            "checkpoint": {"every": 100},
        },
        "<test>",
    )  # fmt: skip
    data = build_mixture(
        from_dict(DataConfig, {"datasets": [{"name": "p", "layout": "skimage_photos",
                  "degradation": "jpeg", "params": {"quality": 20}}], "patch_size": 28},
                  "<test>")
    )  # fmt: skip
    result = train(cfg, tmp_path / "run", dataset=data)
    trained = ramir.load_model(tmp_path / "run" / "model.safetensors")
    assert result.iteration == 2 and trained.arch_name == "swinir"
    assert trained.arch_kwargs["img_range"] == 255.0 and trained.window_size == 7
    assert trained.normalization.name == "none"


class _Payload:
    """Pickles as a call of ``os.system``: loading it must not run anything."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_release_with_pickled_code_is_refused_without_running_it(tmp_path):
    """A release file whose extra entry calls ``os.system`` (see tests/test_safe_unpickle.py
    for every pickle of both formats and every command)."""
    marker = tmp_path / "ran"
    meta, path = write_release(tmp_path, "restormer_biasfree")
    obj = torch.load(path, weights_only=True)
    obj["trainer_state"] = _Payload(marker)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="os.system|posix.system"):
        ramir.load_model(path)
    assert not marker.exists()

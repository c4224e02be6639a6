"""``ramir analyze`` and ``ramir dualmask`` end to end on a tiny NAFNet checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ramir.attribution import list_layers, load_mac, mask_attribution_conductance
from ramir.attribution.dualmask import dual_mask_predict
from ramir.attribution.selection import forward_order
from ramir.checkpoint import file_sha256, load_model, save_model
from ramir.cli import main
from ramir.data.write import write_image
from ramir.masking import random_mask
from ramir.models import build_model

SYNTHETIC7 = str(Path(__file__).resolve().parents[2] / "configs" / "data" / "synthetic7.yaml")


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("nafnet_tiny")
    with torch.no_grad():  # NAFNet zero-inits its residual scales; make every layer live
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.5)
    return save_model(model, tmp_path / "model.safetensors")


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    g = torch.Generator().manual_seed(1)
    for i in range(3):
        write_image(folder / f"img{i}.png", torch.rand(3, 20, 24, generator=g))
    return folder


def _config(tmp_path, checkpoint, image_folder, **extra) -> str:
    lines = [
        f"checkpoint: {checkpoint}",
        "steps: 4",
        "chunk: 3",
        "device: cpu",
        "images:",
        f"  folder: {image_folder}",
        "  count: 2",
        "  crop: 16",
    ] + [f"{k}: {v}" for k, v in extra.items()]
    path = tmp_path / "analyze.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_analyze_writes_mac_json_plot_and_config(tmp_path, checkpoint, image_folder, capsys):
    cfg = _config(tmp_path, checkpoint, image_folder)
    out = tmp_path / "out"
    assert main(["analyze", "-c", cfg, "--set", "select_ratio=0.2", "--out", str(out), "-q"]) == 0
    assert "layers scored" in capsys.readouterr().out
    result = load_mac(out / "mac.json")
    model = load_model(checkpoint)
    # in the order the forward pass runs them: NAFNet registers `ending` second, runs it last
    assert list(result.scores) == forward_order(
        model, list_layers(model), torch.zeros(1, 3, 64, 64)
    )
    assert list(result.scores)[-1] == "ending" and list_layers(model)[1] == "ending"
    assert result.method == "mac" and result.parameters["n_images"] == 2
    assert result.parameters["images"] == ["img0.png", "img1.png"]
    assert result.checkpoint["sha256"] == file_sha256(checkpoint)
    assert result.model["arch"] == "nafnet" and result.config["select_ratio"] == 0.2
    assert sum(v > 0 for v in result.scores.values()) > len(result.scores) // 2
    assert (out / "mac.png").stat().st_size > 0 and (out / "config.yaml").is_file()

    # the same numbers as the library, with the orders drawn from the seed in image order
    from ramir.data.read import read_image

    g = torch.Generator().manual_seed(0)
    expected = dict.fromkeys(result.scores, 0.0)
    for i in range(2):
        img = read_image(image_folder / f"img{i}.png").rgb[:, 2:18, 4:20]
        lq = model.normalization.normalize(img.unsqueeze(0))
        order = torch.randperm(256, generator=g).unsqueeze(0)
        for k, v in mask_attribution_conductance(model, lq, steps=4, order=order).items():
            expected[k] += v
    assert all(abs(result.scores[k] - expected[k]) <= 1e-5 * abs(expected[k]) for k in expected)


@pytest.mark.parametrize("method", ["mac", "ig"])
def test_batched_analysis_equals_one_image_and_one_step_per_forward(
    tmp_path, checkpoint, image_folder, method, monkeypatch
):
    """Images and path steps batched (3 images x 4 steps per forward, the last chunk 2
    steps) give the scores, ranking and selection of one input per forward."""
    from ramir.attribution import analysis
    from ramir.attribution.analysis import run_analysis
    from ramir.attribution.config import AnalyzeConfig
    from ramir.config import load_config

    name = {"mac": "mask_attribution_conductance", "ig": "integrated_gradients_conductance"}
    engine, calls = getattr(analysis, name[method]), []

    def spy(model, lq, **kwargs):
        calls.append((lq.shape[0], kwargs["chunk"]))
        return engine(model, lq, **kwargs)

    monkeypatch.setattr(analysis, name[method], spy)
    cfg = _config(tmp_path, checkpoint, image_folder)
    common = [f"method={method}", "steps=6", "images.count=3", "select_ratio=0.2"]
    runs = {}
    for batch, chunk in ((1, 1), (3, 4), (2, 6)):
        c = load_config(AnalyzeConfig, cfg, [*common, f"batch={batch}", f"chunk={chunk}"])
        runs[batch, chunk] = run_analysis(c, tmp_path / f"b{batch}c{chunk}", progress=False)
    # (images, path steps) per call: the images go in groups of `batch`
    assert calls == [(1, 1)] * 3 + [(3, 4)] + [(2, 6), (1, 6)]
    one = runs[1, 1]
    assert sum(v > 0 for v in one.scores.values()) > len(one.scores) // 2
    for key, got in runs.items():
        assert list(got.scores) == list(one.scores)
        assert all(abs(got.scores[k] - v) <= 1e-5 * abs(v) for k, v in one.scores.items()), key
        assert sorted(got.scores, key=got.scores.get) == sorted(one.scores, key=one.scores.get)
        assert got.selected == one.selected
        assert load_mac(got.mac_json).parameters["n_images"] == 3


def test_analyze_baselines_and_errors(tmp_path, checkpoint, image_folder, capsys):
    cfg = _config(tmp_path, checkpoint, image_folder)
    assert (
        main(["analyze", "-c", cfg, "--set", "method=ig", "--out", str(tmp_path / "ig"), "-q"]) == 0
    )
    assert load_mac(tmp_path / "ig" / "mac.json").method == "ig"
    assert main(["analyze", "-c", cfg, "--set", "method=random", "--out", str(tmp_path / "r")]) == 0
    rnd = load_mac(tmp_path / "r" / "mac.json")
    assert rnd.method == "random" and len(rnd.scores) == 51
    capsys.readouterr()
    assert main(["analyze", "-c", cfg, "--set", "stepz=3"]) == 1
    assert "unknown key 'stepz'" in capsys.readouterr().err
    assert (
        main(["analyze", "-c", cfg, "--set", "images.crop=64", "--out", str(tmp_path / "x")]) == 1
    )
    assert "smaller than the 64x64 analysis crop" in capsys.readouterr().err


def test_dual_mask_merge() -> None:
    class Echo(torch.nn.Module):
        def forward(self, lq, mask=None):
            return lq if mask is None else lq * (1 - mask.unsqueeze(1)) + 10 * mask.unsqueeze(1)

    lq = torch.randn(2, 3, 8, 8)
    mask = random_mask(8, 8, generator=torch.Generator().manual_seed(0))
    res = dual_mask_predict(Echo(), lq, mask)
    assert torch.equal(res.whole, lq)
    assert torch.equal(res.merged, torch.full_like(lq, 10.0))  # every pixel came from a hidden one


def test_dualmask_command(tmp_path, checkpoint, image_folder, capsys):
    out = tmp_path / "dm"
    args = ["dualmask", str(image_folder / "img0.png"), "--model", str(checkpoint)]
    assert main([*args, "--gt", str(image_folder / "img1.png"), "--out", str(out)]) == 0
    assert "dual-mask" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["convention"] == "ram"
    assert {"whole", "dualmask", "input", "whole_vs_dualmask"} <= set(metrics)
    for name in ("whole.png", "dualmask.png", "mask.png"):
        assert (out / name).stat().st_size > 0


def test_mixture_images_are_deterministic_crops_per_task() -> None:
    from ramir.attribution.analysis import load_analysis_images
    from ramir.attribution.config import AnalysisImages

    cfg = AnalysisImages(source="mixture", data=SYNTHETIC7, tasks=["noise", "jpeg"], count=2)
    a = load_analysis_images(cfg, seed=0)
    b = load_analysis_images(cfg, seed=0)
    c = load_analysis_images(cfg, seed=1)
    assert [n.split("/")[0] for n, _ in a] == ["noise", "noise", "jpeg", "jpeg"]
    assert all(x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 1 for _, x in a)
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])  # the noise is drawn from the seed
    with pytest.raises(ValueError, match="unknown dataset"):
        load_analysis_images(AnalysisImages(source="mixture", data=SYNTHETIC7, tasks=["fog"]))


def test_mixture_images_root_dir_points_at_the_datasets(tmp_path) -> None:
    """images.root_dir replaces the data config's root_dir (the paper configs need it)."""
    import numpy as np
    from PIL import Image

    from ramir.attribution.analysis import load_analysis_images
    from ramir.attribution.config import AnalysisImages

    (tmp_path / "data" / "clean").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((80, 80, 3), 40 * i, np.uint8)).save(
            tmp_path / "data" / "clean" / f"{i}.png"
        )
    cfg_file = tmp_path / "d.yaml"
    cfg_file.write_text(
        "root_dir: /nowhere\n"
        "datasets:\n  - {name: noise, layout: clean_folder, root: clean, degradation: "
        "gaussian_noise}\n",
        encoding="utf-8",
    )
    with pytest.raises((FileNotFoundError, ValueError)):
        load_analysis_images(AnalysisImages(source="mixture", data=str(cfg_file)), seed=0)
    cfg = AnalysisImages(source="mixture", data=str(cfg_file), root_dir=str(tmp_path / "data"))
    assert [n for n, _ in load_analysis_images(cfg, seed=0)] == ["noise/0.png", "noise/1.png"]

"""The CUDA paths: backbones, training precisions, restoration, MAC and the demo on a GPU.

Marked ``gpu`` (deselected by default; CI has no GPU). Run them on a CUDA machine with
``python -m pytest -m gpu tests/test_gpu.py``. Each compares the GPU result with the CPU
one computed here, with TF32 off where the comparison is exact up to rounding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import data as skdata

from ramir.cli import main
from ramir.demo import DEFAULT_BACKBONE_ARGS
from ramir.models import build_model, resolve_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# the demo's small backbones, with an even smaller NAFNet
SMALL = {**DEFAULT_BACKBONE_ARGS, "nafnet": resolve_model("nafnet_tiny")[1]}


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _photo(size: int = 64) -> torch.Tensor:
    """``(1, 3, size, size)`` in [0, 1]: a crop of the astronaut photo."""
    img = skdata.astronaut()[100 : 100 + size, 180 : 180 + size]
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_backbone_forward_and_gradients_match_cpu(name, no_tf32):
    torch.manual_seed(0)
    model = build_model(name, **SMALL[name]).eval()
    x = _photo(64)
    ref = model(x)
    ref.abs().mean().backward()
    ref_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    model.cuda()
    out = model(x.cuda())
    out.abs().mean().backward()
    grads = [p.grad.cpu() for p in model.parameters() if p.grad is not None]
    assert out.shape == ref.shape
    assert torch.linalg.norm(out.cpu() - ref) / torch.linalg.norm(ref) < 1e-4
    num = sum(float(torch.linalg.norm(g - r)) for g, r in zip(grads, ref_grads, strict=True))
    den = sum(float(torch.linalg.norm(r)) for r in ref_grads)
    assert num / den < 1e-3


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_learns_and_saves_cpu_loadable_weights(tmp_path, precision):
    from ramir.checkpoint import load_model, resolve_weights_path
    from ramir.config import from_dict
    from ramir.training.config import TrainingConfig
    from ramir.training.loop import train

    cfg = from_dict(
        TrainingConfig,
        {
            "model": {"name": "nafnet_tiny"},
            "data": {
                "patch_size": 32,
                "identity": True,
                "seed": 0,
                "datasets": [
                    {"name": "noise", "layout": "skimage_photos", "degradation": "gaussian_noise",
                     "params": {"sigma": 25}},
                ],
            },
            "train": {"total_iter": 60, "batch_size": 8, "device": "cuda",
                      "precision": precision, "num_workers": 2, "seed": 0},
            "optim": {"type": "Adam", "lr": 2e-3, "betas": [0.9, 0.99]},
            "schedule": {"warmup_iter": 0, "eta_min": 1e-4},
            "logging": {"log_every": 10, "tensorboard": False, "progress": False, "plot": False},
            "checkpoint": {"every": 30, "keep_last": 1},
        },
        "<gpu test>",
    )  # fmt: skip
    train(cfg, tmp_path)
    records = [
        json.loads(line)
        for line in (tmp_path / "log.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    losses = [r["loss"] for r in records if r.get("kind") == "train"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    model = load_model(resolve_weights_path(tmp_path, "ema"))
    assert next(model.parameters()).device.type == "cpu"


def test_restore_on_cuda_matches_cpu(no_tf32):
    from ramir.checkpoint import load_model
    from ramir.inference.restore import default_model_path, restore_tensor

    model = load_model(default_model_path())
    x = _photo(96)
    ref = restore_tensor(model, x, device="cpu")
    out = restore_tensor(model, x, device="cuda")
    assert out.device.type == "cpu" and out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-4
    tiled = restore_tensor(model, x.cuda(), device="cuda", tile=64, tile_overlap=16)
    assert tiled.device.type == "cuda"
    assert (tiled.cpu() - ref).abs().mean() < 1e-2
    half = restore_tensor(model, x, device="cuda", half=True)
    assert (half - ref).abs().mean() < 5e-3
    flip = restore_tensor(model, x, device="cuda", ensemble="flip")
    assert (flip - restore_tensor(model, x, device="cpu", ensemble="flip")).abs().max() < 1e-4


def test_mac_on_cuda_matches_cpu(no_tf32):
    from ramir.attribution.mac import mask_attribution_conductance

    torch.manual_seed(0)
    model = build_model("nafnet_tiny")
    lq = _photo(32)
    order = torch.stack([torch.randperm(32 * 32, generator=torch.Generator().manual_seed(0))])
    ref = mask_attribution_conductance(model, lq, steps=8, order=order)
    out = mask_attribution_conductance(model.cuda(), lq.cuda(), steps=8, order=order.cuda())
    assert out.keys() == ref.keys()
    a = np.array([ref[k] for k in ref])
    b = np.array([out[k] for k in ref])
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-3


def test_tiny_demo_on_cuda_with_workers(tmp_path):
    out = tmp_path / "demo"
    args = [
        "demo", "--steps", "20", "--out", str(out), "--device", "cuda",
        "--set", "backbone_args={width: 8, enc_blk_nums: [1, 1], dec_blk_nums: [1, 1]}",
        "--set", "eval_crop=64", "--set", "analysis_steps=4", "--set", "analysis_images=1",
        "--set", "batch_size=8", "--set", "patch_size=32",
        "--set", "num_workers=2", "--set", "epoch_length=400",
    ]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cuda"
    assert set(results["table"]) >= {"baseline", "RAM (MAC)"}
    for name in ("report.md", "report.html", "mac.png", "before_after.png"):
        assert (out / name).stat().st_size > 0


def test_batched_restoration_on_cuda_matches_one_tile_at_a_time(no_tf32, tmp_path):
    """Batches of tiles (8 and auto) and of whole images equal one at a time; auto picks
    a batch above 1 on a GPU; restore_files with reader/writer threads writes what the
    CPU writes (to an 8-bit level)."""
    from ramir.checkpoint import load_model
    from ramir.data.read import read_image
    from ramir.data.write import write_image
    from ramir.inference.batch import restore_files
    from ramir.inference.batching import apply_in_batches
    from ramir.inference.restore import default_model_path, restore_tensor

    model = load_model(default_model_path()).cuda()
    x = _photo(256)
    kw = dict(device="cuda", tile=64, tile_overlap=16)
    one = restore_tensor(model, x, batch_size=1, **kw)
    for bs in (8, "auto"):
        assert (restore_tensor(model, x, batch_size=bs, **kw) - one).abs().max() < 1e-4
    xs = torch.cat([x, x.flip(-1), x.flip(-2)])
    each = torch.cat([restore_tensor(model, xs[i : i + 1], device="cuda") for i in range(3)])
    assert (restore_tensor(model, xs, device="cuda", batch_size="auto") - each).abs().max() < 1e-4
    parts = [xs[i : i + 1].cuda() for i in range(3)] * 4
    with torch.inference_mode():
        size = apply_in_batches(model, 12, parts.__getitem__, lambda j, o: None,
                                batch_size="auto", device="cuda")  # fmt: skip
    assert size > 1
    for i in range(4):
        write_image(tmp_path / "in" / f"{i}.png", xs[i % 3])
    gpu = restore_files(model, [tmp_path / "in"], tmp_path / "gpu", device="cuda",
                        progress=False, batch_size="auto")  # fmt: skip
    cpu = restore_files(model.cpu(), [tmp_path / "in"], tmp_path / "cpu", device="cpu",
                        progress=False, batch_size=1)  # fmt: skip
    assert gpu.ok and cpu.ok and len(gpu.written) == 4
    for i in range(4):
        a, b = read_image(tmp_path / "gpu" / f"{i}.png"), read_image(tmp_path / "cpu" / f"{i}.png")
        assert (a.rgb - b.rgb).abs().max() <= 1.01 / 255

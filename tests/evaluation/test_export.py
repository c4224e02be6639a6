"""ONNX export with dynamic sizes, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramir.cli import main
from ramir.models import build_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})[0]


def test_cli_export_tiny_swinir_is_dynamic(tmp_path, tiny_swinir, tiny_swinir_ckpt, capsys):
    out = tmp_path / "m.onnx"
    assert (
        main(["export", "--model", str(tiny_swinir_ckpt), "-o", str(out), "--size", "40", "48"])
        == 0
    )
    text = capsys.readouterr().out
    assert "max abs difference" in text and "40x48" in text
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["arch"] == "ram_swinir" and props["normalization"] == "imagenet"
    import ramir

    for h, w in [(24, 72), (57, 33)]:  # sizes other than the traced one, unpadded
        x = torch.rand(1, 3, h, w)
        got = _run(out, x)
        assert got.shape == (1, 3, h, w)
        np.testing.assert_allclose(got, ramir.restore(tiny_swinir, x).numpy(), atol=1e-4)


def test_export_nafnet_and_raw_mode(tmp_path):
    from ramir.inference.export import export_onnx

    torch.manual_seed(0)
    model = build_model("nafnet_tiny")
    res = export_onnx(model, tmp_path / "n.onnx", example_size=(32, 32))
    assert len(res.checked) == 2 and res.max_abs_diff < 1e-4, res.checked
    raw = export_onnx(model, tmp_path / "raw.onnx", example_size=(32, 32), pre_post=False)
    assert raw.max_abs_diff < 1e-4, raw.checked


@pytest.mark.slow
def test_export_tiny_promptir(tmp_path):
    from ramir.inference.export import export_onnx

    torch.manual_seed(0)
    model = build_model("ram_promptir_tiny")
    res = export_onnx(model, tmp_path / "p.onnx", example_size=(32, 32))
    assert res.max_abs_diff < 1e-4, res.checked

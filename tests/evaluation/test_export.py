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


# ------------------------------------------------- RAM++ RestormerRFR: DINOv2 features as inputs


def test_cli_export_rfr_with_dino_takes_the_features_as_inputs(
    tmp_path, tiny_rfr_release, tiny_dino_dir, capsys
):
    """``ramir export --model RestormerRFR.pth --dino DIR``: the graph takes ``image`` and
    the six DINOv2 maps; fed by ``onnx_inputs`` it equals ``ramir.restore`` with the DINOv2
    at sizes other than the traced one (one not a multiple of 16)."""
    import ramir
    from ramir.inference.export import onnx_inputs
    from ramir.models.restormer_rfr import FEATURE_NAMES

    out = tmp_path / "rfr.onnx"
    argv = ["export", "--model", str(tiny_rfr_release), "--dino", str(tiny_dino_dir)]
    assert main([*argv, "-o", str(out), "--size", "32", "48"]) == 0
    text = capsys.readouterr().out
    assert "inputs: image, shallow_feat1, mid_feat1" in text and "random" not in text
    proto = onnx.load(str(out))
    assert [i.name for i in proto.graph.input] == ["image", *FEATURE_NAMES]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["arch"] == "restormer_rfr" and "onnx_inputs" in props["dino_features"]

    model = ramir.load_model(tiny_rfr_release, dino=str(tiny_dino_dir))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for h, w in [(40, 36), (27, 53)]:
        x = torch.rand(1, 3, h, w, generator=g)
        feeds = onnx_inputs(model, x)
        assert feeds["deep_feat2"].shape == (1, 16, -(-h // 16) * 2, -(-w // 16) * 2)
        got = session.run(None, feeds)[0]
        np.testing.assert_allclose(got, ramir.restore(model, x).numpy(), atol=1e-4)


def test_export_rfr_without_dino_checks_on_stand_ins_and_onnx_inputs_asks_for_it(
    tmp_path, tiny_rfr_release
):
    import ramir
    from ramir.errors import UsageError
    from ramir.inference.export import export_onnx, onnx_inputs

    model = ramir.load_model(tiny_rfr_release)
    res = export_onnx(model, tmp_path / "rfr.onnx", example_size=(32, 32))
    assert res.check_features == "random" and len(res.inputs) == 7
    assert len(res.checked) == 2 and res.max_abs_diff < 1e-4, res.checked
    raw = export_onnx(model, tmp_path / "raw.onnx", example_size=(32, 32), pre_post=False)
    assert raw.max_abs_diff < 1e-4, raw.checked
    with pytest.raises(UsageError, match="DINOv2 features.*--dino DIR"):
        onnx_inputs(model, torch.rand(1, 3, 32, 32))
    with pytest.raises(UsageError, match="--dino DIR"):  # nor can it restore without one
        ramir.restore(model, torch.rand(3, 32, 32))

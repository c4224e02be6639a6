"""``ramir pretrain`` / ``train`` / ``finetune`` on the synthetic 7-task set (tiny, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ramir.checkpoint import list_checkpoints
from ramir.cli import main
from ramir.training.runlog import read_log

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cpu"
FAST = [
    "train.total_iter=4",
    "train.batch_size=2",
    "data.patch_size=16",
    "model.args.img_size=16",
    "checkpoint.every=2",
    "logging.log_every=2",
    "logging.image_every=2",
    "val.every=4",
    "val.max_images=1",
    "val.crop=32",
    "val.sets=[noise_s25]",
]


def test_pretrain_then_train_then_finetune_from_the_command_line(tmp_path, capsys):
    pre = tmp_path / "pre"
    args = ["pretrain", "-c", str(CONFIGS / "pretrain.yaml"), "--out", str(pre), "--device", "cpu"]
    assert main([*args, "-q", "--set", *FAST]) == 0
    assert "4 iterations" in capsys.readouterr().out
    for name in ("model.safetensors", "model_ema.safetensors", "training_curve.png", "config.yaml"):
        assert (pre / name).is_file(), name
    assert any((pre / "tb").iterdir())
    val = [r for r in read_log(pre) if r["kind"] == "val"]
    assert len(val) == 1 and val[0]["iter"] == 4 and "psnr/noise_s25" in val[0]
    assert [c.name for c in list_checkpoints(pre)] == ["iter_00000002", "iter_00000004"]

    # a second call resumes (nothing left to do) and --no-resume refuses the used folder
    assert main([*args, "-q", "--set", *FAST]) == 0
    assert main([*args, "-q", "--no-resume", "--set", *FAST]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err

    # `ramir train` refuses a masked recipe, and runs the whole-image one
    assert main(["train", "-c", str(CONFIGS / "pretrain.yaml"), "--out", str(tmp_path / "x")]) == 1
    assert "train.input" in capsys.readouterr().err
    base = ["train", "-c", str(CONFIGS / "train.yaml"), "--out", str(tmp_path / "base")]
    assert main([*base, "-q", "--device", "cpu", "--set", *FAST]) == 0

    # fine-tune two named layers of the pretrained model, from its EMA weights
    layers = ["conv_first", "conv_last"]
    ft = tmp_path / "ft"
    code = main(
        [
            "finetune",
            "-c",
            str(CONFIGS / "finetune.yaml"),
            "--out",
            str(ft),
            "-q",
            "--device",
            "cpu",
            "--set",
            *FAST,
            f"model.init={pre}",
            "select.mac=null",
            f"select.layers={json.dumps(layers)}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "fine-tuning 2 layer(s)" in out
    assert (ft / "model.safetensors").is_file()


def test_a_bad_override_is_reported_with_its_key(capsys):
    code = main(["pretrain", "-c", str(CONFIGS / "pretrain.yaml"), "--set", "train.nope=1"])
    assert code == 1
    assert "train.nope" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "train", "finetune"])
def test_help_mentions_the_outputs(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--out" in capsys.readouterr().out

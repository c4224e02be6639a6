"""Training configs: strict errors that name the key; every shipped recipe loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ramir.config import ConfigError
from ramir.models import build_model, count_parameters
from ramir.training.config import FinetuneConfig, TrainingConfig, load_training_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.totl_iter=5", "train.totl_iter"),
        ("train.batch_size=many", "train.batch_size"),
        ("train.mask.ratio=1.5", "train.mask.ratio"),
        ("optim.type=SGD", "optim.type"),
        ("train.input=noisy", "train.input"),
        ("ema.decay=1.0", "ema.decay"),
        ("schedule.warmup_iter=-1", "schedule.warmup_iter"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last"),
        ("val.sets=[nope]", "val.sets"),
    ],
)
def test_a_config_error_names_the_key_and_the_file(override, key):
    path = CONFIGS / "cpu" / "pretrain.yaml"
    with pytest.raises(ConfigError) as err:
        load_training_config(path, [override])
    assert key in str(err.value) and "pretrain.yaml" in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        "optim.lr",
        "optim.weight_decay",
        "optim.eps",
        "train.grad_clip",
        "train.dist_timeout_s",
        "schedule.eta_min",
        "ema.decay",
        "train.mask.ratio",
    ],
)
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_float_hyperparameters_must_be_finite(key, value):
    with pytest.raises(ConfigError) as err:  # `lr: .inf` used to pass `lr > 0`
        load_training_config(CONFIGS / "cpu" / "pretrain.yaml", [f"{key}={value}"])
    shown = {".inf": "inf", "-.inf": "-inf", ".nan": "nan"}[value]
    assert f"key '{key}': must be a finite number, got {shown}" in str(err.value)
    assert "pretrain.yaml" in str(err.value)


def test_float_hyperparameters_built_in_python_must_be_finite():
    import math

    from ramir.training.config import OptimSection, TrainSection

    with pytest.raises(ValueError, match="key 'optim.lr' must be a finite number, got inf"):
        OptimSection(lr=math.inf)
    with pytest.raises(ValueError, match=r"key 'optim.betas' must be a finite number"):
        OptimSection(betas=(0.9, math.nan))
    with pytest.raises(ValueError, match="key 'train.grad_clip' must be a finite number"):
        TrainSection(grad_clip=math.inf)
    with pytest.raises(ConfigError, match=r"key 'optim.betas\[1\]': must be a finite number"):
        load_training_config(None, ["optim.betas=[0.9, .inf]"])


def test_masked_loss_needs_a_masked_input():
    with pytest.raises(ConfigError, match="train.loss"):
        load_training_config(None, ["train.loss=masked_l1", "train.input=whole"])


def test_psnr_loss_needs_a_whole_input():
    with pytest.raises(ConfigError, match="whole images"):
        load_training_config(None, ["train.loss=psnr", "train.input=masked"])
    assert load_training_config(None, ["train.loss=psnr", "train.input=whole"]).train.loss == "psnr"


def test_select_is_only_valid_for_finetuning(tmp_path):
    with pytest.raises(ConfigError, match="select"):
        load_training_config(CONFIGS / "cpu" / "finetune.yaml")
    cfg = load_training_config(CONFIGS / "cpu" / "finetune.yaml", schema=FinetuneConfig)
    assert cfg.select.ratio == 0.3 and cfg.train.model_mode == "eval"


def test_data_config_includes_a_data_recipe_and_overrides_apply_on_top(tmp_path):
    cfg = load_training_config(CONFIGS / "cpu" / "pretrain.yaml", ["data.patch_size=48"])
    assert cfg.data.patch_size == 48 and len(cfg.data.datasets) == 7 and cfg.data.identity
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_config: missing.yaml\n")
    with pytest.raises(ConfigError, match="data_config"):
        load_training_config(bad)


@pytest.mark.parametrize(
    "name",
    [
        "cpu/pretrain.yaml",
        "cpu/train.yaml",
        "paper/ram_swinir_pretrain.yaml",
        "paper/ram_promptir_pretrain.yaml",
    ],
)
def test_training_recipes_load(name):
    cfg = load_training_config(CONFIGS / name)
    assert isinstance(cfg, TrainingConfig)
    assert cfg.train.input == ("whole" if name == "cpu/train.yaml" else "masked")


@pytest.mark.parametrize("name", ["ram_swinir", "ram_promptir"])
def test_paper_recipes_follow_the_reference_schedules(name):
    pre = load_training_config(CONFIGS / "paper" / f"{name}_pretrain.yaml")
    ft = load_training_config(CONFIGS / "paper" / f"{name}_finetune.yaml", schema=FinetuneConfig)
    assert pre.optim.type == ft.optim.type == "Adam"
    assert pre.optim.betas == ft.optim.betas == (0.9, 0.99)
    assert pre.train.mask.ratio == 0.5 and pre.train.mask.patch_size == 1 and pre.train.mask.shared
    assert pre.ema.decay == 0.995 and pre.data.hflip
    if name == "ram_swinir":
        assert (pre.optim.lr, pre.schedule.eta_min, pre.train.total_iter) == (1e-4, 6e-5, 400_000)
        assert (pre.train.batch_size, pre.data.patch_size) == (12, 64)
        assert ft.select.ratio == 0.1
    else:
        assert (pre.optim.lr, pre.schedule.eta_min, pre.schedule.warmup_iter) == (
            2e-4,
            1e-6,
            40_000,
        )
        assert (pre.train.batch_size, pre.data.patch_size) == (4, 128)
        assert ft.select.ratio == 0.3
    assert (ft.optim.lr, ft.schedule.eta_min, ft.train.total_iter) == (2e-4, 1e-7, 160_000)
    assert (ft.schedule.warmup_iter, ft.train.batch_size, ft.train.input) == (4000, 4, "whole")
    assert ft.train.model_mode == "eval" and ft.model.name == pre.model.name
    # parameter counts: docs/method.md#backbones
    expected = {"ram_swinir": 11_512_131, "ram_promptir": 35_376_967}[name]
    assert count_parameters(build_model(pre.model.name, **pre.model.args)) == expected


@pytest.mark.parametrize("name", ["ram_swinir", "ram_promptir"])
def test_paper_analysis_configs_follow_the_release(name):
    """The paper's MAC analysis: 10 images of each of the 7 tasks, 64x64 crops, 200 steps
    from 50% revealed, k = 1e4, the raw (not EMA) pretrained weights, as the release; the
    fine-tuning config reads its mac.json and also starts from the raw weights."""
    from ramir.attribution.config import AnalyzeConfig
    from ramir.config import load_config

    cfg = load_config(AnalyzeConfig, CONFIGS / "paper" / f"{name}_analyze.yaml",
                      ["images.root_dir=/datasets"])  # fmt: skip
    assert (cfg.images.source, cfg.images.count, cfg.images.crop) == ("mixture", 10, 64)
    assert (cfg.steps, cfg.start_ratio, cfg.sharpness, cfg.method) == (200, 0.5, 1e4, "mac")
    assert cfg.weights == "model" and cfg.checkpoint == f"runs/{name}_pretrain"
    assert cfg.images.data == "configs/data/7task.yaml" and cfg.images.root_dir == "/datasets"
    ft = load_training_config(CONFIGS / "paper" / f"{name}_finetune.yaml", schema=FinetuneConfig)
    assert ft.select.mac == f"{cfg.out_dir}/mac.json" and ft.model.init_weights == "model"

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from ramir.config import (
    FINITE,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    load_yaml,
    save_config,
)


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    kind: Literal["adam", "adamw"] = "adam"


@dataclass
class Train:
    total_iter: int = 100
    optim: Optim = field(default_factory=Optim)
    ema: float | None = 0.995


@dataclass
class Experiment:
    name: str = "exp"
    train: Train = field(default_factory=Train)
    tags: list[str] = field(default_factory=list)


def test_defaults_and_nested_values():
    cfg = from_dict(Experiment, {"train": {"optim": {"lr": 2e-4, "betas": [0.9, 0.999]}}})
    assert cfg.train.optim.lr == 2e-4
    assert cfg.train.optim.betas == (0.9, 0.999)
    assert cfg.train.total_iter == 100


def test_unknown_key_names_key_and_file():
    with pytest.raises(ConfigError, match=r"x\.yaml: unknown key 'train\.lrr'.*valid keys"):
        from_dict(Experiment, {"train": {"lrr": 1}}, "x.yaml")


@pytest.mark.parametrize(
    "data,match",
    [
        ({"train": {"total_iter": 1.5}}, "train.total_iter': expected int"),
        ({"train": {"total_iter": True}}, "train.total_iter': expected int"),
        ({"train": {"optim": {"kind": "sgd"}}}, "must be one of 'adam', 'adamw'"),
        ({"tags": "a"}, "tags'"),
        ({"train": 3}, "expected a mapping"),
        ({"train": {"optim": {"betas": [0.9]}}}, "expected 2 items"),
    ],
)
def test_wrong_types(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(Experiment, data, "f.yaml")


def test_floats_must_be_finite_unless_the_field_allows_it():
    for data, key in (
        ({"train": {"optim": {"lr": float("inf")}}}, "train.optim.lr"),
        ({"train": {"optim": {"betas": [0.9, float("nan")]}}}, r"train.optim.betas\[1\]"),
        ({"train": {"ema": float("-inf")}}, "train.ema"),  # float | None
    ):
        with pytest.raises(ConfigError, match=f"f.yaml: key '{key}'.*must be a finite number"):
            from_dict(Experiment, data, "f.yaml")

    @dataclass
    class Limits:
        timeout: float = field(default=60.0, metadata={FINITE: False})
        rate: float = 1.0

    assert from_dict(Limits, {"timeout": float("inf")}).timeout == float("inf")
    with pytest.raises(ConfigError, match="key 'rate': must be a finite number, got inf"):
        from_dict(Limits, {"rate": float("inf")})


def test_optional_and_int_for_float():
    cfg = from_dict(Experiment, {"train": {"ema": None, "optim": {"lr": 1}}})
    assert cfg.train.ema is None
    assert cfg.train.optim.lr == 1.0 and isinstance(cfg.train.optim.lr, float)


def test_base_includes_relative_to_including_file(tmp_path):
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "base.yaml").write_text(
        "name: base\ntrain:\n  total_iter: 10\n  optim:\n    lr: 0.001\n"
    )
    (tmp_path / "exp.yaml").write_text(
        "base: common/base.yaml\ntrain:\n  optim:\n    kind: adamw\n"
    )
    cfg = load_config(Experiment, tmp_path / "exp.yaml")
    assert cfg.name == "base"
    assert cfg.train.total_iter == 10
    assert cfg.train.optim.lr == 0.001 and cfg.train.optim.kind == "adamw"


def test_circular_base_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_yaml(tmp_path / "a.yaml")


def test_missing_base_names_the_including_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"nope\.yaml.*included from"):
        load_yaml(tmp_path / "a.yaml")


def test_overrides():
    cfg = load_config(
        Experiment, None, ["train.optim.lr=2e-4", "train.total_iter=5", "tags=[a, b]", "name=z"]
    )
    assert cfg.train.optim.lr == 2e-4
    assert cfg.train.total_iter == 5
    assert cfg.tags == ["a", "b"]
    assert cfg.name == "z"
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        load_config(Experiment, None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="must look like"):
        apply_overrides({}, ["novalue"])


def test_save_round_trip(tmp_path):
    cfg = load_config(Experiment, None, ["train.optim.betas=[0.8, 0.9]"])
    path = save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(Experiment, path) == cfg


def test_a_base_files_data_config_is_relative_to_the_base_file(tmp_path, monkeypatch):
    """`base: /abs/configs/cpu/pretrain.yaml` from another folder: the base's own
    `data_config: ../data/synthetic7.yaml` is found next to the base, not the child."""
    from ramir.training.config import load_training_config

    repo = Path(__file__).resolve().parents[1]
    child = tmp_path / "elsewhere" / "mine.yaml"
    child.parent.mkdir()
    child.write_text(f"base: {repo / 'configs' / 'cpu' / 'pretrain.yaml'}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = load_training_config(child)
    assert [d.name for d in cfg.data.datasets][:2] == ["haze", "rain"]


@dataclass
class Crop:
    size: int = 64


@dataclass
class WithUnions:
    crop: Crop | None = None
    tasks: list[str] | None = None
    mode: Literal["auto"] | int = "auto"
    ema: float | None = None


def test_union_errors_say_why_each_alternative_failed():
    with pytest.raises(ConfigError) as info:
        from_dict(WithUnions, {"crop": {"sise": 3}}, "x.yaml")
    assert str(info.value) == (
        "x.yaml: key 'crop': expected Crop | null, got dict {'sise': 3}; "
        "as Crop: unknown key 'crop.sise' in section 'crop'; valid keys: size"
    )
    with pytest.raises(
        ConfigError, match=r"as list\[str\]: key 'tasks\[1\]': expected str, got int 3$"
    ):
        from_dict(WithUnions, {"tasks": ["rain", 3]})
    with pytest.raises(ConfigError) as info:
        from_dict(WithUnions, {"mode": "fast"})
    message = str(info.value)
    assert "got str 'fast'; as Literal['auto']: key 'mode': must be one of 'auto'" in message
    assert "as int" not in message  # a plain type mismatch adds nothing
    # a plain mismatch of every alternative keeps the short message
    with pytest.raises(ConfigError) as info:
        from_dict(WithUnions, {"ema": "high"})
    assert str(info.value) == "<config>: key 'ema': expected float | null, got str 'high'"
    assert from_dict(WithUnions, {"crop": {"size": 8}, "mode": 3}).crop == Crop(8)

"""Checkpoint layout (and folders of earlier versions), warnings through ``logging``, and
the data stream's finiteness check."""

from __future__ import annotations

import logging

import pytest
import torch
from training_helpers import ToyPairs, make_config

from ramir.attribution import list_layers, save_mac
from ramir.checkpoint import (
    EMA_FILE,
    LEGACY_EMA_FILE,
    MODEL_FILE,
    list_checkpoints,
    resolve_weights_path,
)
from ramir.config import from_dict, to_dict
from ramir.data.datasets import DatasetError
from ramir.models import build_model
from ramir.training import FinetuneConfig, selected_layers, train
from ramir.training.checkpoint import load_training_state
from ramir.training.runlog import read_log


class Crash(Exception):
    pass


def _crash_at(k):
    def hook(iteration):
        if iteration == k:
            raise Crash

    return hook


def _losses(run_dir):
    return {r["iter"]: r["loss"] for r in read_log(run_dir) if r["kind"] == "train"}


def test_checkpoint_folders_name_their_weights_like_the_run_folder(tmp_path):
    cfg = make_config(train={"total_iter": 3}, ema={"decay": 0.5})
    train(cfg, tmp_path, dataset=ToyPairs(n=12))
    ckpt = list_checkpoints(tmp_path)[-1]
    assert sorted(p.name for p in ckpt.glob("*.safetensors")) == [MODEL_FILE, EMA_FILE]
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [MODEL_FILE, EMA_FILE]
    assert resolve_weights_path(ckpt, "ema") == ckpt / EMA_FILE
    assert resolve_weights_path(ckpt, "model") == ckpt / MODEL_FILE
    state = load_training_state(ckpt)
    assert "epoch" not in state and state["position"]["epoch"] == 1  # stored once: 3 it/epoch


def test_an_old_checkpoint_folder_resumes_exactly(tmp_path):
    """Checkpoints written before the EMA file took the run folder's name
    (``ema.safetensors``) and with the epoch stored twice (``state["epoch"]``)."""
    cfg = make_config(
        train={"total_iter": 7, "input": "masked"},
        ema={"decay": 0.9},
        checkpoint={"every": 3, "keep_last": 5},
    )
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = train(cfg, whole, dataset=ToyPairs(n=12))
    with pytest.raises(Crash):
        train(cfg, broken, dataset=ToyPairs(n=12), on_step=_crash_at(5))
    ckpt = list_checkpoints(broken)[-1]
    assert ckpt.name == "iter_00000003"
    (ckpt / EMA_FILE).rename(ckpt / LEGACY_EMA_FILE)
    state = load_training_state(ckpt)
    state["epoch"] = 0  # the old duplicate (the epoch of the last batch)
    torch.save(state, ckpt / "state.pt")
    assert resolve_weights_path(ckpt, "ema") == ckpt / LEGACY_EMA_FILE
    assert resolve_weights_path(ckpt, "model") == ckpt / MODEL_FILE
    (broken / EMA_FILE).unlink(missing_ok=True)
    assert resolve_weights_path(broken, "ema") == ckpt / LEGACY_EMA_FILE

    resumed = train(cfg, broken, dataset=ToyPairs(n=12))
    assert _losses(broken) == _losses(whole)
    for a, b in zip(ref.ema_model.parameters(), resumed.ema_model.parameters(), strict=True):
        assert torch.equal(a, b)  # the EMA came from ema.safetensors, not model.safetensors
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_resuming_with_another_batch_size_is_a_logged_warning(tmp_path, caplog):
    train(make_config(train={"total_iter": 3}), tmp_path, dataset=ToyPairs(n=12))
    bigger = make_config(train={"total_iter": 4, "batch_size": 6})
    with caplog.at_level(logging.WARNING, logger="ramir.training.checkpoint"):
        assert train(bigger, tmp_path, dataset=ToyPairs(n=12)).iteration == 4
    assert "(batch 4 x 1 processes) with batch 6 x 1" in caplog.text
    assert "changed settings: train.batch_size (4 -> 6)" in caplog.text


def test_a_mac_json_of_other_weights_is_a_logged_warning(tmp_path, caplog):
    pre = tmp_path / "pre"
    train(make_config(train={"total_iter": 1}, checkpoint={"every": 1}), pre,
          dataset=ToyPairs(n=12))  # fmt: skip
    layers = list_layers(build_model("nafnet_tiny"))
    mac = save_mac(
        tmp_path / "mac.json",
        {name: float(i) for i, name in enumerate(layers)},
        method="mac",
        params={},
        model_info={"arch": "nafnet"},
        checkpoint_hash="0" * 64,  # not the weights fine-tuning starts from
    )
    raw = to_dict(make_config(model={"init": str(pre)}))
    raw["select"] = {"mac": str(mac), "ratio": 0.25}
    with caplog.at_level(logging.WARNING, logger="ramir.training.finetune"):
        chosen = selected_layers(from_dict(FinetuneConfig, raw))
    assert chosen and "analysed other weights than" in caplog.text
    assert str(pre / EMA_FILE) in caplog.text or str(pre / MODEL_FILE) in caplog.text


class NaNAt(ToyPairs):
    def __init__(self, bad: int, key: str) -> None:
        super().__init__(n=12)
        self.bad, self.key = bad, key

    def __getitem__(self, index):
        item = super().__getitem__(index)
        if index == self.bad:
            item[self.key][0, 3, 5] = float("nan")
        return item


@pytest.mark.parametrize("key", ["lq", "gt"])
def test_non_finite_training_data_is_refused_before_it_reaches_the_model(tmp_path, key):
    """The data stream checks each batch on the CPU (the training step has no finiteness
    check of its own: on a GPU it would wait for the device at every step)."""
    cfg = make_config(train={"total_iter": 6})  # 3 batches of 4 per epoch: item 7 is met
    with pytest.raises(DatasetError, match=rf"items \[7\] hold NaN or Inf values in '{key}'"):
        train(cfg, tmp_path, dataset=NaNAt(7, key))
    assert not list_checkpoints(tmp_path)  # stopped before the first checkpoint (3)

"""The training loop on a tiny NAFNet: learning, resume, checkpoints, guards, selection."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import ToyPairs, make_config

import ramir.training.loop as loop
import ramir.training.model as run_model
from ramir import load_model
from ramir.attribution import list_layers, save_mac
from ramir.checkpoint import CheckpointError, list_checkpoints
from ramir.config import from_dict, to_dict
from ramir.models import build_model
from ramir.training import FinetuneConfig, NonFiniteLossError, finetune, train
from ramir.training.checkpoint import RunExistsError, load_training_state
from ramir.training.config import TrainingConfig
from ramir.training.runlog import read_log


def _losses(run_dir):
    return {r["iter"]: r["loss"] for r in read_log(run_dir) if r["kind"] == "train"}


def test_a_few_masked_pretraining_steps_lower_the_loss(run_dir, toy_data):
    cfg = make_config(
        train={"total_iter": 30, "input": "masked"},
        checkpoint={"every": 100},
        logging={"plot": True},
    )
    result = train(cfg, run_dir, dataset=toy_data)
    losses = list(_losses(run_dir).values())
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert result.iteration == 30 and result.n_trainable == result.n_params
    assert (run_dir / "training_curve.png").stat().st_size > 1000
    assert (run_dir / "config.yaml").is_file()
    assert toy_data.epochs[:2] == [0, 1]  # 32 images / batch 4 = 8 it per epoch
    model = load_model(run_dir / "model.safetensors")
    assert model.arch_name == "nafnet"


class Crash(Exception):
    pass


def _crash_at(k):
    def hook(iteration):
        if iteration == k:
            raise Crash

    return hook


@pytest.mark.parametrize("shared", [True, False])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, shared):
    cfg = make_config(
        train={"total_iter": 7, "input": "masked", "mask": {"shared": shared}, "grad_clip": 1.0},
        ema={"decay": 0.9},
        schedule={"warmup_iter": 2},
        checkpoint={"every": 3, "keep_last": 5},
    )
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = train(cfg, whole, dataset=ToyPairs(n=12))  # 3 it/epoch: crosses epochs
    with pytest.raises(Crash):  # killed after iteration 5; last checkpoint: 3
        train(cfg, broken, dataset=ToyPairs(n=12), on_step=_crash_at(5))
    assert max(_losses(broken)) == 5
    resumed = train(cfg, broken, dataset=ToyPairs(n=12))
    assert _losses(broken) == _losses(whole)  # identical curve, no duplicate records
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ref.ema_model.parameters(), resumed.ema_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ram_swinir_with_stochastic_depth_resumes_mid_epoch_bit_exactly(tmp_path):
    """RAM-SwinIR's stochastic depth draws from the global RNG: resuming from a checkpoint
    in the middle of an epoch must not shift that stream (the data loader's own seed
    draw used to)."""
    tiny = {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16}
    cfg = make_config(
        model={"name": "ram_swinir", "args": tiny},  # drop_path_rate: default 0.1
        train={"total_iter": 7, "input": "masked"},
        checkpoint={"every": 3, "keep_last": 5},
    )
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = train(cfg, whole, dataset=ToyPairs(n=16))  # 4 it/epoch: checkpoint 3 is mid-epoch
    with pytest.raises(Crash):
        train(cfg, broken, dataset=ToyPairs(n=16), on_step=_crash_at(5))
    resumed = train(cfg, broken, dataset=ToyPairs(n=16))
    assert _losses(broken) == _losses(whole)
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    cfg = make_config(train={"total_iter": 7}, checkpoint={"every": 2, "keep_last": 5})
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    ref = train(cfg, whole, dataset=ToyPairs(n=12))
    with pytest.raises(Crash):
        train(cfg, broken, dataset=ToyPairs(n=12), on_step=_crash_at(5))
    newest = list_checkpoints(broken)[-1]
    assert newest.name == "iter_00000004"
    state = newest / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # killed while writing
    (newest / "config.yaml").write_text("{not: [yaml", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="ramir.training"):
        resumed = train(cfg, broken, dataset=ToyPairs(n=12))
    out = caplog.text
    assert "iter_00000004/state.pt" in out and "trying the checkpoint before it" in out
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)  # resumed from iteration 2: still the same run
    state = list_checkpoints(broken)[-1] / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="pick another with --resume CHECKPOINT"):
        train(make_config(train={"total_iter": 9}), broken, dataset=ToyPairs(n=12),
              resume=state.parent)  # fmt: skip


def test_an_unreadable_config_in_a_checkpoint_is_a_warning(tmp_path, caplog):
    cfg = make_config(train={"total_iter": 3}, checkpoint={"every": 3, "keep_last": 2})
    train(cfg, tmp_path, dataset=ToyPairs(n=12))
    (list_checkpoints(tmp_path)[-1] / "config.yaml").write_text("a: [b", encoding="utf-8")
    longer = make_config(train={"total_iter": 4}, checkpoint={"every": 3, "keep_last": 2})
    with caplog.at_level(logging.WARNING, logger="ramir.training.checkpoint"):
        assert train(longer, tmp_path, dataset=ToyPairs(n=12)).iteration == 4
    assert "config.yaml is not a readable config (ParserError)" in caplog.text
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_checkpoints_hold_the_training_state_and_only_the_last_k_are_kept(run_dir, toy_data):
    cfg = make_config(train={"total_iter": 7}, ema={"decay": 0.5})
    train(cfg, run_dir, dataset=toy_data)
    ckpts = list_checkpoints(run_dir)
    assert [c.name for c in ckpts] == ["iter_00000006", "iter_00000007"]  # every 3, end, keep 2
    state = load_training_state(ckpts[-1])
    assert state["iteration"] == 7 and state["world_size"] == 1
    assert state["position"] == {
        "epoch": 0,
        "batch_in_epoch": 7,
        "iters_per_epoch": 8,
        "samples_seen": 28,
    }
    assert {"optimizer", "schedule", "scaler", "rng"} <= set(state)
    assert (ckpts[-1] / "config.yaml").is_file()
    ema = load_file(str(ckpts[-1] / "model_ema.safetensors"))  # as the final file
    final = load_file(str(run_dir / "model_ema.safetensors"))
    assert all(torch.equal(ema[k], final[k]) for k in ema)
    # a checkpoint's weights say how much of the model trained, as the final files do
    from ramir.checkpoint import read_metadata

    for f in ("model.safetensors", "model_ema.safetensors"):
        recorded = read_metadata(ckpts[-1] / f)["extra"]["n_trainable"]
        assert recorded == read_metadata(run_dir / f)["extra"]["n_trainable"] > 0
    assert not any(p.name.startswith(".tmp") for p in (run_dir / "checkpoints").iterdir())


def test_resume_flags(run_dir, toy_data, caplog):
    cfg = make_config(train={"total_iter": 3})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(cfg, run_dir, dataset=toy_data, resume=True)
    train(cfg, run_dir, dataset=toy_data)
    with pytest.raises(RunExistsError, match="already holds checkpoints"):
        train(cfg, run_dir, dataset=toy_data, resume=False)
    longer = make_config(train={"total_iter": 5})
    with caplog.at_level(logging.WARNING, logger="ramir.training.checkpoint"):
        assert train(longer, run_dir, dataset=toy_data).iteration == 5  # extends the run
    assert sorted(_losses(run_dir)) == [1, 2, 3, 4, 5]
    assert "changed settings: train.total_iter (3 -> 5)" in caplog.text

    def freeze_intro(model):
        model.intro.weight.requires_grad_(False)

    with pytest.raises(ValueError, match="same layer selection"):
        train(longer, run_dir, dataset=toy_data, trainable=freeze_intro, resume=True)


def _keep_models(monkeypatch) -> list:
    """Make the run's build_model record the models it builds."""
    built: list = []
    real = run_model.build_model

    def build_and_keep(*a, **k):
        built.append(real(*a, **k))
        return built[-1]

    monkeypatch.setattr(run_model, "build_model", build_and_keep)
    return built


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(run_dir, toy_data, monkeypatch):
    cfg = make_config(train={"total_iter": 9}, logging={"log_every": 2})
    built = _keep_models(monkeypatch)

    def poison(iteration):
        if iteration == 4:  # corrupt a weight after the checkpoint of iteration 3
            with torch.no_grad():
                next(iter(built[0].parameters())).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match="iter_00000003"):
        train(cfg, run_dir, dataset=toy_data, on_step=poison)
    assert [c.name for c in list_checkpoints(run_dir)] == ["iter_00000003"]
    weights = load_file(str(list_checkpoints(run_dir)[0] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_out_of_memory_says_which_settings_to_lower(run_dir, toy_data, monkeypatch):
    built = _keep_models(monkeypatch)
    real_forward = loop.RestorationModel.__call__

    def fail(self, *a, **k):
        if self is built[0]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, *a, **k)

    monkeypatch.setattr(loop.RestorationModel, "__call__", fail)
    with pytest.raises(RuntimeError, match="out of memory") as err:
        train(make_config(), run_dir, dataset=toy_data)
    assert "train.batch_size (now 4" in str(err.value) and "crop size (now 16x16)" in str(err.value)
    assert "train.precision=bf16" in str(err.value)


def test_finetuning_trains_only_the_selected_layers_from_pretrained_weights(tmp_path, toy_data):
    pre = tmp_path / "pre"
    train(make_config(train={"total_iter": 3, "input": "masked"}), pre, dataset=toy_data)
    start = load_model(pre / "model.safetensors").state_dict()

    def select(model):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("ending."))

    cfg = make_config(
        model={"init": str(pre), "init_weights": "model"},
        train={"total_iter": 3, "model_mode": "eval"},
    )
    result = train(cfg, tmp_path / "ft", dataset=toy_data, trainable=select)
    assert not result.model.training
    ending = sum(p.numel() for n, p in result.model.named_parameters() if n.startswith("ending."))
    assert result.n_trainable == ending < result.n_params
    after = result.model.state_dict()
    for name, value in after.items():
        changed = not torch.equal(value.cpu(), start[name])
        assert changed == name.startswith("ending."), name


def test_fp16_is_refused_on_cpu(run_dir, toy_data):
    with pytest.raises(ValueError, match="bf16"):
        train(make_config(train={"precision": "fp16"}), run_dir, dataset=toy_data)


def test_bf16_autocast_on_cpu_trains_like_fp32(tmp_path, toy_data):
    """From the same weights and batches, bf16 autocast gives fp32's losses within bf16
    rounding (but not exactly), keeps fp32 weights and moves them the way fp32 does."""
    from ramir.checkpoint import save_model

    torch.manual_seed(1)
    start = build_model("nafnet_tiny")
    save_model(start, tmp_path / "start.safetensors")
    theta0 = torch.cat([p.detach().flatten() for p in start.parameters()])
    losses, moves = {}, {}
    for precision in ("fp32", "bf16"):
        cfg = make_config(
            model={"init": str(tmp_path / "start.safetensors"), "init_weights": "model"},
            train={"total_iter": 3, "precision": precision, "input": "masked"},
        )
        result = train(cfg, tmp_path / precision, dataset=toy_data)
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        losses[precision] = torch.tensor(list(_losses(tmp_path / precision).values()))
        theta = torch.cat([p.detach().flatten() for p in result.model.parameters()])
        moves[precision] = theta - theta0
    assert len(losses["bf16"]) == 3 and torch.isfinite(losses["bf16"]).all()
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=1e-2, atol=0)
    assert not torch.equal(losses["bf16"], losses["fp32"])  # it did compute in bf16
    fp32, bf16 = moves["fp32"], moves["bf16"]
    assert bf16.norm() > 0.5 * fp32.norm() > 0  # the weights moved, as far as fp32's did
    assert torch.nn.functional.cosine_similarity(bf16, fp32, dim=0) > 0.9
    assert (bf16 - fp32).norm() < 0.5 * fp32.norm()


def test_finetune_takes_the_top_layers_of_a_mac_json(tmp_path, toy_data):

    pre = tmp_path / "pre"
    train(make_config(train={"total_iter": 2}), pre, dataset=toy_data)
    layers = list_layers(build_model("nafnet_tiny"))
    scores = {name: float(i) for i, name in enumerate(layers)}  # the deepest layers score most
    mac = save_mac(
        tmp_path / "mac.json",
        scores,
        method="mac",
        params={},
        model_info={"arch": "nafnet"},
        checkpoint_hash=None,
    )
    base = make_config(model={"init": str(pre)}, train={"total_iter": 2, "model_mode": "eval"})
    assert isinstance(base, TrainingConfig)
    raw = to_dict(base)
    raw["select"] = {"mac": str(mac), "ratio": 0.25}
    cfg = from_dict(FinetuneConfig, raw)
    result = finetune(cfg, tmp_path / "ft", dataset=toy_data)
    chosen = set(layers[-(len(layers) // 4) :])
    expected = sum(
        p.numel()
        for name, m in result.model.named_modules()
        if name in chosen
        for p in m.parameters(recurse=False)
    )
    assert result.n_trainable == expected > 0


def test_the_psnr_loss_trains_whole_inputs_and_logs_minus_the_psnr(run_dir, toy_data):
    """train.loss=psnr: the first logged loss is psnr_loss(model(lq), gt) of the first batch
    (normalised space), and a few steps raise the PSNR."""
    from ramir.training.data import StreamSampler
    from ramir.training.losses import psnr_loss

    cfg = make_config(train={"total_iter": 30, "input": "whole", "loss": "psnr"})
    torch.manual_seed(cfg.train.seed)
    model = run_model.initial_model(cfg, load_init=False).eval()
    train(cfg, run_dir, dataset=toy_data)
    items = [toy_data[i] for i in StreamSampler(len(toy_data), 4, seed=0).epoch_order(0)[:4]]
    norm = model.normalization
    lq = norm.normalize(torch.stack([it["lq"] for it in items]))
    gt = norm.normalize(torch.stack([it["gt"] for it in items]))
    with torch.no_grad():
        expected = float(psnr_loss(model(lq), gt))
    losses = list(_losses(run_dir).values())
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0  # at least 1 dB better

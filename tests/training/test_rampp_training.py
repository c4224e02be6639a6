"""RAM++ pretraining in the training loop (``train.input: adaptive``): both networks
train, each only from its own loss, the generator on its own schedule; seeded runs
repeat exactly, a killed run resumes exactly; the configs load and are the release's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import ToyPairs, make_config

from ramir import load_model
from ramir.config import ConfigError
from ramir.models import build_model, count_parameters
from ramir.training import train
from ramir.training.config import load_training_config
from ramir.training.rampp import GENERATOR_EMA_FILE, GENERATOR_FILE
from ramir.training.runlog import read_log

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NET = {
    "name": "adasam_restormer_woskip",
    "args": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1,
             "heads": [1, 1, 1, 1]},
}  # fmt: skip
GEN = {"args": {"img_size": 16, "patch_size": 4, "embed_dim": 16}, "optim": {"lr": 1e-3}}


def _config(**sections):
    base = {"model": NET, "train": {"input": "adaptive"}, "mask_generator": GEN}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return make_config(**base)


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _records(run_dir):
    return [r for r in read_log(run_dir) if r["kind"] == "train"]


def test_both_networks_train_and_are_saved(tmp_path):
    cfg = _config(train={"total_iter": 4}, ema={"decay": 0.9})
    start = build_model("adasam", **GEN["args"])  # for its parameter names only
    result = train(cfg, tmp_path / "run", dataset=ToyPairs(n=8))
    gen = result.mask_generator
    assert gen is not None and result.mask_generator_ema is not None
    assert set(_params(gen)) == set(_params(start))
    for name in (GENERATOR_FILE, GENERATOR_EMA_FILE, "model.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    saved = load_model(tmp_path / "run" / GENERATOR_FILE)
    assert saved.arch_name == "adasam" and saved.img_size == 16
    for k, v in _params(saved).items():
        assert torch.equal(v, _params(gen)[k]), k
    ckpt = tmp_path / "run" / "checkpoints" / "iter_00000003"
    assert (ckpt / GENERATOR_FILE).is_file() and (ckpt / GENERATOR_EMA_FILE).is_file()
    recs = _records(tmp_path / "run")
    assert [r["iter"] for r in recs] == [1, 2, 3, 4]
    for r in recs:  # the logged loss is the sum of the two terms
        assert r["l_prob"] > 0 and r["loss"] == pytest.approx(r["l_pix"] + r["l_prob"], rel=1e-5)


def test_each_network_learns_only_from_its_own_loss(tmp_path):
    """prob_weight 0: the generator gets zero gradients and Adam leaves it unchanged,
    while the network trains; pixel_weight 0: the network stays, the generator moves."""
    torch.manual_seed(0)
    runs = {}
    for name, weights in {"no_prob": (1.0, 0.0), "no_pix": (0.0, 1e-4)}.items():
        cfg = _config(
            train={"total_iter": 3},
            mask_generator={"pixel_weight": weights[0], "prob_weight": weights[1]},
            checkpoint={"every": 100},
        )
        runs[name] = train(cfg, tmp_path / name, dataset=ToyPairs(n=8))
    fresh = _config(train={"total_iter": 1}, mask_generator={"pixel_weight": 0.0,
                    "prob_weight": 0.0}, optim={"lr": 1e-30})  # fmt: skip
    init = train(fresh, tmp_path / "init", dataset=ToyPairs(n=8))  # ~ the initial weights
    gen0, net0 = _params(init.mask_generator), _params(init.model)

    def moved(now, before):
        return {k for k, v in now.items() if not torch.allclose(v, before[k], atol=1e-12)}

    assert not moved(_params(runs["no_prob"].mask_generator), gen0)
    assert moved(_params(runs["no_prob"].model), net0)
    assert not moved(_params(runs["no_pix"].model), net0)
    assert moved(_params(runs["no_pix"].mask_generator), gen0) >= {"get_token_probs.1.weight"}


def test_generator_rate_follows_the_schedule_from_its_own_lr(tmp_path):
    """The release: warm-up from the generator's 1e-6, then a cosine to eta_min = 1e-6,
    i.e. constant; the network's rate decays from its own lr meanwhile."""
    cfg = _config(
        train={"total_iter": 6},
        optim={"lr": 2e-4},
        schedule={"warmup_iter": 3, "eta_min": 1e-6},
        mask_generator={"optim": {"lr": 1e-6}},
        checkpoint={"every": 100},
    )
    train(cfg, tmp_path / "run", dataset=ToyPairs(n=8))
    recs = _records(tmp_path / "run")
    assert [r["lr_mask"] for r in recs] == pytest.approx([1e-6 / 3, 2e-6 / 3] + [1e-6] * 4)
    assert recs[1]["lr"] == pytest.approx(2e-4 * 2 / 3)
    assert recs[2]["lr"] > recs[-1]["lr"] > 1e-6


def test_same_seed_same_run_other_seed_other_masks(tmp_path):
    cfg = _config(train={"total_iter": 3}, checkpoint={"every": 100})
    a = train(cfg, tmp_path / "a", dataset=ToyPairs(n=8))
    b = train(cfg, tmp_path / "b", dataset=ToyPairs(n=8))
    for x, y in ((a.model, b.model), (a.mask_generator, b.mask_generator)):
        for k, v in _params(x).items():
            assert torch.equal(v, _params(y)[k]), k
    assert [r["loss"] for r in _records(tmp_path / "a")] == [
        r["loss"] for r in _records(tmp_path / "b")
    ]
    other = _config(train={"total_iter": 3, "seed": 1}, checkpoint={"every": 100})
    train(other, tmp_path / "c", dataset=ToyPairs(n=8))
    assert _records(tmp_path / "c")[0]["loss"] != _records(tmp_path / "a")[0]["loss"]


class _Crash(Exception):
    pass


def test_a_killed_run_resumes_exactly(tmp_path):
    """Both networks, both EMAs, both optimisers and the masks continue as if the run
    had never stopped (the generator's dropout draws from the saved global RNG)."""
    cfg = _config(
        train={"total_iter": 6, "grad_clip": 1.0},
        ema={"decay": 0.9},
        schedule={"warmup_iter": 2},
        checkpoint={"every": 3, "keep_last": 3},
    )
    whole = train(cfg, tmp_path / "whole", dataset=ToyPairs(n=8))

    def crash(iteration):
        if iteration == 5:
            raise _Crash

    with pytest.raises(_Crash):
        train(cfg, tmp_path / "broken", dataset=ToyPairs(n=8), on_step=crash)
    resumed = train(cfg, tmp_path / "broken", dataset=ToyPairs(n=8))
    assert [r["loss"] for r in _records(tmp_path / "broken")] == [
        r["loss"] for r in _records(tmp_path / "whole")
    ]
    pairs = [
        (whole.model, resumed.model),
        (whole.ema_model, resumed.ema_model),
        (whole.mask_generator, resumed.mask_generator),
        (whole.mask_generator_ema, resumed.mask_generator_ema),
    ]
    for x, y in pairs:
        for k, v in _params(x).items():
            assert torch.equal(v, _params(y)[k]), k


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="train.loss"):
        _config(train={"loss": "l1"})
    with pytest.raises(ConfigError, match="mask_generator"):
        make_config(train={"input": "masked"}, mask_generator={"args": {}})
    cfg = _config(train={"total_iter": 1}, mask_generator={"args": {**GEN["args"], "img_size": 32}})
    with pytest.raises(ValueError, match="32x32 only.*crops are 16x16"):
        train(cfg, tmp_path / "size", dataset=ToyPairs(n=8))
    cfg = _config(train={"total_iter": 1}, mask_generator={"name": "nafnet_tiny", "args": {}})
    with pytest.raises(ValueError, match="not a mask generator"):
        train(cfg, tmp_path / "name", dataset=ToyPairs(n=8))


def test_cpu_config_runs_from_the_command_line(tmp_path, capsys):
    from ramir.cli import main

    out = tmp_path / "run"
    fast = ["train.total_iter=2", "train.batch_size=2", "checkpoint.every=2",
            "logging.image_every=0", "val.every=0", "data.patch_size=16",
            "mask_generator.args.img_size=16", "model.args.dim=8"]  # fmt: skip
    cfg = str(CONFIGS / "cpu" / "rampp_pretrain.yaml")
    assert main(["pretrain", "-c", cfg, "--out", str(out), "--device", "cpu", "-q",
                 "--set", *fast]) == 0  # fmt: skip
    assert (out / GENERATOR_FILE).is_file()
    assert main(["train", "-c", cfg, "--out", str(tmp_path / "x")]) == 1  # not a train recipe
    assert "train.input" in capsys.readouterr().err


@pytest.mark.parametrize(("tasks", "iters"), [(3, 1_080_000), (5, 1_200_000), (7, 1_200_000)])
def test_paper_recipes_are_the_releases(tasks, iters):
    cfg = load_training_config(CONFIGS / "paper" / f"rampp_{tasks}task_pretrain.yaml")
    mg = cfg.mask_generator
    assert cfg.train.input == "adaptive" and cfg.train.total_iter == iters
    assert cfg.train.batch_size == 4 and cfg.data.patch_size == 128
    assert cfg.data.hflip and not cfg.data.rot90 and not cfg.data.vflip
    assert (cfg.optim.type, cfg.optim.lr, tuple(cfg.optim.betas)) == ("Adam", 2e-4, (0.9, 0.99))
    assert (mg.optim.type, mg.optim.lr, tuple(mg.optim.betas)) == ("Adam", 1e-6, (0.9, 0.99))
    assert (cfg.schedule.type, cfg.schedule.warmup_iter, cfg.schedule.eta_min) == (
        "cosine", 40_000, 1e-6,
    )  # fmt: skip
    assert cfg.schedule.period is None  # = total_iter, the release's single period
    assert cfg.ema.decay == 0.995 and (mg.pixel_weight, mg.prob_weight) == (1.0, 1e-4)
    assert mg.args["img_size"] == cfg.data.patch_size
    with torch.device("meta"):
        net = build_model(cfg.model.name, **cfg.model.args)
        gen = build_model(mg.name, **mg.args)
    assert count_parameters(net) == 26_126_644 and count_parameters(gen) == 7_431_937
    if tasks == 5:  # the RAM++ 5-task set: three noise levels, not IDR's one
        names = [d.name for d in cfg.data.datasets]
        assert names[:3] == ["noise_s15", "noise_s25", "noise_s50"] and "lol" in names


@pytest.mark.distributed
def test_two_gloo_processes_keep_both_networks_in_step(tmp_path):
    """Under torchrun the generator is wrapped like the network: its gradients are
    averaged over the processes, so both ranks end with the same generator although
    each draws its own masks."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    worker = Path(__file__).parent / "rampp_ddp_worker.py"
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}  # fmt: skip
    env["OMP_NUM_THREADS"] = "1"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys() and any(k.startswith("gen.") for k in r0)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # and the generator did train: it left its initial weights (its own seed stream)
    from ramir.training.inputs import mix_seed
    from ramir.training.rampp import _INIT_STREAM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(0, _INIT_STREAM))
        start = build_model("adasam", **GEN["args"]).state_dict()
    assert not torch.allclose(r0["gen.get_token_probs.1.weight"], start["get_token_probs.1.weight"])

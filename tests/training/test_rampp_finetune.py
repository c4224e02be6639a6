"""RAM++ fine-tuning: RestormerRFR trained with the features of a frozen DINOv2.

A tiny RestormerRFR (dim 8, one block per level, ``dino_dim`` 16) starts from a tiny
pretraining network's file and trains with the features of a tiny random DINOv2
(``ramir.rampp.save_tiny_dino``: 40 layers, width 16) written into a temporary folder:
nothing is downloaded. Skipped without ``transformers``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import ToyPairs

from ramir import rampp
from ramir.attribution import list_layers, save_mac
from ramir.checkpoint import list_checkpoints, save_model
from ramir.cli import main
from ramir.config import from_dict
from ramir.errors import ResourceError, UsageError
from ramir.models import build_model
from ramir.models.rampp_dino import DinoExtractor
from ramir.models.restormer_rfr import DINO_SIDE
from ramir.training import FinetuneConfig, finetune, selected_layers, train
from ramir.training.data import StreamSampler
from ramir.training.runlog import read_log

pytest.importorskip("transformers")

ARGS: dict[str, Any] = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                            heads=[1, 2, 4, 8])  # fmt: skip
RFR_ARGS = {**ARGS, "dino_dim": 16, "gate_hidden": 8}


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> dict[str, Path]:
    """A tiny DINOv2 folder, a pretraining network's weights and a MAC ranking of it."""
    root = tmp_path_factory.mktemp("rampp_finetune")
    dino = rampp.save_tiny_dino(root / "dinov2_tiny", seed=0)
    torch.manual_seed(1)
    pre = build_model("adasam_restormer_woskip", **ARGS)
    save_model(pre, root / "pre.safetensors")
    layers = list_layers(pre)
    mac = save_mac(
        root / "mac.json",
        {name: float(len(layers) - i) for i, name in enumerate(layers)},  # depth order
        method="mac",
        params={},
        model_info={"arch": "adasam_restormer_woskip"},
        checkpoint_hash=None,
    )
    return {"dino": dino, "pre": root / "pre.safetensors", "mac": mac}


def _config(start: dict[str, Path], **over: Any) -> FinetuneConfig:
    raw: dict[str, Any] = {
        "model": {
            "name": "restormer_rfr",
            "args": dict(RFR_ARGS),
            "init": str(start["pre"]),
            "dino": str(start["dino"]),
            "dino_dtype": "float32",
        },  # fmt: skip
        "train": {
            "total_iter": 3,
            "batch_size": 2,
            "device": "cpu",
            "seed": 0,
            "input": "whole",
            "model_mode": "eval",
        },  # fmt: skip
        "optim": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
        "logging": {"log_every": 1, "tensorboard": False, "progress": False, "plot": False},
        "checkpoint": {"every": 2, "keep_last": 3},
        "select": {"mac": str(start["mac"]), "ratio": 0.3},
    }
    for section, values in over.items():
        raw[section] = {**raw.get(section, {}), **values}
    return from_dict(FinetuneConfig, raw, "<test>")


def _starting_weights(cfg: FinetuneConfig, start: dict[str, Path]) -> dict[str, torch.Tensor]:
    """What the run starts from: the RFR built under the run's seed, its Restormer part
    from the pretraining file (the release's start)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model("restormer_rfr", **RFR_ARGS)
    rampp.init_from_pretraining(model, load_file(str(start["pre"])))
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rfr_list_is_the_dino_side_then_the_mac_ranking(start, tmp_path):
    chosen = selected_layers(_config(start))
    rfr_layers = list_layers(build_model("restormer_rfr", **RFR_ARGS))
    side = [n for n in rfr_layers if n.startswith(DINO_SIDE)]
    assert len(side) == 33 and chosen[:33] == side  # the release's 33 DINO-side modules
    assert len(chosen) == int(len(rfr_layers) * 0.3)  # the first int(n * ratio) names
    assert chosen[33] == "patch_embed.proj"  # the MAC ranking's first layer comes next
    # a ranking without an arch (a release folder imported without --arch) and no
    # DINO-side names is the pretraining network's too
    doc = json.loads(start["mac"].read_text())
    doc["model"] = {}
    (tmp_path / "mac.json").write_text(json.dumps(doc))
    assert selected_layers(_config(start, select={"mac": str(tmp_path / "mac.json")})) == chosen
    with pytest.raises(ValueError, match="select.by=layers"):
        selected_layers(_config(start, select={"by": "params"}))


def test_finetuning_trains_the_selected_layers_with_the_dino_features(start, tmp_path):
    cfg = _config(start)
    before = _starting_weights(cfg, start)
    result = finetune(cfg, tmp_path / "run", dataset=ToyPairs(n=8))
    assert result.iteration == 3
    chosen = set(selected_layers(cfg))
    after = load_file(str(tmp_path / "run" / "model.safetensors"))
    for key, value in before.items():
        owner = key.rsplit(".", 1)[0]
        if owner in chosen or key.endswith("gate_network.5.temperature"):  # shared temperature
            assert not torch.equal(after[key], value), f"{key} did not train"
        else:
            assert torch.equal(after[key], value), f"{key} changed but is frozen"
    # the gates learn: the six distinct DINO layers reach them (the release's layer 33
    # in every slot would starve them)
    assert not torch.equal(
        after["dino_fusion_shallow.gate_network.0.weight"],
        before["dino_fusion_shallow.gate_network.0.weight"],
    )
    assert result.n_trainable < result.n_params

    # the first step's loss is L1(model(lq, DINO features of lq), gt) of the first batch
    model = build_model("restormer_rfr", **RFR_ARGS).eval()
    model.load_state_dict(before)
    dino = DinoExtractor.from_pretrained(start["dino"], dtype="float32")
    data = ToyPairs(n=8)
    items = [data[i] for i in StreamSampler(8, 2, seed=0).epoch_order(0)[:2]]
    norm = model.normalization
    lq = norm.normalize(torch.stack([it["lq"] for it in items]))
    gt = norm.normalize(torch.stack([it["gt"] for it in items]))
    with torch.no_grad():
        pred = model(lq, dino.features(lq, norm))
    first = read_log(tmp_path / "run")[0]
    assert first["iter"] == 1
    assert first["loss"] == pytest.approx(float((pred - gt).abs().mean()), rel=1e-5)


def test_finetuning_resumes_exactly(start, tmp_path):
    cfg = _config(start, train={"total_iter": 4})
    whole = finetune(cfg, tmp_path / "whole", dataset=ToyPairs(n=8))

    def crash(iteration: int) -> None:
        if iteration == 3:
            raise Crash

    with pytest.raises(Crash):
        finetune(cfg, tmp_path / "broken", dataset=ToyPairs(n=8), on_step=crash)
    assert list_checkpoints(tmp_path / "broken")[-1].name == "iter_00000002"
    resumed = finetune(cfg, tmp_path / "broken", dataset=ToyPairs(n=8))
    assert [r["loss"] for r in read_log(tmp_path / "broken") if r["kind"] == "train"] == [
        r["loss"] for r in read_log(tmp_path / "whole") if r["kind"] == "train"
    ]
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_validation_uses_the_dino_features(start, tmp_path):
    cfg = _config(start, train={"total_iter": 2}, val={"every": 2, "max_images": 2})
    val = {"toy": ToyPairs(n=2, seed=5)}
    train(cfg, tmp_path / "run", dataset=ToyPairs(n=8), val_sets=val)
    psnr = [r["psnr"] for r in read_log(tmp_path / "run") if r["kind"] == "val"]
    assert len(psnr) == 1 and 5.0 < psnr[0] < 60.0


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"model": {"dino": None}}, "trains with DINOv2 features: set model.dino"),
        ({"model": {"dino": "/nonexistent/dinov2"}}, "not a Hugging Face model folder"),
        ({"model": {"args": {**RFR_ARGS, "dino_dim": 24}}}, "takes dino_dim=24"),
        ({"model": {"args": {**RFR_ARGS, "dino": "x"}}}, "set with model.dino"),
        ({"model": {"name": "nafnet_tiny", "args": {}, "init": None}}, "takes no DINOv2"),
    ],
)
def test_bad_configs_say_what_to_set(start, tmp_path, over, message):
    cfg = _config(start, select={"mac": None}, **over)
    with pytest.raises(UsageError, match=message):
        finetune(cfg, tmp_path / "run", dataset=ToyPairs(n=8))


def test_a_masked_input_is_refused(start, tmp_path):
    cfg = _config(start, train={"input": "masked"}, select={"mac": None})
    with pytest.raises(UsageError, match="set train.input=whole"):
        train(cfg, tmp_path / "run", dataset=ToyPairs(n=8))


def test_unknown_and_mistyped_keys_are_config_errors(start):
    with pytest.raises(ValueError, match="dino_dtype"):
        _config(start, model={"dino_dtype": "float8"})
    with pytest.raises(ValueError, match="dino_path"):
        _config(start, model={"dino_path": "x"})


def test_without_transformers_the_error_says_what_to_install(start, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    with pytest.raises(ResourceError, match=r"pip install 'ramir\[rampp\]'"):
        finetune(_config(start, select={"mac": None}), tmp_path / "run", dataset=ToyPairs(n=8))


def test_the_cpu_config_runs_from_the_command_line(start, tmp_path, capsys):
    config = Path(__file__).resolve().parents[2] / "configs" / "cpu" / "rampp_finetune.yaml"
    code = main([
        "finetune", "-c", str(config), "--out", str(tmp_path / "run"), "-q",
        "--set", f"model.init={start['pre']}", f"model.dino={start['dino']}",
        "model.args.dim=8", "model.args.gate_hidden=8", "train.total_iter=2",
        "train.batch_size=2", "data.patch_size=16", "val.every=0", "logging.plot=false",
        "logging.tensorboard=false", "checkpoint.every=2",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "2 iterations" in out and (tmp_path / "run" / "model.safetensors").is_file()


RELEASE = Path(__file__).resolve().parents[1] / "attribution" / "data" / "mac_analysis_result"
PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper"


def _release_lists(tmp_path: Path) -> tuple[Path, Path]:
    """The release's 3task_mac: filter_name_RFR.txt (439 names: the 33 DINO-side
    modules, then the Restormer layers in MAC order) and that Restormer ranking alone."""
    with torch.device("meta"):
        layers = list_layers(build_model("adasam_restormer_woskip"))
    index = (RELEASE / "ram_plus" / "3task_mac" / "filter_index.txt").read_text().split()
    ranking = "".join(f"{layers[int(i)]}\n" for i in index)
    rfr = tmp_path / "filter_name_RFR.txt"
    rfr.write_text((RELEASE / "ram_plus" / "rfr_modules.txt").read_text() + ranking)
    ranked = tmp_path / "filter_name.txt"
    ranked.write_text(ranking)
    return rfr, ranked


def test_the_release_s_30_percent_recipe_trains_its_157_modules(tmp_path):
    """configs/paper/rampp_3task_ratio0.3_finetune.yaml with the release's list selects
    its first 157 names: 217 tensors, 71,654,210 of 81,757,117 values (as measured with
    the release); the pretraining network's ranking selects the same set."""
    from ramir.attribution.official import import_official_mac
    from ramir.training.config import load_training_config
    from ramir.training.finetune import layer_selection

    rfr, ranked = _release_lists(tmp_path)
    names = rfr.read_text().split()
    assert len(names) == 439
    mac, _ = import_official_mac(rfr, tmp_path / "rfr_mac", arch="restormer_rfr")
    cfg = load_training_config(
        PAPER / "rampp_3task_ratio0.3_finetune.yaml", [f"select.mac={mac}"],
        schema=FinetuneConfig,
    )  # fmt: skip
    chosen = selected_layers(cfg)
    assert chosen == names[:157]
    with torch.device("meta"):
        model = build_model("restormer_rfr", **cfg.model.args)
    layer_selection(chosen)(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(trainable) == 217 and sum(p.numel() for p in trainable) == 71_654_210
    assert sum(p.numel() for p in model.parameters()) == 81_757_117

    woskip, _ = import_official_mac(ranked, tmp_path / "woskip_mac", arch="adasam_restormer_woskip")
    by_ranking = load_training_config(
        PAPER / "rampp_3task_ratio0.3_finetune.yaml", [f"select.mac={woskip}"],
        schema=FinetuneConfig,
    )  # fmt: skip
    assert sorted(selected_layers(by_ranking)) == sorted(names[:157])


def _grid(state: torch.Tensor) -> torch.Tensor:
    """``(B, 1 + 16, C)`` hidden state -> ``(B, C, 4, 4)``: a 20 x 28 input padded to 32 x 32."""
    return state[:, 1:].reshape(state.shape[0], 4, 4, -1).permute(0, 3, 1, 2).float()


def test_the_training_step_s_features_distinct_or_the_release_s_layer_33(start):
    """The forward arguments: the six distinct hidden states in training and validation;
    with ``train_features='release'`` hidden state 33 in every slot in training only."""
    from ramir.models.rampp_dino import LAYERS
    from ramir.training.model import forward_args

    x = torch.randn(2, 3, 20, 28)
    for mode, train_layers in (("distinct", list(LAYERS.values())), ("release", [33] * 6)):
        cfg = _config(start, model={"args": {**RFR_ARGS, "train_features": mode}})
        model = build_model("restormer_rfr", **cfg.model.args)
        args = forward_args(cfg, model, torch.device("cpu"))
        dino = args.extractor
        states = dino.hidden_states(dino.pixel_values(x, model.normalization))
        inp, feats = args.training(x, None)
        assert inp is x and list(feats) == list(LAYERS)
        for name, i in zip(LAYERS, train_layers, strict=True):
            assert torch.equal(feats[name], _grid(states[i]))
            assert not feats[name].requires_grad
        _, test_feats = args.testing(x)
        for name, i in LAYERS.items():
            assert torch.equal(test_feats[name], _grid(states[i]))


def test_the_ddp_probe_calls_the_network_with_its_dino_features(start):
    """Under torchrun, the probe for unused parameters runs the forward as the step does
    (with features): every selected RFR parameter gets a gradient."""
    from ramir.training.distributed import unused_parameters
    from ramir.training.finetune import layer_selection
    from ramir.training.model import forward_args

    cfg = _config(start)
    model = build_model("restormer_rfr", **cfg.model.args).eval()
    layer_selection(selected_layers(cfg))(model)
    args = forward_args(cfg, model, torch.device("cpu"))
    assert unused_parameters(model, (16, 16), masked=False, forward_args=args) == []
    with pytest.raises(ValueError, match="needs DINOv2 features"):
        unused_parameters(model, (16, 16), masked=False)  # without them: no features

"""Layer selection, freezing, mac.json round trips and the plot."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ramir.attribution import (
    freeze_except,
    layer_param_counts,
    list_layers,
    load_mac,
    plot_mac,
    save_mac,
    select_layers,
    trainable_parameters,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 3, 4, 4))  # root-owned
        self.stem = nn.Conv2d(3, 4, 3, padding=1)  # 112
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(4, 4, 1), nn.LayerNorm(4)),  # 20, 8
            nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.LayerNorm(4)),  # 16, 8
        )
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)  # 15


def test_list_layers_and_counts() -> None:
    model = Net()
    assert list_layers(model) == [
        "stem",
        "blocks.0.0",
        "blocks.0.1",
        "blocks.1.0",
        "blocks.1.1",
        "head",
    ]
    assert layer_param_counts(model) == {
        "stem": 112,
        "blocks.0.0": 20,
        "blocks.0.1": 8,
        "blocks.1.0": 16,
        "blocks.1.1": 8,
        "head": 15,
    }


def test_select_by_layers_floors() -> None:
    scores = {f"l{i}": float(i) for i in range(10)}
    assert select_layers(scores, 0.1) == ["l9"]
    assert select_layers(scores, 0.25) == ["l9", "l8"]
    assert select_layers(scores, 0.0) == []
    assert select_layers(scores, 1.0) == [f"l{i}" for i in range(9, -1, -1)]
    many = {f"l{i}": float(i) for i in range(100)}
    assert len(select_layers(many, 0.29)) == 29  # 0.29 * 100 = 28.999999999999996
    assert len(select_layers({str(i): 1.0 for i in range(263)}, 0.1)) == 26
    assert len(select_layers({str(i): 1.0 for i in range(445)}, 0.3)) == 133
    # ties keep the given order
    assert select_layers({"a": 1.0, "b": 1.0, "c": 2.0}, 0.67) == ["c", "a"]
    with pytest.raises(ValueError, match="ratio"):
        select_layers(scores, 1.5)


def test_select_by_params() -> None:
    model = Net()
    scores = {"stem": 0.1, "blocks.0.0": 0.9, "blocks.0.1": 0.8, "blocks.1.0": 0.7,
              "blocks.1.1": 0.2, "head": 0.5}  # fmt: skip
    # total 179: 10% = 17.9 -> 20 (blocks.0.0) reaches it
    assert select_layers(scores, 0.1, by="params", model=model) == ["blocks.0.0"]
    # 25% = 44.75: 20 + 8 + 16 = 44 < 44.75 -> also head (59)
    assert select_layers(scores, 0.25, by="params", model=model) == [
        "blocks.0.0", "blocks.0.1", "blocks.1.0", "head",
    ]  # fmt: skip
    counts = layer_param_counts(model)
    assert select_layers(scores, 0.25, by="params", n_params=counts) == select_layers(
        scores, 0.25, by="params", model=model
    )
    assert select_layers(scores, 1.0, by="params", model=model) == sorted(
        scores, key=lambda n: -scores[n]
    )
    with pytest.raises(ValueError, match="model="):
        select_layers(scores, 0.1, by="params")


def test_freeze_except_and_optimizer() -> None:
    model = Net()
    trainable, total = freeze_except(model, ["blocks.0.1", "head"])
    assert (trainable, total) == (8 + 15, sum(p.numel() for p in model.parameters()))
    on = {n for n, p in model.named_parameters() if p.requires_grad}
    assert on == {"blocks.0.1.weight", "blocks.0.1.bias", "head.weight", "head.bias"}
    opt = torch.optim.Adam(trainable_parameters(model), lr=0.1)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if n in on}
    # a second call replaces the selection; the root-owned mask_token always stays frozen
    assert freeze_except(model, list_layers(model))[0] == total - model.mask_token.numel()
    assert not model.mask_token.requires_grad
    assert freeze_except(model, []) == (0, total)


def test_freeze_except_rejects_unknown_names() -> None:
    model = Net()
    with pytest.raises(KeyError, match=r"'blocks\.0\.2'.*did you mean.*blocks\.0\.1"):
        freeze_except(model, ["head", "blocks.0.2"])
    with pytest.raises(KeyError, match="'blocks'"):
        freeze_except(model, ["blocks"])  # a container without own parameters
    with pytest.raises(KeyError, match="mask_token"):
        freeze_except(model, ["mask_token"])
    assert all(p.requires_grad for p in model.parameters())  # untouched on error


def test_mac_json_round_trip(tmp_path) -> None:
    model = Net()
    scores = {"stem": 0.125, "blocks.0.0": 3.5e-7, "blocks.0.1": 1 / 3, "blocks.1.0": 0.0,
              "blocks.1.1": 2.0, "head": 0.1 + 0.2}  # fmt: skip
    path = save_mac(
        tmp_path / "out" / "mac.json",
        scores,
        method="mac",
        params={"steps": 200, "start_ratio": 0.5, "sharpness": 1e4, "images": 3},
        model_info={"arch": "toy", "parameters": 179},
        checkpoint_hash="ab" * 32,
        config={"seed": 0},
        checkpoint_path="model.safetensors",
        n_params=layer_param_counts(model),
    )
    doc = json.loads(path.read_text())
    assert [e["layer"] for e in doc["layers"]] == [
        "blocks.1.1", "blocks.0.1", "head", "stem", "blocks.0.0", "blocks.1.0",
    ]  # fmt: skip
    assert doc["layers"][0] == {"layer": "blocks.1.1", "score": 2.0, "n_params": 8, "index": 4}
    assert doc["method"] == "mac" and doc["checkpoint"]["sha256"] == "ab" * 32
    assert doc["model"]["n_layers"] == 6
    loaded = load_mac(path)
    assert loaded.scores == scores and list(loaded.scores) == list(scores)  # exact, depth order
    assert loaded.n_params == layer_param_counts(model)
    assert loaded.method == "mac" and loaded.parameters["steps"] == 200
    assert loaded.model == {"arch": "toy", "parameters": 179}
    assert loaded.checkpoint == {"path": "model.safetensors", "sha256": "ab" * 32}
    assert loaded.config == {"seed": 0}
    assert loaded.ranking() == [e["layer"] for e in doc["layers"]]
    assert select_layers(loaded.scores, 0.34) == ["blocks.1.1", "blocks.0.1"]


def test_mac_json_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="ramir analyze"):
        load_mac(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": []}')
    with pytest.raises(ValueError, match="not a ramir mac.json"):
        load_mac(bad)
    with pytest.raises(ValueError, match="not finite"):
        save_mac(tmp_path / "x.json", {"a": float("nan")}, method="mac", params={},
                 model_info={}, checkpoint_hash=None)  # fmt: skip


def test_plot_mac(tmp_path) -> None:
    scores = {f"layers.{i}.conv": 1.0 / (i + 1) for i in range(40)}
    out = plot_mac(scores, tmp_path / "mac.png", top_k=10, selected=["layers.0.conv"])
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    plot_mac({"a": 0.0, "b": 1.0}, tmp_path / "zero.png")  # zero scores: linear axis


def test_a_ratio_that_selects_no_layer_is_an_error_naming_the_setting():
    from ramir.attribution.selection import select_for_finetuning

    scores = {"a": 3.0, "b": 2.0, "c": 1.0}
    assert select_for_finetuning(scores, 0.4) == ["a"]
    with pytest.raises(ValueError, match="finetune_ratio 0.1 of 3 layers selects none; raise"):
        select_for_finetuning(scores, 0.1, setting="finetune_ratio")


# Equal scores, synthetic: what decides their order.
TIED = {"a": 1.0, "b": 2.0, "c": 1.0, "d": 2.0, "e": 1.0}  # depth order a..e


def test_equal_scores_keep_depth_order_in_ramir_s_own_analyses(tmp_path) -> None:
    assert select_layers(TIED, 1.0) == ["b", "d", "a", "c", "e"]
    assert select_layers(TIED, 0.6) == ["b", "d", "a"]  # the shallower of the tied
    path = save_mac(tmp_path / "mac.json", TIED, method="mac", params={}, model_info={},
                    checkpoint_hash=None)  # fmt: skip
    doc = json.loads(path.read_text())
    assert doc["ranked_by"] == "score" and all("rank" not in e for e in doc["layers"])
    assert [e["layer"] for e in doc["layers"]] == ["b", "d", "a", "c", "e"]
    loaded = load_mac(path)
    assert loaded.rank is None and loaded.scored
    assert select_layers(loaded.scores, 0.6) == ["b", "d", "a"]


def test_an_explicit_rank_decides_the_order_whatever_the_scores(tmp_path) -> None:
    from ramir.attribution import LayerScores, ranked

    rank = {"d": 0, "b": 1, "e": 2, "c": 3, "a": 4}
    scores = LayerScores(TIED, rank=rank)
    assert ranked(scores) == ["d", "b", "e", "c", "a"]
    assert select_layers(scores, 0.6) == ["d", "b", "e"]
    assert select_layers(dict(scores), 0.6) == ["b", "d", "a"]  # a plain copy drops it
    path = save_mac(tmp_path / "mac.json", scores, method="mac", params={}, model_info={},
                    checkpoint_hash=None, n_params=dict.fromkeys(TIED, 3))  # fmt: skip
    doc = json.loads(path.read_text())
    assert doc["ranked_by"] == "rank"
    assert doc["layers"][0] == {"layer": "d", "rank": 0, "score": 2.0, "n_params": 3, "index": 3}
    loaded = load_mac(path)
    assert list(loaded.scores) == list(TIED) and loaded.rank == rank  # depth order kept
    assert loaded.ranking() == ["d", "b", "e", "c", "a"]
    assert select_layers(loaded.scores, 0.4, by="params", n_params=loaded.n_params) == ["d", "b"]
    # without scores: null in the file, nan in memory, the rank alone orders
    unscored = LayerScores(dict.fromkeys(TIED, float("nan")), rank=rank)
    assert not unscored.scored and select_layers(unscored, 0.4) == ["d", "b"]
    path = save_mac(tmp_path / "list.json", unscored, method="ranked list", params={},
                    model_info={}, checkpoint_hash=None, depth_known=False)  # fmt: skip
    doc = json.loads(path.read_text())
    assert [(e["layer"], e["score"], e["index"]) for e in doc["layers"]][:2] == [
        ("d", None, None), ("b", None, None),
    ]  # fmt: skip
    loaded = load_mac(path)
    assert not loaded.scored and loaded.ranking() == ["d", "b", "e", "c", "a"]
    with pytest.raises(ValueError, match="one position 0..4"):
        LayerScores(TIED, rank={**rank, "a": 7})
    with pytest.raises(ValueError, match="without a rank must all be numbers"):
        LayerScores({"a": float("nan")})
    with pytest.raises(ValueError, match="not finite"):  # some scores but not all
        save_mac(tmp_path / "x.json", LayerScores({"a": 1.0, "b": float("nan")},
                 rank={"a": 0, "b": 1}), method="mac", params={}, model_info={},
                 checkpoint_hash=None)  # fmt: skip


def test_an_old_mac_json_without_ranks_still_loads_and_selects_by_score(tmp_path) -> None:
    """A mac.json written before ranks existed (no "ranked_by", no "rank")."""
    old = {"format": "ramir-mac", "format_version": 1, "method": "mac", "parameters": {},
           "model": {"arch": "toy", "n_layers": 5}, "checkpoint": {}, "config": {},
           "layers": [{"layer": n, "score": TIED[n], "n_params": None, "index": i}
                      for i, n in reversed(list(enumerate(TIED)))]}  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    loaded = load_mac(path)
    assert list(loaded.scores) == list(TIED) and loaded.rank is None
    assert select_layers(loaded.scores, 0.6) == ["b", "d", "a"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(ranked_by="magic"), '"ranked_by" must be "score" or "rank"'),
        (lambda d: d["layers"][0].pop("rank"), "some layers have a rank and others not"),
        (lambda d: [e.pop("rank") for e in d["layers"]], "needs a rank in every layer entry"),
        (lambda d: d["layers"][0].update(rank=9), "one position 0..1"),
        (lambda d: d["layers"][0].update(score=None), "malformed layer entry"),
    ],
)
def test_a_broken_ranked_mac_json_is_named(tmp_path, change, message) -> None:
    from ramir.attribution import LayerScores

    path = save_mac(tmp_path / "mac.json", LayerScores({"a": 1.0, "b": 1.0}, rank={"b": 0, "a": 1}),
                    method="mac", params={}, model_info={}, checkpoint_hash=None)  # fmt: skip
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message):
        load_mac(path)


def test_plot_of_an_imported_ranking_and_of_a_list_without_scores(tmp_path) -> None:
    from ramir.attribution import LayerScores, plot_ranking

    scores = LayerScores(TIED, rank={"d": 0, "b": 1, "e": 2, "c": 3, "a": 4})
    assert plot_mac(scores, tmp_path / "ranked.png", top_k=3).stat().st_size > 0
    names = [f"layers.{i}.conv" for i in range(60)]
    out = plot_ranking(names, tmp_path / "list.png", top_k=40, title="t", note="no scores")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no names"):
        plot_ranking([], tmp_path / "none.png")

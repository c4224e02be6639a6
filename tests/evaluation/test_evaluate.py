"""ramir evaluate: a table from two tiny checkpoints on a tiny synthetic test set."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml

from ramir.checkpoint import save_model
from ramir.cli import main
from ramir.config import ConfigError
from ramir.data.write import write_image
from ramir.evaluation.benchmark import aggregate, published_rows
from ramir.evaluation.config import load_eval_config
from ramir.models import build_model


@pytest.fixture()
def setup(tmp_path, tiny_swinir_ckpt):
    clean = tmp_path / "clean"
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        small = torch.rand(1, 3, 6, 7, generator=g)
        img = torch.nn.functional.interpolate(small, size=(40, 48), mode="bilinear")[0]
        write_image(clean / f"im{i}.png", img)
    torch.manual_seed(0)
    naf = build_model("nafnet_tiny", enc_blk_nums=[1], dec_blk_nums=[1])
    naf_ckpt = save_model(naf, tmp_path / "naf.safetensors")
    test = [
        {"name": "noise_s25", "layout": "clean_folder", "root": str(clean),
         "degradation": "gaussian_noise", "params": {"sigma": 25.0}, "group": "BSD68"},
        {"name": "noise_s50", "layout": "clean_folder", "root": str(clean),
         "degradation": "gaussian_noise", "params": {"sigma": 50.0}, "group": "BSD68"},
        {"name": "LSDIR-JPEG", "layout": "clean_folder", "root": str(clean),
         "degradation": "jpeg", "params": {"quality": 50}},
    ]  # fmt: skip
    cfg = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "models": [
            {"name": "swinir", "checkpoint": str(tiny_swinir_ckpt)},
            {"name": "nafnet", "checkpoint": str(naf_ckpt)},
        ],
        "data": {"test": test, "seed": 3},
        "conventions": ["ram", "promptir"],
        "device": "cpu",
        "save_images": True,
        "published": ["table1_seven_tasks"],
        "published_rows": ["RAM-SwinIR"],
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "runs" / "tiny"


def test_evaluate_writes_tables_per_image_results_and_resumes(setup, capsys):
    cfg_path, run = setup
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 model" not in out and "12 image(s) restored" in out
    for name in ["table.md", "table.csv", "table.json", "per_image.csv", "config.yaml"]:
        assert (run / name).is_file(), name
    tables = json.loads((run / "table.json").read_text())
    assert [t["convention"]["name"] for t in tables] == ["ram", "promptir"]
    ram = tables[0]
    assert ram["columns"] == ["BSD68", "LSDIR-JPEG", "Average"]
    labels = [(r["label"], r["kind"]) for r in ram["rows"]]
    assert labels == [("swinir", "ours"), ("nafnet", "ours"), ("RAM-SwinIR", "published")]
    swin = ram["rows"][0]["cells"]
    assert swin["BSD68"]["n_images"] == 4 and swin["LSDIR-JPEG"]["n_images"] == 2
    avg = (swin["BSD68"]["psnr"] + swin["LSDIR-JPEG"]["psnr"]) / 2
    assert swin["Average"]["psnr"] == pytest.approx(avg)
    published = ram["rows"][2]["cells"]
    assert published["LSDIR-JPEG"] == {"psnr": 30.22, "ssim": 0.9096, "n_images": 0}
    assert "Average" not in published  # our columns differ from Table 1's
    md = (run / "table.md").read_text()
    assert "published" in md and "ram" in md and "promptir" in md
    # the sets of a grouped column, each on its own (as the release reports Rain13k-Test)
    sets = json.loads((run / "sets.json").read_text())
    assert [t["convention"]["name"] for t in sets] == ["ram", "promptir"]
    assert sets[0]["columns"] == ["noise_s25", "noise_s50"]
    members = sets[0]["rows"][0]["cells"]
    assert "Average" not in members
    mean = (members["noise_s25"]["psnr"] + members["noise_s50"]["psnr"]) / 2
    assert swin["BSD68"]["psnr"] == pytest.approx(mean)
    assert "the mean of these sets' means" in (run / "sets.md").read_text()
    with open(run / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {"ram psnr", "promptir ssim"} <= set(rows[0])
    # the two conventions differ (crop 4 + Gaussian window vs no crop + uniform window)
    assert rows[0]["ram ssim"] != rows[0]["promptir ssim"]
    assert len(list((run / "images" / "nafnet" / "noise_s50").glob("*.png"))) == 2

    # resume: nothing is recomputed and the tables are identical
    before = (run / "table.json").read_text()
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 0
    assert "0 image(s) restored, 12 taken" in capsys.readouterr().out
    assert (run / "table.json").read_text() == before

    # a changed test set is refused instead of mixing results; --restart recomputes
    args = ["evaluate", "-c", str(cfg_path), "-q", "--set", "data.seed=4"]
    assert main(args) == 1
    assert "different checkpoint" in capsys.readouterr().err
    assert main([*args, "--restart"]) == 0


def test_eval_config_is_strict(setup):
    cfg_path, _ = setup
    with pytest.raises(ConfigError, match="unknown key"):
        load_eval_config(cfg_path, ["nope=1"])
    with pytest.raises(ConfigError, match="convention"):
        load_eval_config(cfg_path, ["conventions=[basicsr]"])
    with pytest.raises(ConfigError, match="published_rows"):
        load_eval_config(cfg_path, ["published_rows=[Nobody]"])


def test_eval_config_refuses_tiles_not_larger_than_their_overlap(setup):
    cfg_path, _ = setup
    with pytest.raises(ConfigError, match="tile 16 must be larger than tile_overlap 32"):
        load_eval_config(cfg_path, ["tile=16"])  # the default overlap is 32
    with pytest.raises(ConfigError, match="tile_overlap 40 is more than 3/4 of tile 48"):
        load_eval_config(cfg_path, ["tile=48", "tile_overlap=40"])
    with pytest.raises(ConfigError, match="tile_overlap must be >= 0"):
        load_eval_config(cfg_path, ["tile_overlap=-4"])
    assert load_eval_config(cfg_path, ["tile=16", "tile_overlap=4"]).tile == 16


def test_aggregate_and_published_alignment():
    cells = aggregate(
        {"a": [(30.0, 0.9), (32.0, 0.8)], "b": [(20.0, 0.5)], "c": [(10.0, 0.1)]},
        {"a": "G", "b": "G", "c": "C"},
        ["G", "C"],
    )
    assert cells["G"].psnr == pytest.approx(25.5)  # mean of set means (31, 20)
    assert cells["Average"].psnr == pytest.approx((25.5 + 10.0) / 2)
    cols = ["SOTS", "Rain13k-Test", "BSD68", "GoPro", "LOL", "LSDIR-Blur", "LSDIR-JPEG"]
    (row,) = published_rows("table1_seven_tasks", [*cols, "Average"], ["RAM-PromptIR"])
    assert row.cells["Average"].psnr == 28.76 and row.cells["LOL"].ssim == 0.8581
    (t2,) = published_rows("table2_gaussian_denoising_psnr", ["BSD68 s25"], ["SwinIR"])
    assert t2.cells["BSD68 s25"].psnr == 30.89 and t2.cells["BSD68 s25"].ssim is None
    (t6,) = published_rows(
        "table6_finetune_ratio_psnr",
        ["OOD Poisson", "OOD Pepper", "OOD Speckle", "Average"],
        ["RAM-SwinIR 10%"],
    )
    assert t6.cells["OOD Pepper"].psnr == 19.23 and t6.cells["Average"].psnr == 17.99


def test_protocol_presets_load_and_line_up_with_the_paper():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "eval"
    cfgs = {p.stem: load_eval_config(p) for p in sorted(root.glob("*.yaml"))}
    assert {"seven_task", "three_task", "five_task", "noise", "ood_noise", "synthetic7"} <= set(
        cfgs
    )
    seven = cfgs["seven_task"]
    cols = seven.column_order()
    (row,) = published_rows("table1_seven_tasks", [*cols, "Average"], ["RAM-SwinIR"])
    assert set(row.cells) == {*cols, "Average"}  # every published cell has a column
    (row,) = published_rows(
        "table2_gaussian_denoising_psnr", cfgs["noise"].column_order(), ["SwinIR"]
    )
    assert len(row.cells) == 6
    ood = [*cfgs["ood_noise"].column_order(), "Average"]
    (row,) = published_rows("table6_finetune_ratio_psnr", ood, ["SwinIR"])
    assert set(row.cells) == set(ood)


def test_a_row_can_use_the_self_ensemble(setup, tmp_path, capsys):
    """The same checkpoint with and without the flip ensemble: two rows, two results."""
    cfg_path, run = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    swin = cfg["models"][0]
    cfg["models"] = [swin, {**swin, "name": "swinir_flip", "ensemble": "flip"}]
    cfg["data"]["test"] = cfg["data"]["test"][:1]
    cfg.update(conventions=["ram"], published=[], published_rows=[], save_images=False)
    path = tmp_path / "ens.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "-c", str(path), "-q"]) == 0
    rows = json.loads((run / "table.json").read_text())[0]["rows"]
    plain, flip = (r["cells"]["BSD68"]["psnr"] for r in rows)
    assert [r["label"] for r in rows] == ["swinir", "swinir_flip"]
    assert plain != flip
    with pytest.raises(ConfigError, match="ensemble must be one of none, flip, x8, got 'x2'"):
        load_eval_config(path, ["models=[{name: a, checkpoint: b, ensemble: x2}]"])


def test_tiled_evaluation_with_and_without_global_context(setup, tmp_path, capsys):
    """``global_context`` changes a tiled NAFNet's results and is part of the cache key."""
    cfg_path, run = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    torch.manual_seed(1)
    naf = build_model("nafnet_tiny", enc_blk_nums=[1], dec_blk_nums=[1])
    with torch.no_grad():  # beta = gamma = 0 at init make every block (and its pooling) a no-op
        for name, p in naf.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.5)
    ckpt = save_model(naf, tmp_path / "naf_active.safetensors")
    cfg["models"] = [{"name": "nafnet", "checkpoint": str(ckpt)}]  # global pooling per block
    cfg["data"]["test"] = cfg["data"]["test"][:1]
    cfg.update(conventions=["ram"], published=[], published_rows=[], save_images=False)
    cfg.update(tile=16, tile_overlap=4)
    psnr = {}
    for context in (True, False):
        path = tmp_path / f"tiles_{context}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "name": f"t{context}", "global_context": context}))
        assert main(["evaluate", "-c", str(path), "-q"]) == 0
        rows = json.loads((run.parent / f"t{context}" / "table.json").read_text())[0]["rows"]
        psnr[context] = rows[0]["cells"]["BSD68"]["psnr"]
    assert psnr[True] != psnr[False]
    # a run folder made with one setting is not silently reused with the other
    path.write_text(yaml.safe_dump({**cfg, "name": "tTrue", "global_context": False}))
    assert main(["evaluate", "-c", str(path), "-q"]) == 1
    assert "different checkpoint, inference setting" in capsys.readouterr().err


def test_input_row_average_columns_and_photo_gains(tmp_path, setup, capsys):
    """``input_row`` measures the inputs (a clean set is perfect), ``average_columns``
    restricts the average, and the per-photo gains line up with the two rows."""
    from ramir.evaluation.benchmark import INPUT_ROW
    from ramir.evaluation.gains import check_goals, gain_stats

    cfg_path, run = setup
    raw = yaml.safe_load(cfg_path.read_text())
    clean_root = raw["data"]["test"][0]["root"]
    raw["data"]["test"].append(
        {"name": "clean", "layout": "clean_folder", "root": clean_root, "degradation": "identity"}
    )
    raw.update(input_row=True, average_columns=["BSD68", "LSDIR-JPEG"], published=[])
    raw.pop("published_rows")
    path = tmp_path / "eval_input.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_eval_config(path)
    from ramir.evaluation.runner import evaluate

    result = evaluate(cfg, progress=False)
    ram = result.tables[0]
    assert [r.label for r in ram.rows] == [INPUT_ROW, "swinir", "nafnet"]
    inp = ram.rows[0].cells
    assert inp["clean"].psnr == float("inf") and inp["clean"].ssim == pytest.approx(1.0)
    assert inp["BSD68"].psnr < 30  # sigma 25/50 noise
    naf = ram.rows[2].cells
    assert naf["Average"].psnr == pytest.approx((naf["BSD68"].psnr + naf["LSDIR-JPEG"].psnr) / 2)
    assert "Average is the mean over BSD68, LSDIR-JPEG only" in ram.to_markdown()

    gains_md = (cfg.run_dir() / "gains.md").read_text()
    assert "| model | clean: median / worst PSNR | BSD68: mean / worst gain |" in gains_md
    stats = gain_stats(result.per_image, "ram")
    assert set(stats) == {"swinir", "nafnet"}
    s = stats["nafnet"]
    assert s["clean"].mean_gain is None and s["clean"].n == 2
    assert s["clean"].median == pytest.approx(float(naf["clean"].psnr), abs=1.0)
    assert s["BSD68"].n == 4 and s["clean"].worst <= s["clean"].median
    # the mean gain is the mean output PSNR minus the mean input PSNR, photo by photo
    rows = [r for r in result.per_image if r["column"] == "LSDIR-JPEG"]
    ins = {r["key"]: float(r["ram psnr"]) for r in rows if r["model"] == INPUT_ROW}
    outs = {r["key"]: float(r["ram psnr"]) for r in rows if r["model"] == "nafnet"}
    gains = [outs[k] - ins[k] for k in ins]
    assert s["LSDIR-JPEG"].mean_gain == pytest.approx(sum(gains) / len(gains))
    assert s["LSDIR-JPEG"].worst_gain == pytest.approx(min(gains))
    checks = check_goals(s, {"clean": [("worst", -1.0), ("median", 1e9)], "nope": [("gain", 0.0)]})
    assert [c["met"] for c in checks] == [True, False, False]
    assert checks[2]["measured"] is None

    with pytest.raises(ConfigError, match="average_columns must name test-set columns"):
        load_eval_config(path, ["average_columns=[BSD69]"])
    with pytest.raises(ConfigError, match="taken by the input row"):
        load_eval_config(path, ["models=[{name: 'input (no restoration)', checkpoint: x}]"])


def test_released_checkpoints_with_model_args(setup, tmp_path):
    """A release file (NAFNet's BasicSR .pth) is a row like any checkpoint, and
    ``model_args`` (its local statistics) build another network: another result."""
    cfg_path, run = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    torch.manual_seed(2)
    naf = build_model("nafnet_tiny", normalization="none", padding="zeros")
    with torch.no_grad():
        for name, p in naf.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0.0, 0.5)
    release = tmp_path / "NAFNet-test.pth"
    torch.save({"params": naf.state_dict()}, release)
    cfg["models"] = [
        {"name": "global", "checkpoint": str(release)},
        {"name": "local", "checkpoint": str(release), "model_args": {"local_stats": 8}},
    ]
    cfg["data"]["test"] = cfg["data"]["test"][:1]
    cfg.update(conventions=["ram"], published=[], published_rows=[], save_images=False)
    path = tmp_path / "releases.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "-c", str(path), "-q"]) == 0
    rows = json.loads((run / "table.json").read_text())[0]["rows"]
    cells = {r["label"]: r["cells"]["BSD68"]["psnr"] for r in rows}
    assert set(cells) == {"global", "local"} and cells["global"] != cells["local"]


def test_a_missing_checkpoint_is_reported_before_any_row_runs(setup, capsys):
    cfg_path, run = setup
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["models"][1]["checkpoint"] = str(cfg_path.parent / "typo.safetensors")
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 1
    err = capsys.readouterr().err
    assert "checkpoint not found for model(s) 'nafnet'" in err and "Traceback" not in err
    # the first row did not run for nothing
    assert not (run / "per_image" / "swinir").exists()

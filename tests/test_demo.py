"""``ramir demo`` end to end at a tiny scale, and its data recipe."""

from pathlib import Path

import pytest
import torch
import yaml

from ramir.cli import main
from ramir.config import ConfigError
from ramir.demo import TASKS, DemoConfig, demo_data_config, load_demo_config

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "backbone_args={width: 8, enc_blk_nums: [1, 1], dec_blk_nums: [1, 1]}",
    "--set", "eval_crop=48",
    "--set", "analysis_steps=3",
    "--set", "analysis_images=1",
    "--set", "analysis_crop=32",
    "--set", "batch_size=2",
    "--set", "patch_size=32",
    "--set", "ema=0",
]  # fmt: skip


def test_demo_tasks_mirror_the_synthetic7_recipe(tmp_path):
    recipe = yaml.safe_load((REPO / "configs" / "data" / "synthetic7.yaml").read_text())
    ours = demo_data_config(DemoConfig(), tmp_path)
    by_name = {d["name"]: d for d in recipe["datasets"]}
    for d in ours["datasets"]:
        assert d["degradation"] == by_name[d["name"]]["degradation"]
        assert d["params"] == by_name[d["name"]].get("params", {})
    assert [t["params"] for t in ours["test"]] == [t["params"] for t in recipe["test"]]
    assert len(TASKS) == 7


def test_corpus_test_sets_mirror_the_photo_evaluation_recipe(tmp_path):
    recipe = yaml.safe_load((REPO / "configs" / "data" / "photos_eval.yaml").read_text())
    ours = demo_data_config(DemoConfig(eval_photos="corpus"), tmp_path)["test"]
    keys = ("name", "layout", "options", "degradation", "params")
    assert [{k: t.get(k, {}) for k in keys} for t in ours] == [
        {k: t.get(k, {}) for k in keys} for t in recipe["test"]
    ]
    # the seven tasks at the synthetic7 test parameters, plus the extra rows
    names = [t["name"] for t in ours]
    assert names == [
        "clean",
        *[t[0] for t in TASKS],
        "jpeg_q20",
        "noise_jpeg",
        "blur_jpeg",
        "clean_native",
    ]


def test_training_tasks_take_overrides_and_extra_tasks(tmp_path):
    cfg = load_demo_config(
        None,
        [
            "photo_sources=[corpus]",
            "extra_tasks=[mixed]",
            "train_params={blur: {sigma_range: [0.1, 3.0]}, mixed: {steps: [{name: jpeg}]}}",
        ],
    )
    data = demo_data_config(cfg, tmp_path)
    by_name = {d["name"]: d for d in data["datasets"]}
    assert list(by_name) == [t[0] for t in TASKS] + ["mixed"]
    assert by_name["blur"]["params"] == {"sigma_range": [0.1, 3.0]}
    assert by_name["mixed"]["degradation"] == "chain"
    assert by_name["mixed"]["params"] == {"steps": [{"name": "jpeg"}]}
    assert by_name["noise"]["params"] == {"sigma_range": [0, 50]}
    assert all(
        d["layout"] == "photo_corpus" and d["options"] == {"view": "train"}
        for d in by_name.values()
    )


def test_config_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_demo_config(None, ["stepz=3"])
    with pytest.raises(ConfigError, match="pretrain_fraction must be in"):
        load_demo_config(None, ["pretrain_fraction=1.5"])
    with pytest.raises(ConfigError, match="unknown photo source.*'flickr'"):
        load_demo_config(None, ["photo_sources=[skimage, flickr]"])
    with pytest.raises(ConfigError, match="unknown task 'jpg'; tasks: haze"):
        load_demo_config(None, ["finetune_task_weights={jpg: 2}"])
    with pytest.raises(ConfigError, match="'corpus' holds its own photos"):
        load_demo_config(None, ["photo_sources=[corpus, skimage]"])
    with pytest.raises(ConfigError, match="extra_tasks: unknown task 'fog'; choose from mixed"):
        load_demo_config(None, ["extra_tasks=[fog]"])
    with pytest.raises(
        ConfigError, match="train_params\\[blur\\]: degradation 'gaussian_blur' has no"
    ):
        load_demo_config(None, ["train_params={blur: {sigmaa: 2}}"])
    with pytest.raises(ConfigError, match="train_params: unknown task 'mixed'"):
        load_demo_config(None, ["train_params={mixed: {}}"])
    with pytest.raises(ConfigError, match="eval_photos"):
        load_demo_config(None, ["eval_photos=flickr"])


def test_finetune_stage_settings_apply_to_fine_tuning_only(tmp_path):
    from ramir.demo import _training_dict

    cfg = load_demo_config(
        None,
        [
            "finetune_task_weights={jpeg: 3, noise: 0, identity: 4}",
            "finetune_patch_size=96",
            "finetune_batch_size=2",
        ],
    )
    data = demo_data_config(cfg, tmp_path)
    pre, fine = (_training_dict(cfg, data, stage) for stage in ("pretrain", "finetune"))
    assert pre["data"]["sampling"] == "round_robin" and pre["data"]["patch_size"] == 64
    assert pre["train"]["batch_size"] == 8
    assert fine["data"]["sampling"] == "weighted" and fine["data"]["patch_size"] == 96
    assert fine["train"]["batch_size"] == 2
    weights = {d["name"]: d["weight"] for d in fine["data"]["datasets"]}
    assert weights == {t[0]: {"jpeg": 3.0, "noise": 0.0}.get(t[0], 1.0) for t in TASKS}
    assert fine["data"]["identity_weight"] == 4.0 and "identity_weight" not in pre["data"]
    assert "weight" not in data["datasets"][0]  # the shared data section is untouched
    # fine-tuning-only degradation parameters
    cfg = load_demo_config(None, ["finetune_train_params={haze: {scene_scale_range: [1, 8]}}"])
    data = demo_data_config(cfg, tmp_path)
    pre, fine = (_training_dict(cfg, data, stage) for stage in ("pretrain", "finetune"))
    haze = [next(d for d in x["data"]["datasets"] if d["name"] == "haze") for x in (pre, fine)]
    assert haze[0]["params"] == {} and haze[1]["params"] == {"scene_scale_range": [1, 8]}
    with pytest.raises(ConfigError, match="finetune_train_params\\[haze\\]: degradation 'haze'"):
        load_demo_config(None, ["finetune_train_params={haze: {scale: 2}}"])


def test_loader_settings_reach_every_training_stage(tmp_path):
    """num_workers and epoch_length (GPU runs) reach the training configs; defaults add
    nothing, so stages trained before these settings existed are still reused."""
    from ramir.config import from_dict
    from ramir.demo import _training_dict
    from ramir.training.config import TrainingConfig
    from ramir.training.loop import build_dataset

    plain = demo_data_config(load_demo_config(None, []), tmp_path)
    assert "epoch_length" not in plain
    cfg = load_demo_config(None, ["num_workers=3", "epoch_length=640"])
    data = demo_data_config(cfg, tmp_path)
    for stage in ("baseline", "pretrain", "finetune"):
        raw = _training_dict(cfg, data, stage)
        assert raw["train"]["num_workers"] == 3 and raw["data"]["epoch_length"] == 640
    tcfg = from_dict(TrainingConfig, _training_dict(cfg, data, "pretrain"), "<test>")
    assert len(build_dataset(tcfg.data)) == 640
    with pytest.raises(ConfigError, match="num_workers must be >= 0, got -1"):
        load_demo_config(None, ["num_workers=-1"])
    with pytest.raises(ConfigError, match="epoch_length must be >= 1 or null, got 0"):
        load_demo_config(None, ["epoch_length=0"])


def test_photo_sources_reach_the_training_sets_only(tmp_path):
    cfg = load_demo_config(None, ["photo_sources=[skimage, sklearn, matplotlib]"])
    data = demo_data_config(cfg, tmp_path)
    for d in data["datasets"]:
        assert d["options"] == {"sources": ["skimage", "sklearn", "matplotlib"]}
    assert all(t["options"] == {"split": "test"} for t in data["test"])


def test_tiny_demo_writes_every_report_file(tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--steps", "6", "--out", str(out), "--device", "cpu", *TINY])
    assert rc == 0
    for name in [
        "report.md",
        "report.html",
        "mac.png",
        "training_curves.png",
        "before_after.png",
        "results.json",
    ]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert columns == [t[0] for t in TASKS] + ["Average"]
    rows = [
        line.split("|")[1].strip()
        for line in md.splitlines()
        if line.startswith("| ") and "/" in line
    ]
    assert rows == [
        "input (no restoration)",
        "baseline",
        "RAM pretrained (masked)",
        "RAM (MAC)",
        "RAM (IG selection)",
        "RAM (random selection)",
        "shipped default model",
    ]
    assert ("beat" in md) and ("did not beat" in md or "**beat**" in md)
    # the shipped model, evaluated on the same photos, says what it is and took
    assert "**shipped default model** = the model `ramir restore` uses" in md
    assert "it was not trained on these test photos" in md
    page = (out / "report.html").read_text()
    assert "<code>ramir restore</code>" in page and "`" not in page.split("<pre>")[0]
    # a second run reuses every stage (resumable) and gives the same table
    first = (out / "results.json").read_text()
    exported = tmp_path / "exported.safetensors"
    again = ["demo", "--steps", "6", "--out", str(out), "--device", "cpu", *TINY]
    assert main([*again, "--set", f"export_model={exported}"]) == 0
    import json

    results = json.loads((out / "results.json").read_text())
    assert json.loads(first)["table"] == results["table"]
    # the exported model (as the default-model recipe ships it) records its recipe and
    # its held-out scores, and holds exactly the RAM (MAC) weights
    from ramir.checkpoint import load_model, read_metadata
    from ramir.training.checkpoint import resolve_weights_path

    extra = read_metadata(exported)["extra"]
    assert extra["recipe"]["steps"] == 6 and extra["recipe"]["photo_sources"] == ["skimage"]
    assert "out_dir" not in extra["recipe"]
    assert isinstance(extra["train_seconds"], int)  # summed from the stages' logged speeds
    assert extra["held_out"] == results["table"]["RAM (MAC)"]
    shipped, trained = (
        load_model(exported),
        load_model(resolve_weights_path(out / "ram_finetune_mac", "ema")),
    )
    for (k, a), (_, b) in zip(
        shipped.state_dict().items(), trained.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_tiny_demo_on_the_photo_corpus_reports_do_no_harm(tmp_path, tiny_corpus):
    """Trained on the corpus, judged on its evaluation split with the extra rows."""
    import json

    out = tmp_path / "demo"
    exported = tmp_path / "exported.safetensors"
    args = ["demo", "--steps", "4", "--out", str(out), "--device", "cpu", "--no-ablation", *TINY]
    args += ["--set", "photo_sources=[corpus]", "eval_photos=corpus", "extra_tasks=[mixed]"]
    args += ["--set", "baseline=false", f"export_model={exported}", "eval_crop=null"]
    args += ["--set", "compare_default=false"]
    assert main(args) == 0
    md = (out / "report.md").read_text()
    assert "shipped default model" not in md
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    assert columns[0] == "clean" and columns[-2:] == ["clean_native", "Average"]
    assert "## Do no harm: photo by photo" in md
    assert "clean: median / worst PSNR" in md and "noise_jpeg: mean / worst gain" in md
    assert "2 photos of the corpus's evaluation split (evalpkg)" in md
    assert (out / "unseen_photos.png").stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    goals = {(g["column"], g["statistic"]): g for g in results["goals"]}
    assert set(goals) == {
        ("clean", "median"),
        ("clean", "worst"),
        ("noise", "gain"),
        ("jpeg_q20", "gain"),
        ("blur", "gain"),
        ("noise_jpeg", "gain"),
    }
    stats = results["photo_stats"]["RAM (MAC)"]
    assert goals[("clean", "worst")]["measured"] == stats["clean"]["worst"]
    assert stats["clean"]["mean_gain"] is None and stats["noise"]["n"] == 2
    # the input row: clean inputs are perfect, degraded ones are not
    assert results["table"]["input (no restoration)"]["clean"]["psnr"] == float("inf")
    from ramir.checkpoint import read_metadata

    extra = read_metadata(exported)["extra"]
    assert extra["photo_eval"]["goals"] == results["goals"]
    assert extra["recipe"]["photo_sources"] == ["corpus"]


@pytest.mark.slow
def test_demo_on_a_user_folder(tmp_path):
    from ramir.data import materialize_sample_photos

    photos = tmp_path / "photos"
    materialize_sample_photos(photos, "all")
    for p in sorted(photos.iterdir())[5:]:
        p.unlink()
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--steps",
            "4",
            "--out",
            str(out),
            "--data",
            str(photos),
            "--no-ablation",
            "--device",
            "cpu",
            *TINY,
        ]
    )
    assert rc == 0
    train = sorted(p.name for p in (out / "photos" / "train").iterdir())
    test = sorted(p.name for p in (out / "photos" / "test").iterdir())
    assert len(test) == 1 and len(train) == 4 and not set(train) & set(test)
    assert "Test photos: " + test[0] in (out / "report.md").read_text()


def test_report_html_renders_inline_code_and_bold():
    from ramir.demo import _md_inline

    assert _md_inline("run `ramir restore` **now** <x>") == (
        "run <code>ramir restore</code> <strong>now</strong> &lt;x&gt;"
    )


def test_stages_trained_before_a_new_setting_existed_are_still_reused():
    """A setting ramir gained later (at its default) does not make a finished stage
    "trained with other settings"; a changed value does."""
    from ramir.demo import _same_settings

    defaults = {"train": {"mask": {"ratio": 0.5, "per_rank": True}}, "seed": 0}
    old = {"train": {"mask": {"ratio": 0.5}}, "seed": 0}
    assert _same_settings(old, {"train": {"mask": {"ratio": 0.5, "per_rank": True}}, "seed": 0},
                          defaults)  # fmt: skip
    assert not _same_settings(
        old, {"train": {"mask": {"ratio": 0.5, "per_rank": False}}, "seed": 0}, defaults
    )
    assert not _same_settings(old, {"train": {"mask": {"ratio": 0.4}}, "seed": 0}, defaults)
    assert not _same_settings(old, {"train": {"mask": {"ratio": 0.5}}}, defaults)

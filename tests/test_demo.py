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


def test_demo_tasks_are_read_from_the_synthetic7_recipe(tmp_path):
    """The demo's tasks are configs/data/synthetic7.yaml's, read from it (the package's
    asset is a link to that file), each training set paired with its test set."""
    from ramir.demo.tasks import ASSET, read_recipe

    recipe = yaml.safe_load((REPO / "configs" / "data" / "synthetic7.yaml").read_text())
    assert read_recipe() == recipe
    asset = REPO / "src" / "ramir" / "assets" / ASSET
    assert asset.resolve() == (REPO / "configs" / "data" / "synthetic7.yaml").resolve()
    assert [tuple(t) for t in TASKS] == [
        (d["name"], d["degradation"], d.get("params", {}), t["params"])
        for d, t in zip(recipe["datasets"], recipe["test"], strict=True)
    ]
    ours = demo_data_config(DemoConfig(), tmp_path)
    assert [(d["name"], d["degradation"], d["params"]) for d in ours["datasets"]] == [
        (d["name"], d["degradation"], d.get("params", {})) for d in recipe["datasets"]
    ]
    assert [(t["degradation"], t["params"]) for t in ours["test"]] == [
        (t["degradation"], t["params"]) for t in recipe["test"]
    ]


def test_the_recipe_is_found_in_a_checkout_without_symbolic_links(tmp_path, monkeypatch):
    """There the package's asset is a text file holding the link's target."""
    from ramir.demo import tasks

    recipe = REPO / "configs" / "data" / "synthetic7.yaml"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "synthetic7.yaml").write_text(recipe.read_text())
    (tmp_path / "ramir" / "assets").mkdir(parents=True)
    (tmp_path / "ramir" / "assets" / tasks.ASSET).write_text("../../configs/synthetic7.yaml")
    monkeypatch.setattr(tasks.resources, "files", lambda package: tmp_path / package)
    assert tasks.load_tasks() == TASKS


def test_a_recipe_whose_test_sets_do_not_pair_with_its_training_sets_is_refused():
    from ramir.demo.tasks import tasks_from_recipe

    train = [{"name": "noise", "degradation": "gaussian_noise"}]
    with pytest.raises(ValueError, match="one test set per training set"):
        tasks_from_recipe({"datasets": train, "test": []})
    with pytest.raises(ValueError, match="'noise' .* and test set 'jpeg_q50' .* must pair"):
        tasks_from_recipe(
            {"datasets": train, "test": [{"name": "jpeg_q50", "degradation": "jpeg"}]}
        )


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
        ConfigError, match="train_params\\[blur\\]: degradation 'gaussian_blur' got unknown param"
    ):
        load_demo_config(None, ["train_params={blur: {sigmaa: 2}}"])
    with pytest.raises(ConfigError, match="train_params: unknown task 'mixed'"):
        load_demo_config(None, ["train_params={mixed: {}}"])
    with pytest.raises(ConfigError, match="eval_photos"):
        load_demo_config(None, ["eval_photos=flickr"])


def test_finetune_stage_settings_apply_to_fine_tuning_only(tmp_path):
    from ramir.demo import training_config

    cfg = load_demo_config(
        None,
        [
            "finetune_task_weights={jpeg: 3, noise: 0, identity: 4}",
            "finetune_patch_size=96",
            "finetune_batch_size=2",
            "finetune_identity_tone=0.25",
            "finetune_scene_tone=0.5",
        ],
    )
    data = demo_data_config(cfg, tmp_path)
    pre, fine = (training_config(cfg, data, stage) for stage in ("pretrain", "finetune"))
    assert pre.data.sampling == "round_robin" and pre.data.patch_size == 64
    assert pre.train.batch_size == 8
    assert fine.data.sampling == "weighted" and fine.data.patch_size == 96
    assert fine.train.batch_size == 2
    weights = {d.name: d.weight for d in fine.data.datasets}
    assert weights == {t[0]: {"jpeg": 3.0, "noise": 0.0}.get(t[0], 1.0) for t in TASKS}
    assert fine.data.identity_weight == 4.0 and pre.data.identity_weight == 1.0  # the default
    assert fine.data.identity_tone == 0.25 and pre.data.identity_tone == 0.0
    assert fine.data.scene_tone == 0.5 and pre.data.scene_tone == 0.0
    assert "weight" not in data["datasets"][0]  # the shared data section is untouched
    # fine-tuning-only degradation parameters
    cfg = load_demo_config(None, ["finetune_train_params={haze: {scene_scale_range: [1, 8]}}"])
    data = demo_data_config(cfg, tmp_path)
    pre, fine = (training_config(cfg, data, stage) for stage in ("pretrain", "finetune"))
    haze = [next(d for d in x.data.datasets if d.name == "haze") for x in (pre, fine)]
    assert haze[0].params == {} and haze[1].params == {"scene_scale_range": [1, 8]}
    with pytest.raises(ConfigError, match="finetune_train_params\\[haze\\]: degradation 'haze'"):
        load_demo_config(None, ["finetune_train_params={haze: {scale: 2}}"])


def test_loader_settings_reach_every_training_stage(tmp_path):
    """num_workers and epoch_length (GPU runs) reach the training configs; defaults add
    nothing, so stages trained before these settings existed are still reused."""
    from ramir.data import build_mixture as build_dataset
    from ramir.demo import training_config

    plain = demo_data_config(load_demo_config(None, []), tmp_path)
    assert "epoch_length" not in plain
    cfg = load_demo_config(None, ["num_workers=3", "epoch_length=640"])
    data = demo_data_config(cfg, tmp_path)
    for stage in ("baseline", "pretrain", "finetune"):
        tcfg = training_config(cfg, data, stage)
        assert tcfg.train.num_workers == 3 and tcfg.data.epoch_length == 640
    assert len(build_dataset(training_config(cfg, data, "pretrain").data)) == 640
    with pytest.raises(ConfigError, match="num_workers must be >= 0, got -1"):
        load_demo_config(None, ["num_workers=-1"])
    with pytest.raises(ConfigError, match="epoch_length must be >= 1 or null, got 0"):
        load_demo_config(None, ["epoch_length=0"])


def test_stage_configs_are_typed_and_their_plain_data_builds_the_same_config(tmp_path):
    """Each stage's config comes from the typed sections (a renamed setting fails here);
    ``training_dict`` (for callers that edit a few keys) builds the same config back."""
    from ramir.config import from_dict
    from ramir.demo.stages import training_config, training_dict
    from ramir.training.config import FinetuneConfig, TrainingConfig

    cfg = load_demo_config(None, [])
    data = demo_data_config(cfg, tmp_path)
    for stage in ("baseline", "pretrain", "finetune"):
        tcfg = training_config(cfg, data, stage)
        assert type(tcfg) is TrainingConfig
        assert from_dict(TrainingConfig, training_dict(cfg, data, stage)) == tcfg
        assert tcfg.train.input == ("masked" if stage == "pretrain" else "whole")
        assert tcfg.train.model_mode == ("eval" if stage == "finetune" else "train")
    fine = training_config(cfg, data, "finetune", init=tmp_path / "pre", layers=["a.b", "c"])
    assert isinstance(fine, FinetuneConfig) and fine.select.layers == ["a.b", "c"]
    assert fine.model.init == str(tmp_path / "pre") and fine.model.init_weights == "ema"
    assert fine.optim.lr == cfg.finetune_lr and fine.schedule.eta_min == cfg.finetune_lr * 0.01


def test_photo_sources_reach_the_training_sets_only(tmp_path):
    cfg = load_demo_config(None, ["photo_sources=[skimage, sklearn, matplotlib]"])
    data = demo_data_config(cfg, tmp_path)
    for d in data["datasets"]:
        assert d["options"] == {"sources": ["skimage", "sklearn", "matplotlib"]}
    assert all(t["options"] == {"split": "test"} for t in data["test"])


def test_tiny_demo_writes_every_report_file(tmp_path, monkeypatch):
    import json

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
    lines = md.splitlines()
    results_table = lines[lines.index(header) + 2 :]
    results_table = results_table[: next(i for i, x in enumerate(results_table) if not x)]
    rows = [line.split("|")[1].strip() for line in results_table]
    assert rows == [
        "input (no restoration)",
        "baseline",
        "RAM pretrained (masked)",
        "RAM (MAC)",
        "RAM (IG selection)",
        "RAM (random selection)",
        "shipped default model",
    ]
    # the classical baselines' own section (scikit-image's at least), told the task
    classical = md[md.index("## Classical baselines, told the task") :]
    assert "| tv |" in classical and "| unsharp |" in classical and "s / image" in classical
    # the verdict is the one the measured averages give (either way)
    results = json.loads((out / "results.json").read_text())
    ram = results["table"]["RAM (MAC)"]["Average"]["psnr"]
    base = results["table"]["baseline"]["Average"]["psnr"]
    assert results["ram_beats_baseline"] == (ram > base)
    verdict = (
        f"RAM (masked pretraining + MAC-selected fine-tuning) **beat** the baseline by "
        f"{ram - base:+.2f} dB average PSNR"
        if ram > base
        else f"RAM **did not beat** the baseline: {ram - base:+.2f} dB average PSNR"
    )
    assert verdict in md
    # the shipped model, evaluated on the same photos, says what it is and took
    assert "**shipped default model** = the model `ramir restore` uses" in md
    assert "it was not trained on these test photos" in md
    page = (out / "report.html").read_text()
    assert "<code>ramir restore</code>" in page and "`" not in page.split("<pre>")[0]
    # a second run reuses every training and analysis stage: nothing is trained or
    # analysed again, no stage output is rewritten; the table comes out the same
    stages = ["baseline", "ram_pretrain"]
    stages += [
        f"{kind}_{m}" for m in ("mac", "ig", "random") for kind in ("analyze", "ram_finetune")
    ]
    from ramir.demo import STAGE_FILE

    def outputs() -> dict[Path, int]:
        return {
            p: p.stat().st_mtime_ns
            for stage in stages
            for p in (out / stage).rglob("*")
            if p.is_file() and p.name != STAGE_FILE
        }

    before = outputs()
    assert {
        p.parent.name for p in before if p.name == "model.safetensors" and p.parent.parent == out
    } == {s for s in stages if not s.startswith("analyze")}
    assert {p.parent.name for p in before if p.name == "mac.json"} == {
        s for s in stages if s.startswith("analyze")
    }

    def recompute(*args, **kwargs):
        raise AssertionError("a finished stage was computed again")

    monkeypatch.setattr("ramir.training.loop.train", recompute)
    monkeypatch.setattr("ramir.attribution.analysis.run_analysis", recompute)
    exported = tmp_path / "exported.safetensors"
    again = ["demo", "--steps", "6", "--out", str(out), "--device", "cpu", *TINY]
    assert main([*again, "--set", f"export_model={exported}"]) == 0
    assert outputs() == before
    first, results = results, json.loads((out / "results.json").read_text())
    assert first["table"] == results["table"]
    # the exported model (as the default-model recipe ships it) records its recipe and
    # its held-out scores, and holds exactly the RAM (MAC) weights
    from ramir.checkpoint import load_model, read_metadata, resolve_weights_path

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
    from ramir.demo.document import md_inline

    assert md_inline("run `ramir restore` **now** <x>") == (
        "run <code>ramir restore</code> <strong>now</strong> &lt;x&gt;"
    )


def test_stages_trained_before_a_new_setting_existed_are_still_reused():
    """A setting ramir gained later (at its default) does not make a finished stage
    "trained with other settings"; a changed value does."""
    from ramir.demo.stages import _same_settings

    defaults = {"train": {"mask": {"ratio": 0.5, "per_rank": True}}, "seed": 0}
    old = {"train": {"mask": {"ratio": 0.5}}, "seed": 0}
    assert _same_settings(old, {"train": {"mask": {"ratio": 0.5, "per_rank": True}}, "seed": 0},
                          defaults)  # fmt: skip
    assert not _same_settings(
        old, {"train": {"mask": {"ratio": 0.5, "per_rank": False}}, "seed": 0}, defaults
    )
    assert not _same_settings(old, {"train": {"mask": {"ratio": 0.4}}, "seed": 0}, defaults)
    assert not _same_settings(old, {"train": {"mask": {"ratio": 0.5}}}, defaults)


def _html_rows(page: str) -> list[list[tuple[str, str, bool]]]:
    """(tag, text, best) of every cell of every row of the HTML tables in ``page``; a
    cell's second line (``<br><small>``) joins its text with `` / ``."""
    from html.parser import HTMLParser

    rows: list[list[tuple[str, str, bool]]] = []

    class Cells(HTMLParser):
        cell: list | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                rows.append([])
            elif tag in ("th", "td"):
                self.cell = [tag, "", ("class", "best") in attrs]
            elif tag == "br" and self.cell is not None:
                self.cell[1] += " / "

        def handle_endtag(self, tag):
            if tag in ("th", "td") and self.cell is not None:
                rows[-1].append(tuple(self.cell))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell[1] += data

    Cells(convert_charrefs=True).feed(page)
    return rows


def test_one_table_model_renders_the_same_cells_in_markdown_and_html():
    import re

    from ramir.demo.document import (
        Cell,
        Document,
        Paragraph,
        Section,
        Table,
        to_html,
        to_markdown,
    )

    table = Table(
        ["model", "a<b", "c|d", "e&f"],
        [
            ["x & y", Cell("1.00", "0.5000", best=True), "–", Cell('"q"')],
            ["<z>", Cell("2.00", "0.2500"), Cell("p|q"), Cell("<br>", best=True)],
        ],
    )
    doc = Document("t", [Paragraph("intro"), Section("Results", [table])])
    md, page = to_markdown(doc), to_html(doc)
    # Markdown: a header, a separator and one line per row, cells split on unescaped |
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[1] == "|---|---|---|---|"
    md_rows = [
        [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in [lines[0], *lines[2:]]
    ]
    html_rows = _html_rows(page)
    expected = [
        ["model", "a<b", "c|d", "e&f"],
        ["x & y", "1.00 / 0.5000", "–", '"q"'],
        ["<z>", "2.00 / 0.2500", "p|q", "<br>"],
    ]
    assert [[c.removeprefix("**").removesuffix("**") for c in row] for row in md_rows] == expected
    assert [[c[1] for c in row] for row in html_rows] == expected
    # the same cells are the best ones; header and row labels are header cells in HTML
    assert [[c.startswith("**") for c in row] for row in md_rows] == [
        [c[2] for c in row] for row in html_rows
    ]
    assert md_rows[1][1] == "**1.00 / 0.5000**" and html_rows[2][3][2]
    assert [c[0] for c in html_rows[0]] == ["th"] * 4
    assert [[c[0] for c in row[:2]] for row in html_rows[1:]] == [["th", "td"]] * 2
    # the HTML is escaped, nothing of the cells' text is markup
    for raw in ("a&lt;b", "x &amp; y", "&lt;z&gt;", "&lt;br&gt;", "&quot;q&quot;", "e&amp;f"):
        assert raw in page, raw
    assert "<z>" not in page and "a<b" not in page
    assert "## Results" in md and "<h2>Results</h2>" in page


@pytest.mark.parametrize("ram_psnr, verdict", [(20.5, "**beat** the baseline by +0.50 dB"),
                                               (19.0, "**did not beat** the baseline: -1.00 dB")])  # fmt: skip
def test_report_says_what_the_table_measured_in_both_formats(ram_psnr, verdict):
    from ramir.demo.document import md_inline, to_html, to_markdown
    from ramir.demo.report import build_report

    def row(psnr):
        return {"haze": {"psnr": psnr, "ssim": 0.5}, "Average": {"psnr": psnr, "ssim": 0.5}}

    table = {"baseline": row(20.0), "RAM (MAC)": row(ram_psnr), "<odd> & row": row(1.0)}
    facts = {"selected": ["intro", "ending"], "n_selected": 2, "n_layers": 9, "trainable": 10,
             "total": 100, "test_photos": ["chelsea"], "device": "cpu", "seconds": 60.0,
             "same_selection": [], "default_model": ""}  # fmt: skip
    doc, beats = build_report(DemoConfig(ablation=False), table, ["haze", "Average"], facts)
    assert beats == (ram_psnr > 20.0)
    md, page = to_markdown(doc), to_html(doc)
    assert verdict in md and md_inline(verdict) in page
    md_rows = [line for line in md.splitlines() if line.startswith("| ")]
    html_rows = _html_rows(page)
    assert len(md_rows) == len(html_rows) == 4
    best = "RAM (MAC)" if beats else "baseline"
    assert f"| {best} | **{max(ram_psnr, 20.0):.2f} / 0.5000** |" in md
    assert [c[1] for c in html_rows[3]] == ["<odd> & row", "1.00 / 0.5000", "1.00 / 0.5000"]
    assert "&lt;odd&gt; &amp; row" in page

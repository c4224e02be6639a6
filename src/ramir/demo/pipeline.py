"""The demo's pipeline: data, baseline, masked pretraining, MAC analysis, fine-tuning,
evaluation; every stage in its own folder, reused when it already holds a finished run
of the same settings. :func:`run_demo` then hands the numbers to :mod:`ramir.demo.report`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ramir.config import from_dict, save_config, to_dict
from ramir.demo.config import (
    CORPUS_TESTS_AFTER,
    CORPUS_TESTS_BEFORE,
    DEFAULT_LABEL,
    GOALS,
    SELECTION_LABEL,
    SELECTIONS,
    TASKS,
    DemoConfig,
)


@dataclass
class DemoResult:
    out_dir: Path
    report_md: Path
    report_html: Path
    table: dict[str, dict[str, dict[str, float]]]  # row -> column -> {psnr, ssim}
    ram_beats_baseline: bool
    seconds: float


# ----------------------------------------------------------------------------- data


def _split_folder(folder: Path, out: Path, held_out: float, seed: int) -> tuple[Path, Path]:
    """Split a folder of clean photos into ``out/photos/{train,test}`` (links or copies)."""
    from ramir.data.io import list_images

    images = list_images(folder)
    if len(images) < 2:
        raise ValueError(
            f"--data {folder}: need at least 2 images (some to train on, one held out), "
            f"found {len(images)}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_test = max(1, int(round(held_out * len(images))))
    test = {int(i) for i in order[:n_test]}
    dirs = {"train": out / "photos" / "train", "test": out / "photos" / "test"}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        dest = dirs["test" if i in test else "train"] / img.name
        if not dest.exists():
            try:
                dest.symlink_to(img.resolve())
            except OSError:
                shutil.copy2(img, dest)
    return dirs["train"], dirs["test"]


def _corpus_options(cfg: DemoConfig, view: str) -> dict[str, Any]:
    return {"view": view, **({"cache_dir": cfg.corpus_cache} if cfg.corpus_cache else {})}


def demo_data_config(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """The demo's data section: the training tasks + identity, and the fixed test sets."""
    if list(cfg.photo_sources) == ["corpus"]:
        train_source: dict[str, Any] = {
            "layout": "photo_corpus",
            "options": _corpus_options(cfg, "train"),
        }
    else:
        train_source = {
            "layout": "skimage_photos",
            **(
                {"options": {"sources": list(cfg.photo_sources)}}
                if list(cfg.photo_sources) != ["skimage"]
                else {}
            ),
        }
    crop = {"center_crop": cfg.eval_crop} if cfg.eval_crop else {}
    if cfg.eval_photos == "corpus":
        tests = [
            *CORPUS_TESTS_BEFORE,
            *[(name, deg, test, "eval") for name, deg, _, test in TASKS],
            *CORPUS_TESTS_AFTER,
        ]
        test_sets = [
            {
                "name": name,
                "layout": "photo_corpus",
                "options": _corpus_options(cfg, view),
                "degradation": deg,
                "params": dict(params),
                "seed": cfg.seed,
                **crop,
            }
            for name, deg, params, view in tests
        ]
    else:
        test_sets = [
            {
                "name": name,
                "layout": "skimage_photos",
                "options": {"split": "test"},
                "degradation": deg,
                "params": dict(test),
                "seed": cfg.seed,
                **crop,
            }
            for name, deg, _, test in TASKS
        ]
    data: dict[str, Any] = {
        "patch_size": cfg.patch_size,
        "hflip": True,
        "identity": True,
        "sampling": "round_robin",
        "seed": cfg.seed,
        **({"epoch_length": cfg.epoch_length} if cfg.epoch_length else {}),
        "datasets": [
            {
                "name": name,
                **train_source,
                "degradation": deg,
                "params": params,
                "cache": True,
            }
            for name, deg, params in cfg.training_tasks()
        ],
        "test": test_sets,
    }
    if cfg.data:
        train_dir, test_dir = _split_folder(
            Path(cfg.data).expanduser(), out, cfg.held_out, cfg.seed
        )
        data["clean_root"] = str(train_dir.resolve())
        data["clean_test_root"] = str(test_dir.resolve())
    return data


# ----------------------------------------------------------------------------- stages


def _training_dict(cfg: DemoConfig, data: dict[str, Any], stage: str) -> dict[str, Any]:
    """A training config (as data) for ``stage``: baseline | pretrain | finetune."""
    steps = {"baseline": cfg.steps, "pretrain": cfg.pretrain_steps, "finetune": cfg.finetune_steps}[
        stage
    ]
    lr = cfg.finetune_lr if stage == "finetune" else cfg.lr
    batch_size = cfg.batch_size
    if stage == "finetune":
        batch_size = cfg.finetune_batch_size or cfg.batch_size
        if cfg.finetune_patch_size:
            data = {**data, "patch_size": cfg.finetune_patch_size}
        if cfg.finetune_train_params:
            extra = cfg.finetune_train_params
            data = {
                **data,
                "datasets": [
                    {**d, "params": {**d["params"], **extra.get(d["name"], {})}}
                    for d in data["datasets"]
                ],
            }
        if cfg.finetune_task_weights:
            weights = cfg.finetune_task_weights
            data = {
                **data,
                "sampling": "weighted",
                "identity_weight": float(weights.get("identity", 1.0)),
                "datasets": [
                    {**d, "weight": float(weights.get(d["name"], 1.0))} for d in data["datasets"]
                ],
            }
    warmup = min(50, steps // 10)
    return {
        "model": {"name": cfg.backbone, "args": cfg.model_args()},
        "data": data,
        "train": {
            "total_iter": steps,
            "batch_size": batch_size,
            "input": "masked" if stage == "pretrain" else "whole",
            "mask": {"ratio": cfg.mask_ratio, "patch_size": 1, "shared": True},
            "seed": cfg.seed,
            "device": cfg.device,
            "precision": cfg.precision,
            "num_workers": cfg.num_workers,
            "model_mode": "eval" if stage == "finetune" else "train",
        },
        "optim": {"type": "Adam", "lr": lr, "betas": [0.9, 0.99]},
        "schedule": {"type": "cosine", "warmup_iter": warmup, "eta_min": lr * 0.01},
        "ema": {"decay": cfg.ema},
        "logging": {
            "log_every": max(1, min(10, steps // 20)),
            "image_every": 0,
            "tensorboard": False,
            "progress": True,
            "plot": True,
        },
        "checkpoint": {"every": max(50, min(steps // 4, 2000)), "keep_last": 1},
    }


STAGE_FILE = "demo_stage.json"


def _same_settings(old: Any, new: Any, defaults: Any) -> bool:
    """``old == new``, except that a setting ramir gained after ``old`` was recorded
    counts as unchanged while it sits at its default (``defaults``, same nesting)."""
    if isinstance(old, dict) and isinstance(new, dict):
        defaults = defaults if isinstance(defaults, dict) else {}
        for key in set(old) | set(new):
            if key not in new:
                return False
            if key not in old:
                if key not in defaults or new[key] != defaults[key]:
                    return False
            elif not _same_settings(old[key], new[key], defaults.get(key)):
                return False
        return True
    return bool(old == new)


def _done(run: Path, settings: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Whether stage folder ``run`` already holds a finished run of these ``settings``.

    A folder made with other settings is an error rather than silently reused; settings
    that ramir gained since, at their ``defaults``, do not count as other settings.
    """
    stamp = run / STAGE_FILE
    if stamp.is_file() and not _same_settings(
        json.loads(stamp.read_text()), settings, defaults or {}
    ):
        raise ValueError(
            f"{run} was trained with other settings than this demo config; use another "
            "--out folder, or delete that stage folder to retrain it"
        )
    run.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings, sort_keys=True), encoding="utf-8")
    return (run / "model.safetensors").is_file()


def _train_stage(cfg: DemoConfig, data: dict[str, Any], stage: str, run: Path, **extra: Any):
    from ramir.training.config import FinetuneConfig, TrainingConfig
    from ramir.training.finetune import layer_selection
    from ramir.training.loop import train

    raw = _training_dict(cfg, data, stage)
    schema: type[TrainingConfig] = TrainingConfig
    if stage == "finetune":
        raw["model"]["init"] = str(extra.pop("init"))
        raw["model"]["init_weights"] = "ema"
        layers = extra.pop("layers")
        raw["select"] = {"layers": layers}
        extra["trainable"] = layer_selection(layers)
        schema = FinetuneConfig
    tcfg = from_dict(schema, raw, f"<demo {stage}>")
    defaults = json.loads(json.dumps(to_dict(schema()), default=str))
    if _done(run, json.loads(json.dumps(to_dict(tcfg), default=str)), defaults):
        print(f"[demo] {run.name}: already trained, reusing it", flush=True)
        return
    print(f"[demo] {run.name}: {stage} for {raw['train']['total_iter']} iterations", flush=True)
    train(tcfg, run, **extra)


def _weights(run: Path) -> Path:
    from ramir.training.checkpoint import resolve_weights_path

    return resolve_weights_path(run, "ema")


def _analyze(
    cfg: DemoConfig, method: str, pretrained: Path, data_yaml: Path, out: Path
) -> list[str]:
    """Rank the pretrained model's layers by ``method``; return the selected layers."""
    from ramir.attribution import load_mac
    from ramir.attribution.analysis import run_analysis
    from ramir.attribution.config import AnalysisImages, AnalyzeConfig
    from ramir.attribution.selection import select_for_finetuning

    if not (out / "mac.json").is_file():
        acfg = AnalyzeConfig(
            checkpoint=str(pretrained),
            images=AnalysisImages(
                source="mixture",
                data=str(data_yaml),
                count=cfg.analysis_images,
                crop=cfg.analysis_crop,
            ),
            method=method,  # type: ignore[arg-type]
            steps=cfg.analysis_steps,
            seed=cfg.seed,
            device=cfg.device,
            select_ratio=cfg.finetune_ratio,
            chunk=8,
        )
        print(f"[demo] analyze ({method}) on {pretrained.name}", flush=True)
        run_analysis(acfg, out)
    mac = load_mac(out / "mac.json")
    return select_for_finetuning(mac.scores, cfg.finetune_ratio, setting="finetune_ratio")


def _evaluate(cfg: DemoConfig, data: dict[str, Any], models: dict[str, Path], out: Path):
    from ramir.evaluation.config import EvalConfig
    from ramir.evaluation.runner import evaluate

    ecfg = from_dict(
        EvalConfig,
        {
            "name": "eval",
            "output_dir": str(out),
            "models": [{"name": name, "checkpoint": str(path)} for name, path in models.items()],
            "data": {
                "test": data["test"],
                **{k: data[k] for k in ("clean_test_root", "seed") if k in data},
            },
            "conventions": ["ram"],
            "device": cfg.device,
            "published": [],
            "input_row": True,
            # Average over the seven tasks, as in every other table of the project
            "average_columns": [t[0] for t in TASKS],
        },
        "<demo eval>",
    )
    # Recomputed every time: a stage retrained since the last run changes its checkpoint.
    return evaluate(ecfg, progress=True, restart=True)


def _table_dict(table: Any) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in table.rows:
        if row.kind != "ours":
            continue
        out[row.label] = {
            col: {"psnr": cell.psnr, "ssim": cell.ssim}
            for col, cell in row.cells.items()
            if cell.psnr is not None
        }
    return out


# ----------------------------------------------------------------------------- driver


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo as ``cfg`` says; return where the report is and the table."""
    from ramir.demo.report import build_report, write_report
    from ramir.evaluation.benchmark import AVERAGE

    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    data = demo_data_config(cfg, out)
    data_yaml = save_config({"data": data}, out / "data.yaml")

    selected = _train_models(cfg, data, data_yaml, out)
    models = _models(cfg, out, list(selected))
    shipped = _shipped_model() if cfg.compare_default else None
    if shipped is not None:
        models[DEFAULT_LABEL] = shipped
    result = _evaluate(cfg, data, models, out)
    table_obj = result.tables[0]
    table = _table_dict(table_obj)
    columns = [c for c in table_obj.columns if c != AVERAGE] + [AVERAGE]
    _figures(cfg, data, models, list(selected), out)

    facts = _facts(cfg, out, selected, shipped)
    stats = None
    if cfg.eval_photos == "corpus":
        from ramir.evaluation.gains import check_goals, gain_stats

        stats = gain_stats(result.per_image)
        graded = [r for r in table if r in stats]
        facts["goals"] = check_goals(stats[graded[-1]], GOALS) if graded else []
        facts["photo_stats"] = {
            m: {c: v.__dict__ for c, v in cols.items()} for m, cols in stats.items()
        }
    facts["seconds"] = time.perf_counter() - start
    if cfg.export_model:
        dest = _export(
            cfg,
            models[SELECTION_LABEL["mac"]],
            table.get(SELECTION_LABEL["mac"]),
            {
                "goals": facts["goals"],
                "table": facts["photo_stats"].get(SELECTION_LABEL["mac"]),
            }
            if stats is not None
            else None,
        )
        print(f"[demo] exported the RAM (MAC) model to {dest}", flush=True)
    document, beats = build_report(cfg, table, columns, facts, stats)
    md, page = write_report(document, out)
    (out / "results.json").write_text(
        json.dumps(
            {"table": table, "columns": columns, "ram_beats_baseline": beats, **facts},
            indent=2,
        ),
        encoding="utf-8",
    )
    return DemoResult(out, md, page, table, beats, facts["seconds"])


def _train_models(
    cfg: DemoConfig, data: dict[str, Any], data_yaml: Path, out: Path
) -> dict[str, list[str]]:
    """Baseline, masked pretraining, then per selection method its analysis and its
    fine-tuning; return the layers each method selected (``mac`` first)."""
    if cfg.baseline:
        _train_stage(cfg, data, "baseline", out / "baseline")
    _train_stage(cfg, data, "pretrain", out / "ram_pretrain")
    pretrained = _weights(out / "ram_pretrain")
    selected: dict[str, list[str]] = {}
    for m in SELECTIONS if cfg.ablation else ("mac",):
        selected[m] = _analyze(cfg, m, pretrained, data_yaml, out / f"analyze_{m}")
        _train_stage(
            cfg,
            data,
            "finetune",
            out / f"ram_finetune_{m}",
            init=out / "ram_pretrain",
            layers=selected[m],
        )
    return selected


def _models(cfg: DemoConfig, out: Path, methods: list[str]) -> dict[str, Path]:
    """Table row -> weights of every model this run trained."""
    models = {"baseline": _weights(out / "baseline")} if cfg.baseline else {}
    models["RAM pretrained (masked)"] = _weights(out / "ram_pretrain")
    for m in methods:
        models[SELECTION_LABEL[m]] = _weights(out / f"ram_finetune_{m}")
    return models


def _figures(
    cfg: DemoConfig, data: dict[str, Any], models: dict[str, Path], methods: list[str], out: Path
) -> None:
    """The report's pictures: MAC ranking, training curves, before/after grid(s)."""
    from ramir.demo.figures import before_after_grid, plot_curves, unseen_grid

    shutil.copyfile(out / "analyze_mac" / "mac.png", out / "mac.png")
    runs = {"baseline": out / "baseline"} if cfg.baseline else {}
    runs["RAM pretraining (masked)"] = out / "ram_pretrain"
    runs.update({f"{SELECTION_LABEL[m]} fine-tuning": out / f"ram_finetune_{m}" for m in methods})
    plot_curves(runs, out / "training_curves.png")
    grid_models = {
        k: models[k] for k in ("baseline", SELECTION_LABEL["mac"], DEFAULT_LABEL) if k in models
    }
    before_after_grid(cfg, data, grid_models, out / "before_after.png")
    if cfg.eval_photos == "corpus":
        unseen_grid(cfg, data, models[SELECTION_LABEL["mac"]], out / "unseen_photos.png")


def _facts(
    cfg: DemoConfig, out: Path, selected: dict[str, list[str]], shipped: Path | None
) -> dict[str, Any]:
    """What the report says besides the table (also written to ``results.json``)."""
    from ramir.attribution import freeze_except, list_layers
    from ramir.checkpoint import load_model
    from ramir.demo.report import shipped_description

    model = load_model(_weights(out / "ram_pretrain"))
    trainable, total = freeze_except(model, selected["mac"])
    if cfg.eval_photos == "corpus":
        from ramir.data.corpus import load_manifest

        ev = load_manifest().split("eval")
        packages = sorted({p.package for p in ev})
        test_photos = [f"{len(ev)} photos of the corpus's evaluation split ({', '.join(packages)})"]
    elif cfg.data:
        test_photos = sorted(p.name for p in (out / "photos" / "test").iterdir())
    else:
        from ramir.data.photos import sample_photos

        test_photos = [p.stem for p in sample_photos("test")]
    return {
        "selected": selected["mac"],
        "n_selected": len(selected["mac"]),
        "n_layers": len(list_layers(model)),
        "trainable": trainable,
        "total": total,
        "test_photos": test_photos,
        "device": cfg.device,
        "seconds": 0.0,
        "same_selection": [
            m for m in selected if m != "mac" and set(selected[m]) == set(selected["mac"])
        ],
        "default_model": (
            shipped_description(shipped, own_photos=cfg.data is not None)
            if shipped is not None
            else ""
        ),
    }


def _shipped_model() -> Path | None:
    """The model shipped with ramir, when the package has one."""
    from ramir.inference.restore import default_model_path

    try:
        return default_model_path()
    except FileNotFoundError:
        return None


def _export(
    cfg: DemoConfig,
    weights: Path,
    held_out: dict[str, Any] | None,
    photo_eval: dict[str, Any] | None = None,
) -> Path:
    """Write ``weights`` to ``cfg.export_model`` with the recipe and its held-out scores.

    The metadata's ``extra`` gains ``recipe`` (this demo config, minus the output paths)
    and ``held_out`` (PSNR/SSIM per task on the held-out photos), and with the photo
    evaluation set ``photo_eval`` (per-photo statistics and the do-no-harm goals), so a
    shipped model says how it was made and what it measured.
    """
    from ramir.checkpoint import load_model, read_metadata, save_model

    assert cfg.export_model is not None
    recipe = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "export_model")}
    extra = {**read_metadata(weights).get("extra", {}), "recipe": recipe}
    if held_out is not None:
        extra["held_out"] = held_out
    if photo_eval is not None:
        extra["photo_eval"] = photo_eval
    seconds = sum(
        _logged_seconds(Path(cfg.out_dir) / stage) for stage in ("ram_pretrain", "ram_finetune_mac")
    )
    if seconds:
        extra["train_seconds"] = round(seconds)
    return save_model(load_model(weights), Path(cfg.export_model), extra=extra)


def _logged_seconds(run: Path) -> float:
    """Training time of a stage, from the speeds in its ``log.jsonl`` (0 without a log)."""
    log = run / "log.jsonl"
    if not log.is_file():
        return 0.0
    seconds, last = 0.0, 0
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "train" and entry.get("it_per_s"):
            seconds += max(0, entry["iter"] - last) / entry["it_per_s"]
            last = entry["iter"]
    return seconds

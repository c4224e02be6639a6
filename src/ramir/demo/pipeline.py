"""The demo's driver: :func:`run_demo` runs the stages of :mod:`ramir.demo.stages` on the
data section of :mod:`ramir.demo.data` (baseline, masked pretraining, MAC analysis,
fine-tuning, evaluation), gathers the report's figures and facts, hands the numbers to
:mod:`ramir.demo.report` and optionally exports the RAM model with its recipe.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ramir.config import save_config, to_dict
from ramir.demo.config import DEFAULT_LABEL, GOALS, SELECTION_LABEL, SELECTIONS, DemoConfig
from ramir.demo.data import demo_data_config
from ramir.demo.stages import analyze, evaluate_models, stage_weights, train_stage

__all__ = ["DemoResult", "run_demo"]


@dataclass
class DemoResult:
    """Where :func:`run_demo` wrote its report, and what it measured."""

    out_dir: Path
    report_md: Path
    report_html: Path
    table: dict[str, dict[str, dict[str, float]]]  # row -> column -> {psnr, ssim}
    ram_beats_baseline: bool
    seconds: float


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
    result = evaluate_models(cfg, data, models, out)
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
    from ramir.demo.report_classical import classical_section, evaluate_classical

    classical = classical_section(evaluate_classical(data, out, cfg.device))
    document, beats = build_report(cfg, table, columns, facts, stats, classical)
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
        train_stage(cfg, data, "baseline", out / "baseline")
    train_stage(cfg, data, "pretrain", out / "ram_pretrain")
    pretrained = stage_weights(out / "ram_pretrain")
    selected: dict[str, list[str]] = {}
    for m in SELECTIONS if cfg.ablation else ("mac",):
        selected[m] = analyze(cfg, m, pretrained, data_yaml, out / f"analyze_{m}")
        train_stage(
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
    models = {"baseline": stage_weights(out / "baseline")} if cfg.baseline else {}
    models["RAM pretrained (masked)"] = stage_weights(out / "ram_pretrain")
    for m in methods:
        models[SELECTION_LABEL[m]] = stage_weights(out / f"ram_finetune_{m}")
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

    model = load_model(stage_weights(out / "ram_pretrain"))
    trainable, total = freeze_except(model, selected["mac"])
    if cfg.eval_photos == "corpus":
        from ramir.corpus.manifest import load_manifest

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

"""The demo's stages: the training config of each stage (baseline, masked pretraining,
fine-tuning), its stage folder (reused when it holds a finished run of the same
settings), the layer analysis that picks what to fine-tune, and the evaluation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from ramir.config import convert_value, from_dict, to_dict
from ramir.data.config import DataConfig
from ramir.demo.config import TASKS, DemoConfig
from ramir.training.config import (
    CheckpointSection,
    EMASection,
    FinetuneConfig,
    LoggingSection,
    MaskSection,
    ModelSection,
    OptimSection,
    ScheduleSection,
    SelectSection,
    TrainingConfig,
    TrainSection,
)

__all__ = [
    "STAGE_FILE",
    "Stage",
    "analyze",
    "evaluate_models",
    "stage_weights",
    "train_stage",
    "training_config",
    "training_dict",
]

Stage = Literal["baseline", "pretrain", "finetune"]
STAGE_FILE = "demo_stage.json"


# ----------------------------------------------------------------------------- configs


def _stage_data(cfg: DemoConfig, data: DataConfig, stage: Stage) -> DataConfig:
    """The data section of ``stage``: fine-tuning takes its own patch size, degradation
    parameters and task weights when the demo config sets them."""
    if stage != "finetune":
        return data
    if cfg.finetune_patch_size:
        data = replace(data, patch_size=cfg.finetune_patch_size)
    if cfg.finetune_train_params:
        extra = cfg.finetune_train_params
        data = replace(
            data,
            datasets=[
                replace(d, params={**d.params, **extra.get(d.name, {})}) for d in data.datasets
            ],
        )
    if cfg.finetune_task_weights:
        weights = cfg.finetune_task_weights
        data = replace(
            data,
            sampling="weighted",
            identity_weight=float(weights.get("identity", 1.0)),
            datasets=[replace(d, weight=float(weights.get(d.name, 1.0))) for d in data.datasets],
        )
    if cfg.finetune_identity_tone:
        data = replace(data, identity_tone=cfg.finetune_identity_tone)
    if cfg.finetune_scene_tone:
        data = replace(data, scene_tone=cfg.finetune_scene_tone)
    return data


def training_config(
    cfg: DemoConfig,
    data: dict[str, Any],
    stage: Stage,
    *,
    init: str | Path | None = None,
    layers: list[str] | None = None,
) -> TrainingConfig:
    """The training config of ``stage``: ``baseline`` | ``pretrain`` | ``finetune``.

    ``data`` is the demo's data section (:func:`ramir.demo.data.demo_data_config`).
    ``init``: the run whose EMA weights the stage starts from. With ``layers`` (the
    fine-tuned layers) the result is a :class:`FinetuneConfig` that selects them.
    Built from the typed sections and then checked like a YAML config (types, ranges).
    """
    source = f"<demo {stage}>"
    steps = {"baseline": cfg.steps, "pretrain": cfg.pretrain_steps, "finetune": cfg.finetune_steps}[
        stage
    ]
    finetune = stage == "finetune"
    lr = cfg.finetune_lr if finetune else cfg.lr
    model = ModelSection(name=cfg.backbone, args=cfg.model_args())
    if init is not None:
        model = replace(model, init=str(init), init_weights="ema")
    sections: dict[str, Any] = dict(
        model=model,
        data=_stage_data(cfg, convert_value(DataConfig, data, "data", source), stage),
        train=TrainSection(
            total_iter=steps,
            batch_size=(cfg.finetune_batch_size or cfg.batch_size) if finetune else cfg.batch_size,
            input="masked" if stage == "pretrain" else "whole",
            mask=MaskSection(ratio=cfg.mask_ratio, patch_size=1, shared=True),
            seed=cfg.seed,
            device=cfg.device,  # type: ignore[arg-type]
            precision=cfg.precision,  # type: ignore[arg-type]
            num_workers=cfg.num_workers,
            model_mode="eval" if finetune else "train",
        ),
        optim=OptimSection(type="Adam", lr=lr, betas=(0.9, 0.99)),
        schedule=ScheduleSection(
            type="cosine", warmup_iter=min(50, steps // 10), eta_min=lr * 0.01
        ),
        ema=EMASection(decay=cfg.ema),
        logging=LoggingSection(
            log_every=max(1, min(10, steps // 20)),
            image_every=0,
            tensorboard=False,
            progress=True,
            plot=True,
        ),
        checkpoint=CheckpointSection(every=max(50, min(steps // 4, 2000)), keep_last=1),
    )
    tcfg: TrainingConfig
    if layers is not None:
        tcfg = FinetuneConfig(**sections, select=SelectSection(layers=list(layers)))
    else:
        tcfg = TrainingConfig(**sections)
    return from_dict(type(tcfg), to_dict(tcfg), source)


def training_dict(cfg: DemoConfig, data: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """:func:`training_config` of ``stage`` as plain data (every key spelled out), for
    callers that change a few settings before building the config."""
    return to_dict(training_config(cfg, data, stage))


# ----------------------------------------------------------------------------- stage folders


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


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(to_dict(value), default=str))


def train_stage(
    cfg: DemoConfig,
    data: dict[str, Any],
    stage: Stage,
    run: Path,
    *,
    init: Path | None = None,
    layers: list[str] | None = None,
) -> None:
    """Train ``stage`` into folder ``run``, unless it holds a finished run of the same
    settings (see :func:`training_config` for ``init`` and ``layers``)."""
    from ramir.training.finetune import layer_selection
    from ramir.training.loop import train

    tcfg = training_config(cfg, data, stage, init=init, layers=layers)
    if _done(run, _as_json(tcfg), _as_json(type(tcfg)())):
        print(f"[demo] {run.name}: already trained, reusing it", flush=True)
        return
    print(f"[demo] {run.name}: {stage} for {tcfg.train.total_iter} iterations", flush=True)
    if layers is not None:
        train(tcfg, run, trainable=layer_selection(layers))
    else:
        train(tcfg, run)


def stage_weights(run: Path) -> Path:
    """The EMA weights of a finished stage folder."""
    from ramir.checkpoint import resolve_weights_path

    return resolve_weights_path(run, "ema")


# ----------------------------------------------------------------------------- analysis, evaluation


def analyze(
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


def evaluate_models(cfg: DemoConfig, data: dict[str, Any], models: dict[str, Path], out: Path):
    """Every model of ``models`` (table row -> weights) on the test sets of ``data``,
    one column per set and the seven tasks' average; recomputed every time."""
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

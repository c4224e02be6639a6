"""The demo's settings: :class:`DemoConfig` (also the default-model recipe), its tasks
and the fixed names of its models, test sets and goals."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramir.config import ConfigError
from ramir.degradations.chain import CAMERA_STEPS
from ramir.demo.tasks import Task, load_tasks

# The seven tasks of the paper and how each is synthesised: (name, degradation, training
# parameters, fixed test parameters), as configs/data/synthetic7.yaml says.
TASKS: list[Task] = load_tasks()
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
        finetune_identity_tone: in the fine-tuning stages, the probability that an
            identity sample is a clean photo given a mild dim, veiled or pale tone
            (``data.identity_tone``): teaches the model not to brighten or dehaze clean
            photos that merely look dark or misty.
        finetune_scene_tone: in the fine-tuning stages, the probability that a sample of
            a task other than low light and haze is degraded from a clean photo given
            such a tone first (``data.scene_tone``): a dark photo that is also blurred or
            noisy is restored, not brightened.
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
            photos from Debian and PyPI packages; see ``ramir.corpus``).
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
    finetune_identity_tone: float = 0.0
    finetune_scene_tone: float = 0.0
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
        for key in ("finetune_identity_tone", "finetune_scene_tone"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {getattr(self, key)}")
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


def check_config(cfg: DemoConfig) -> None:
    """Fail early on a backbone name that does not exist (base names and named sizes)."""
    from ramir.errors import UnknownNameError
    from ramir.models import resolve_model

    try:
        resolve_model(cfg.backbone)
    except UnknownNameError as e:
        raise ConfigError(f"backbone: {e.args[0]}") from None

"""Typed config schema for data: the ``data:`` section of training/evaluation configs.

A :class:`DataConfig` lists the training sub-datasets (each a :class:`DatasetSpec`: a
reader ``layout`` at a ``root``, or a clean source plus an on-the-fly ``degradation``)
and the evaluation sets, plus the sampling and augmentation settings. Recipes live in
``configs/data/*.yaml``. Unknown keys, unknown layouts/degradations and unknown
options/parameters are errors.

>>> cfg = from_dict(DataConfig, {"datasets": [
...     {"name": "noise", "layout": "skimage_photos", "degradation": "gaussian_noise"}]})
>>> cfg.datasets[0].task_name()
'noise'
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ramir import degradations
from ramir.config import ConfigError, apply_overrides, deep_merge, from_dict, load_yaml
from ramir.data.datasets import DEFAULT_TASKS, LAYOUTS, layouts
from ramir.registry import UnknownArgumentError

__all__ = [
    "DatasetSpec",
    "DataConfig",
    "load_data_config",
    "load_with_data_config",
    "TASK_OF_DEGRADATION",
]

TASK_OF_DEGRADATION: dict[str, str] = {
    "identity": "identity",
    "gaussian_noise": "noise",
    "gaussian_blur": "blur",
    "jpeg": "jpeg",
    "haze": "haze",
    "rain": "rain",
    "low_light": "low_light",
    "motion_blur": "motion_blur",
    "poisson_noise": "poisson_noise",
    "salt_pepper_noise": "salt_pepper_noise",
    "speckle_noise": "speckle_noise",
    "chain": "mixed",
}
"""Default task label of a clean source degraded on the fly."""

_CLEAN_LAYOUTS = ("clean_folder", "skimage_photos", "photo_corpus")


@dataclass
class DatasetSpec:
    """One sub-dataset (training) or one evaluation set.

    Attributes:
        name: unique label (also the report column of a test set).
        layout: reader name (``ramir.data.datasets.layouts()``).
        root: dataset folder; relative paths resolve against ``DataConfig.root_dir``.
        task: task label carried by samples; default from the degradation, else from the
            layout (haze, rain, motion_blur, low_light, noise), else ``name``.
        degradation: on-the-fly degradation of the clean images (clean-only layouts,
            CBSD68 ``generate``); see ``ramir.degradations.names()``.
        params: keyword parameters of the degradation (e.g. ``{sigma: 25}`` or
            ``{sigma_range: [0, 50]}``).
        options: keyword options of the reader (e.g. ``{split: test}``).
        weight: sampling weight (``sampling: weighted`` only).
        cache: decode the images once: training puts them in a store that every
            data-loader worker shares (``DataConfig.cache_max_mb``); evaluation keeps
            them in memory. For photo sets that fit in memory.
        on_size_mismatch: ``error`` (default) or ``crop`` both images to their common
            top-left region (some dehazing sets differ by a few pixels).
        center_crop: evaluation: centre crop to this size (``None`` = whole images).
        group: evaluation: a column that averages several sets (e.g. ``Rain13k-Test``).
        seed: evaluation: seed of synthetic degradations (default ``DataConfig.seed``).
    """

    name: str
    layout: str
    root: str = ""
    task: str | None = None
    degradation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    cache: bool = False
    on_size_mismatch: Literal["error", "crop"] = "error"
    center_crop: int | None = None
    group: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a dataset needs a non-empty 'name'")
        if self.layout not in layouts():
            raise ValueError(
                f"dataset {self.name!r}: unknown layout {self.layout!r}; "
                f"choose one of: {', '.join(layouts())}"
            )
        try:
            LAYOUTS.check_kwargs(self.layout, self.options)
        except UnknownArgumentError as e:
            raise ValueError(f"dataset {self.name!r}: {e}") from None
        if self.degradation is not None:
            if self.degradation not in degradations.names():
                raise ValueError(
                    f"dataset {self.name!r}: unknown degradation {self.degradation!r}; "
                    f"choose one of: {', '.join(degradations.names())}"
                )
            try:
                degradations.validate_params(self.degradation, self.params)
            except ValueError as e:
                raise ValueError(f"dataset {self.name!r}: {e}") from None
        elif self.params:
            raise ValueError(f"dataset {self.name!r}: 'params' given without a 'degradation'")
        elif self.layout in _CLEAN_LAYOUTS:
            raise ValueError(
                f"dataset {self.name!r}: layout {self.layout!r} holds clean images only; "
                "set 'degradation' (use 'identity' for clean -> clean)"
            )
        if self.weight < 0:
            raise ValueError(f"dataset {self.name!r}: weight must be >= 0, got {self.weight}")
        if self.center_crop is not None and self.center_crop < 1:
            raise ValueError(f"dataset {self.name!r}: center_crop must be >= 1")

    def task_name(self) -> str:
        """The task label: ``task``, else from the degradation/layout, else ``name``."""
        if self.task:
            return self.task
        if self.degradation is not None:
            return TASK_OF_DEGRADATION.get(self.degradation, self.degradation)
        if self.layout == "cbsd68":
            return "noise"
        return DEFAULT_TASKS.get(self.layout, self.name)

    def resolve_root(self, root_dir: str | os.PathLike[str] = "") -> Path:
        """The root folder: absolute ``root`` as is, relative ones under ``root_dir``."""
        p = Path(os.path.expanduser(self.root))
        if p.is_absolute() or not str(root_dir):
            return p
        return Path(os.path.expanduser(str(root_dir))) / p


@dataclass
class DataConfig:
    """Training mixture + evaluation sets.

    Attributes:
        datasets: training sub-datasets, sampled in balance (see ``sampling``).
        test: evaluation sets (whole images unless ``center_crop``), deterministic.
        root_dir: base folder of relative dataset roots (empty: the current directory).
        clean_root: if set, every ``skimage_photos`` training source reads this folder of
            clean images instead (``--set data.clean_root=/my/photos``).
        clean_test_root: the same for ``skimage_photos`` evaluation sets.
        patch_size: side of the aligned random training crops.
        hflip / vflip / rot90: random horizontal flip, vertical flip and transposition,
            each with probability 1/2, the same for lq and gt (all three: the 8
            rotations/reflections). The reference uses hflip only.
        identity: add the reference's identity task (clean -> clean).
        identity_from: the clean-source dataset whose images the identity task uses
            (default: the first one).
        identity_weight: the identity task's weight with weighted sampling (default 1).
        identity_tone: probability that an identity sample is first given a random mild
            global tone change (dim, veiled or pale; :func:`ramir.data.transforms.tone_shift`),
            the same on both sides: clean photos that look underexposed or misty, which a
            blind model otherwise brightens or dehazes. 0 (the default) keeps the stream of
            earlier versions.
        scene_tone: probability that a sample of a synthetic task other than those that
            change the global tone themselves (:data:`ramir.data.mixture.SCENE_TONE_EXEMPT`:
            low light, haze; and identity, see ``identity_tone``) has its clean crop given
            such a tone change before it is degraded: the target is the dim, misty or pale
            scene, so that a dark photo that is also blurred, noisy or compressed is
            restored without being brightened. 0 (the default) keeps the stream of earlier
            versions.
        sampling: ``round_robin`` (sample ``i`` comes from sub-dataset ``i mod n``, as the
            reference does, walking each sub-dataset in a fresh random order),
            ``weighted`` (by ``weight``, with replacement) or ``official_prefix``: the
            official release's effective sampling, where ``i mod n`` picks the
            sub-dataset but each data-loader worker reads that sub-dataset's files from
            the start of its list with its own counter, and workers restart every epoch:
            each epoch, only the first ``ceil(epoch_length / (n * official_streams))``
            files of every sub-dataset are seen (in list order), ``official_streams``
            times each.
        official_streams: data-loader streams of the release's run (GPUs x workers per
            GPU; its recipes: 8 x 6 = 48), for ``official_prefix``.
        epoch_length: samples per epoch (default: ``n_datasets * largest size`` for round
            robin, the total size for weighted).
        seed: base seed; a sample is a pure function of ``(seed, epoch, index)``.
        cache_max_mb: bound of the shared store into which training decodes the images
            of ``cache: true`` sources once (:class:`ramir.data.store.PixelStore`); images
            past it are decoded per sample.
        cache_dir: folder of that store's memory-mapped file (default: the system's
            temporary folder); removed when training ends.
        degrade_on: where training degrades the clean crops: ``cpu`` (each sample in the
            data-loader workers, NumPy) or ``device``: the workers only crop and flip, and
            the training loop degrades each batch on its device with the batched versions
            of :mod:`ramir.degradations.device` (same distributions, other random draws:
            a pure function of the seed, the iteration and the rank), which keeps a GPU's
            few CPU cores from limiting the step rate. Degradations without a batched
            version stay on the CPU.
    """

    datasets: list[DatasetSpec] = field(default_factory=list)
    test: list[DatasetSpec] = field(default_factory=list)
    root_dir: str = ""
    clean_root: str | None = None
    clean_test_root: str | None = None
    patch_size: int = 64
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    identity: bool = False
    identity_from: str | None = None
    identity_weight: float = 1.0
    identity_tone: float = 0.0
    scene_tone: float = 0.0
    sampling: Literal["round_robin", "weighted", "official_prefix"] = "round_robin"
    official_streams: int = 48
    epoch_length: int | None = None
    seed: int = 0
    cache_max_mb: float = 4096.0
    cache_dir: str | None = None
    degrade_on: Literal["cpu", "device"] = "cpu"

    def __post_init__(self) -> None:
        for group, specs in (("datasets", self.datasets), ("test", self.test)):
            seen: set[str] = set()
            for s in specs:
                if s.name in seen:
                    raise ValueError(f"{group}: duplicate dataset name {s.name!r}")
                seen.add(s.name)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if not self.cache_max_mb >= 0:
            raise ValueError(f"cache_max_mb must be >= 0, got {self.cache_max_mb}")
        if self.official_streams < 1:
            raise ValueError(f"official_streams must be >= 1, got {self.official_streams}")
        if self.epoch_length is not None and self.epoch_length < 1:
            raise ValueError(f"epoch_length must be >= 1, got {self.epoch_length}")
        if not self.identity_weight >= 0:
            raise ValueError(f"identity_weight must be >= 0, got {self.identity_weight}")
        if not 0.0 <= self.identity_tone <= 1.0:
            raise ValueError(f"identity_tone must be in [0, 1], got {self.identity_tone}")
        if not 0.0 <= self.scene_tone <= 1.0:
            raise ValueError(f"scene_tone must be in [0, 1], got {self.scene_tone}")
        if self.sampling != "weighted" and (
            any(s.weight != 1.0 for s in self.datasets) or self.identity_weight != 1.0
        ):
            raise ValueError(
                "dataset weights (and identity_weight) are used only with sampling: weighted"
            )
        if self.identity_from is not None:
            names = {s.name: s for s in self.datasets}
            if self.identity_from not in names:
                raise ValueError(
                    f"identity_from {self.identity_from!r} is not a dataset; "
                    f"choose one of: {', '.join(names)}"
                )


def load_data_config(
    path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> DataConfig:
    """Load a :class:`DataConfig` from YAML (with ``base:`` includes) and overrides.

    The file may be a data config or a whole experiment config with a ``data:`` section;
    in the latter case overrides may be written with or without the ``data.`` prefix.
    """
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    section = "data" in raw and "datasets" not in raw
    if overrides:
        prefixed = [o if (not section or o.startswith("data.")) else f"data.{o}" for o in overrides]
        if not section:
            prefixed = [o[5:] if o.startswith("data.") else o for o in prefixed]
        raw = apply_overrides(raw, prefixed)
        source += " + --set " + " ".join(overrides)
    data = raw["data"] if section else raw
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: 'data' must be a mapping")
    return from_dict(DataConfig, data, source)


def load_with_data_config(
    path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()
) -> tuple[dict[str, Any], str]:
    """Read an experiment YAML (training, evaluation...) and resolve its ``data_config:``.

    ``data_config: FILE`` takes the ``data:`` section from a data recipe (e.g.
    ``../data/7task.yaml``; relative to the experiment file, else to the current
    directory); keys under ``data:`` in the experiment file and ``data.*`` overrides are
    merged on top. Returns the raw mapping and a source label for error messages.
    """
    raw: dict[str, Any] = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " + --set " + " ".join(overrides)
    data_file = raw.pop("data_config", None)
    if data_file is None:
        return raw, source
    if not isinstance(data_file, str):
        raise ConfigError(f"{source}: key 'data_config' must be a file name")
    candidates = [Path(os.path.expanduser(data_file))]
    if path is not None and not candidates[0].is_absolute():
        candidates.insert(0, Path(path).parent / candidates[0])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(
            f"{source}: key 'data_config': file not found: {data_file} "
            f"(looked at {', '.join(str(c) for c in candidates)})"
        )
    data = load_yaml(found)
    if "data" in data and "datasets" not in data and "test" not in data:
        data = data["data"]
    inline = raw.get("data") or {}
    if not isinstance(inline, dict):
        raise ConfigError(f"{source}: key 'data' must be a mapping")
    raw["data"] = deep_merge(data, inline)
    return raw, source

"""The demo's data section: the training tasks (+ identity) and the fixed test sets, as
the mapping a data YAML holds; a ``--data`` folder is split into training and held-out
photos first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ramir.demo.config import CORPUS_TESTS_AFTER, CORPUS_TESTS_BEFORE, TASKS, DemoConfig

__all__ = ["demo_data_config"]


def _split_folder(folder: Path, out: Path, held_out: float, seed: int) -> tuple[Path, Path]:
    """Split a folder of clean photos into ``out/photos/{train,test}`` (links or copies)."""
    from ramir.data.listing import list_images

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

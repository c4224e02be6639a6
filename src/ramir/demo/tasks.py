"""The demo's seven tasks, read from ``configs/data/synthetic7.yaml`` (the one recipe).

Each training set of that recipe pairs, in order, with its fixed test set (same
degradation); a task is ``(name, degradation, training parameters, test parameters)``,
named as the training set (``noise``, not the test set's ``noise_s25``).

The package finds the recipe as ``ramir/assets/synthetic7.yaml``: in the repository a
link to ``configs/data/synthetic7.yaml`` (so an editable install reads that file), in a
built wheel or sdist a copy of it made by the build.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import yaml

RECIPE = "configs/data/synthetic7.yaml"
ASSET = "synthetic7.yaml"


class Task(NamedTuple):
    """One of the seven tasks; a tuple, so ``name, deg, train, test = task`` works."""

    name: str
    degradation: str
    train_params: dict[str, Any]
    test_params: dict[str, Any]


def read_recipe() -> dict[str, Any]:
    """The data recipe ``configs/data/synthetic7.yaml`` as packaged (see the module)."""
    asset = resources.files("ramir") / "assets" / ASSET
    recipe = yaml.safe_load(asset.read_text(encoding="utf-8"))
    if isinstance(recipe, str):
        # a checkout made without symbolic links holds the link's target as text
        target = (Path(str(asset)).parent / recipe.strip()).resolve()
        recipe = yaml.safe_load(target.read_text(encoding="utf-8"))
    if not isinstance(recipe, dict):
        raise ValueError(f"{RECIPE}: expected a mapping with 'datasets' and 'test'")
    return recipe


def tasks_from_recipe(recipe: dict[str, Any]) -> list[Task]:
    """Pair the recipe's training sets with its test sets, in order."""
    datasets, tests = recipe.get("datasets", []), recipe.get("test", [])
    if not datasets or len(datasets) != len(tests):
        raise ValueError(
            f"{RECIPE}: needs one test set per training set, in the same order; got "
            f"{len(datasets)} training and {len(tests)} test sets"
        )
    tasks = []
    for train, test in zip(datasets, tests, strict=True):
        if train["degradation"] != test["degradation"]:
            raise ValueError(
                f"{RECIPE}: training set {train['name']!r} ({train['degradation']}) and "
                f"test set {test['name']!r} ({test['degradation']}) must pair in order"
            )
        tasks.append(
            Task(
                train["name"],
                train["degradation"],
                dict(train.get("params") or {}),
                dict(test.get("params") or {}),
            )
        )
    return tasks


def load_tasks() -> list[Task]:
    """The seven tasks of ``configs/data/synthetic7.yaml``."""
    return tasks_from_recipe(read_recipe())

"""The classical restorers' settings per test set: the tuned-settings files and their
resolution.

A settings file (written by ``benchmarks/tune_classical.py``; the shipped one is
``ramir/assets/classical_settings.yaml``, named ``tuned`` in an evaluation config) holds,
per method, the setting chosen for each validation test set and the one best over all
its tasks (``all_tasks``). :func:`settings_per_set` turns a row's ``settings`` (such a
file, a mapping, or nothing) into the setting a method runs with on each test set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ramir.errors import ResourceError
from ramir.evaluation.classical import Settings, applies_to, get_method

__all__ = ["TUNED", "tuned_settings_path", "load_settings_file", "settings_per_set"]

TUNED = "tuned"
"""``settings: tuned``: the settings file shipped in the package (:func:`tuned_settings_path`)."""


def tuned_settings_path() -> Path:
    """The shipped settings file, chosen on the validation photos
    (``ramir/assets/classical_settings.yaml``)."""
    from importlib import resources

    return Path(str(resources.files("ramir") / "assets" / "classical_settings.yaml"))


def load_settings_file(path: str | Path, method: str) -> tuple[dict[str, Settings], Settings]:
    """Method ``method``'s tuned settings in a file of ``benchmarks/tune_classical.py``:
    ``({test-set name: settings}, all-tasks settings)``.

    Raises:
        ResourceError: the file is missing or unreadable, or has no entry for ``method``.
    """
    import yaml

    path = tuned_settings_path() if str(path) == TUNED else Path(path).expanduser()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        entry = doc["methods"][method]
        tasks = {t: dict(v["settings"]) for t, v in entry["tasks"].items()}
        blind = dict(entry["all_tasks"]["settings"])
    except FileNotFoundError:
        raise ResourceError(
            f"classical settings file not found: {path.name} (run "
            "benchmarks/tune_classical.py to write it)"
        ) from None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        missing = isinstance(e, KeyError)
        raise ResourceError(
            f"classical settings file {path.name}: "
            + (
                f"no tuned settings for method {method!r} (run benchmarks/tune_classical.py "
                f"--methods {method})"
                if missing
                else f"cannot be read ({type(e).__name__}); rerun benchmarks/tune_classical.py"
            )
        ) from None
    return tasks, blind


def settings_per_set(
    method: str,
    settings: str | Path | Mapping[str, Mapping[str, Any]] | None,
    sets: Mapping[str, tuple[str | None, Mapping[str, Any] | None]],
) -> dict[str, Settings | None]:
    """The settings ``method`` runs with on each test set (``None``: not run there).

    Args:
        method: a name of :data:`ramir.evaluation.classical.METHODS`.
        settings: a tuned-settings file or ``tuned`` (the shipped one): a set named in
            it gets its setting, a clean-input set the ``all_tasks`` one; a mapping ``{set name: settings}``
            (``"*"``: every set not named), or ``None`` (the defaults on the sets the
            method is a tool for and on clean-input sets).
        sets: set name -> ``(degradation, params)`` (``None``/``identity``: clean input).
    """
    m = get_method(method)

    def clean(name: str) -> bool:
        return sets[name][0] in (None, "identity")

    out: dict[str, Settings | None] = {}
    if settings is None:
        for name, (deg, params) in sets.items():
            useful = clean(name) or applies_to(method, deg, params)
            out[name] = m.settings() if useful else None
    elif isinstance(settings, (str, Path)):
        tasks, blind = load_settings_file(settings, method)
        for name in sets:
            given = tasks.get(name, blind if clean(name) else None)
            out[name] = None if given is None else m.settings(given)
    else:
        for name in sets:
            given = settings.get(name, settings.get("*"))
            out[name] = None if given is None else m.settings(given)
    return out

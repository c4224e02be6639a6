"""Ship a continued default model: write chosen weights as the package's default model.

The shipped file (``src/ramir/assets/default_model.safetensors``) keeps the recipe that
first made it (``extra.recipe``: ``configs/default_model.yaml``) and gains one entry per
continuation in ``extra.history`` (its training config as committed, the weights it
started from, iterations and measured seconds), so that ``ramir info`` and the README say
how the model was trained in total. Figures of the previous weights (``held_out``,
``photo_eval``, ``photo_eval_*``) are dropped: measure the new weights with
``python -m ramir.evaluation.protocol`` afterwards (test part, then val part)::

    python benchmarks/ship_default.py ~/.cache/ramir/runs/default_run/checkpoints/iter_00007500/model_ema.safetensors \\
        --config configs/default_model_continuation.yaml --iterations 7500 --seconds 4196 \\
        --device "2-core CPU (shared)"
    python -m ramir.evaluation.protocol src/ramir/assets/default_model.safetensors --in-place
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import yaml

from ramir.checkpoint import load_model, read_metadata, save_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "ramir" / "assets" / "default_model.safetensors"
# what describes the weights a file holds, not the way they were made
MEASURED = ("held_out", "photo_eval", "photo_eval_test", "photo_eval_val")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shipped_extra(previous: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The new file's ``extra``: the previous one without its measurements, plus ``entry``
    appended to ``history`` and ``train_seconds`` the total over every stage."""
    extra = {k: v for k, v in previous.items() if k not in MEASURED}
    history = list(extra.get("history") or [])
    if not history:  # the first continuation: the stages of the recipe come first
        recipe = extra.get("recipe", {})
        history.append(
            {
                "stage": "RAM recipe (configs/default_model.yaml: pretraining, MAC, fine-tuning)",
                "iterations": int(recipe.get("pretrain_iters", 0))
                + int(recipe.get("finetune_iters", 0)),
                "train_seconds": int(extra.get("train_seconds", 0)),
            }
        )
    history.append(entry)
    extra["history"] = history
    extra["train_seconds"] = sum(int(h.get("train_seconds", 0)) for h in history)
    extra["iteration"] = int(entry["iterations"])
    return extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, help="the chosen weights (e.g. a model_ema file)")
    p.add_argument("--config", type=Path, required=True, help="the continuation's config")
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True, help="its measured training time")
    p.add_argument("--device", required=True, help="what it trained on, in words")
    p.add_argument("--out", type=Path, default=SHIPPED)
    a = p.parse_args(argv)
    previous = read_metadata(SHIPPED).get("extra", {})
    entry = {
        "stage": "continuation",
        "config": str(a.config.resolve().relative_to(ROOT)),
        "training_config": yaml.safe_load(a.config.read_text()),
        "from_sha256": _sha256(SHIPPED),
        "iterations": a.iterations,
        "train_seconds": a.seconds,
        "device": a.device,
    }
    extra = shipped_extra(previous, entry)
    trained = read_metadata(a.weights).get("extra", {}).get("n_trainable")
    if trained is not None:  # the last stage's count (a continuation trains every layer)
        extra["n_trainable"] = int(trained)
    model = load_model(a.weights)
    save_model(model, a.out, extra=extra)
    print(f"wrote {a.out.name}: {extra['train_seconds']} s of training over "
          f"{len(extra['history'])} stages; now measure it with "
          "python -m ramir.evaluation.protocol")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

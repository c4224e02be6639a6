"""Ship a continued default model: write chosen weights as the package's default model.

The shipped file (``src/ramir/assets/default_model.safetensors``) keeps the recipe that
first made it (``extra.recipe``: ``configs/default_model.yaml``) and gains one entry per
continuation in ``extra.history`` (its training config as committed, the weights it
started from, iterations and measured seconds), so that ``ramir info`` and the README say
how the model was trained in total. Figures of the previous weights (``held_out``,
``photo_eval``, ``photo_eval_*``) are dropped: measure the new weights with
``python -m ramir.evaluation.protocol`` afterwards (test part, then val part).

Several runs from the same weights can be shipped as one blend (``--blend``: the weighted
mean of their parameters, :func:`ramir.checkpoint.blend_models`); each run becomes a stage
of the history with its ``blend_weight``, and its training time counts in the total::

    python benchmarks/ship_default.py ~/.cache/ramir/runs/default_run/checkpoints/iter_00007500/model_ema.safetensors \\
        --config configs/default_model_continuation.yaml --iterations 7500 --seconds 4196 \\
        --device "2-core CPU (shared)"
    python -m ramir.evaluation.protocol src/ramir/assets/default_model.safetensors --in-place
    # a blend of two runs
    python benchmarks/ship_default.py L1_EMA PSNR_EMA --config configs/a.yaml configs/b.yaml \\
        --iterations 16000 16000 --seconds 4033 4005 --blend 0.75 0.25 --device "2-core CPU"
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ramir.checkpoint import blend_models, file_sha256, load_model, read_metadata, save_model
from ramir.models import count_parameters

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "ramir" / "assets" / "default_model.safetensors"
# what describes the weights a file holds, not the way they were made
MEASURED = ("held_out", "photo_eval", "photo_eval_test", "photo_eval_val")


def shipped_extra(previous: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The new file's ``extra``: the previous one without its measurements, plus
    ``entries`` (one stage, or the runs of one blend) appended to ``history`` and
    ``train_seconds`` the total over every stage."""
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
    history.extend(entries)
    extra["history"] = history
    extra["train_seconds"] = sum(int(h.get("train_seconds", 0)) for h in history)
    extra["iteration"] = max(int(e["iterations"]) for e in entries)
    return extra


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "weights",
        type=Path,
        nargs="+",
        help="the chosen weights (e.g. a model_ema file); several with --blend",
    )
    p.add_argument(
        "--config",
        type=Path,
        nargs="+",
        required=True,
        help="each run's training config, in the order of the weights",
    )
    p.add_argument("--iterations", type=int, nargs="+", required=True)
    p.add_argument(
        "--seconds", type=int, nargs="+", required=True, help="each run's measured training time"
    )
    p.add_argument(
        "--blend",
        type=float,
        nargs="+",
        default=None,
        help="one weight per file, summing to 1: ship their weighted mean",
    )
    p.add_argument(
        "--widened",
        type=Path,
        default=None,
        help="the runs started from this file, made by `ramir widen` from the shipped "
        "model: it becomes a stage of the history (0 iterations) and the runs' origin",
    )
    p.add_argument("--device", required=True, help="what it trained on, in words")
    p.add_argument("--out", type=Path, default=SHIPPED)
    a = p.parse_args(argv)
    n = len(a.weights)
    if not (len(a.config) == len(a.iterations) == len(a.seconds) == n):
        p.error(f"give one --config, --iterations and --seconds value per weights file ({n})")
    if n > 1 and (a.blend is None or len(a.blend) != n):
        p.error(f"{n} weights files: --blend needs one weight per file")
    previous = read_metadata(SHIPPED).get("extra", {})
    from_sha = file_sha256(SHIPPED)
    entries = []
    if a.widened is not None:
        wide = read_metadata(a.widened)
        record = wide.get("extra", {}).get("widened_from")
        if not isinstance(record, dict) or record.get("sha256") != from_sha:
            p.error(
                f"--widened {a.widened.name} was not made by `ramir widen` from the shipped model"
            )
        entries.append(
            {
                "stage": f"widened {record['factor']}x (ramir widen --factor {record['factor']} "
                f"--seed {record['seed']}): width {wide['arch_kwargs']['width']}, the same output",
                "from_sha256": from_sha,
                "widened_sha256": file_sha256(a.widened),
                "iterations": 0,
                "train_seconds": 0,
            }
        )
        from_sha = entries[0]["widened_sha256"]
    for i, config in enumerate(a.config):
        entry = {
            "stage": "continuation",
            "config": str(config.resolve().relative_to(ROOT)),
            "training_config": yaml.safe_load(config.read_text()),
            "from_sha256": from_sha,
            "iterations": a.iterations[i],
            "train_seconds": a.seconds[i],
            "device": a.device,
        }
        if n > 1:
            entry["blend_weight"] = a.blend[i]
        entries.append(entry)
    extra = shipped_extra(previous, entries)
    model = blend_models(a.weights, a.blend) if n > 1 else load_model(a.weights[0])
    counts = {read_metadata(w).get("extra", {}).get("n_trainable") for w in a.weights}
    # the last stage's count; a periodic checkpoint older than that field lacks it, and
    # the continuation (benchmarks/gpu_session.py) trains every layer
    counts.discard(None)
    extra["n_trainable"] = int(max(counts)) if counts else count_parameters(model)
    save_model(model, a.out, extra=extra)
    print(f"wrote {a.out.name}: {extra['train_seconds']} s of training over "
          f"{len(extra['history'])} stages; now measure it with "
          "python -m ramir.evaluation.protocol")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The demo's figures: training curves and before/after grids (Matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ramir.config import from_dict
from ramir.demo.config import DemoConfig


def plot_curves(runs: dict[str, Path], path: Path) -> Path:
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


def before_after_grid(
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
    from ramir.data.testsets import build_test_set
    from ramir.evaluation.metrics import psnr
    from ramir.inference.restore import restore_tensor

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


def unseen_grid(
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
    from ramir.data.testsets import build_test_set
    from ramir.evaluation.metrics import psnr
    from ramir.inference.restore import restore_tensor

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

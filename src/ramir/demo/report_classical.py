"""The demo report's classical baselines: the cheap classical restorers of
:mod:`ramir.evaluation.classical` (scikit-image's TV, unsharp masking and Wiener
deconvolution; wavelet denoising and OpenCV non-local means when ``ramir[classical]``
is installed) on the demo's test sets, each told the task, at the settings chosen on
the validation photos (``settings: tuned``). BM3D is left out here: it takes seconds
per image (``configs/eval/photos_test_classical.yaml`` has it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ramir.demo.document import Paragraph, Section, Table

DEMO_METHODS = ("wavelet", "tv", "nlm", "unsharp", "wiener")
"""The classical rows of the demo report (the cheap ones)."""


def evaluate_classical(data: dict[str, Any], out: Path, device: str = "cpu") -> Any:
    """Measure :data:`DEMO_METHODS` on the demo's test sets (``data["test"]``, the data
    section the demo evaluates its models on); the run goes to ``out/classical``.

    Returns the :class:`ramir.evaluation.runner.EvalResult` (rows whose optional
    library is missing are skipped with a note).
    """
    from ramir.config import from_dict
    from ramir.evaluation.config import EvalConfig
    from ramir.evaluation.runner import evaluate

    ecfg = from_dict(
        EvalConfig,
        {
            "name": "classical",
            "output_dir": str(out),
            "models": [{"name": m, "classical": m, "settings": "tuned"} for m in DEMO_METHODS],
            "data": {
                "test": data["test"],
                **{k: data[k] for k in ("clean_test_root", "seed") if k in data},
            },
            "conventions": ["ram"],
            "device": device,
            "input_row": True,
        },
        "<demo classical>",
    )
    # the test photos may differ from the last run's: measured again (they are cheap)
    return evaluate(ecfg, progress=False, restart=True)


def classical_section(result: Any) -> Section:
    """The report section of :func:`evaluate_classical`'s result: per column the mean /
    worst gain over the input (clean columns: median / worst PSNR), and the time per
    image."""
    from ramir.evaluation.gains import gain_stats, stats_table

    table = result.tables[0]
    rows = [r for r in table.rows if r.kind == "ours" and r.label in DEMO_METHODS]
    stats = gain_stats(result.per_image)
    head, body = stats_table(stats, [r.label for r in rows])
    seconds = {r.label: r.seconds for r in rows}
    blocks: list[Any] = [
        Paragraph(
            "What a user who knows the task gets from classical tools: each method is told "
            "the task (its setting per task was chosen on the validation photos; on a "
            "clean photo, its one all-task setting); the model is not. Gains over the "
            "degraded input photo by photo, mean / worst (dB); on clean columns, the PSNR "
            "of the output against the untouched photo, median / worst; '–': the method "
            "is not a tool for that task. Time per image on this machine."
        )
    ]
    if head:
        head = [*head, "s / image"]
        body = [[*row, f"{seconds[row[0]]:.3f}" if seconds.get(row[0]) else "–"] for row in body]
        blocks.append(Table(list(head), [list(r) for r in body]))
    skipped = [n for n in table.notes if ": skipped: " in n]
    if skipped:
        blocks.append(Paragraph(" ".join(skipped)))
    return Section("Classical baselines, told the task", blocks)

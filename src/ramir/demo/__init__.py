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

Modules: :mod:`~ramir.demo.tasks` (the seven tasks, read from
``configs/data/synthetic7.yaml``), :mod:`~ramir.demo.config` (:class:`DemoConfig`),
:mod:`~ramir.demo.data` (the data section), :mod:`~ramir.demo.stages` (each stage's
training config, its folder, the analysis and the evaluation), :mod:`~ramir.demo.pipeline`
(:func:`run_demo`, the driver), :mod:`~ramir.demo.figures`, :mod:`~ramir.demo.report` (the
report as one document) and :mod:`~ramir.demo.document` (that document model, rendered to
Markdown and to HTML).
"""

from ramir.demo.config import (
    CORPUS_TESTS_AFTER,
    CORPUS_TESTS_BEFORE,
    DEFAULT_BACKBONE_ARGS,
    DEFAULT_LABEL,
    EXTRA_TASKS,
    GOALS,
    SELECTION_LABEL,
    SELECTIONS,
    TASKS,
    DemoConfig,
    check_config,
    load_demo_config,
)
from ramir.demo.data import demo_data_config
from ramir.demo.pipeline import DemoResult, run_demo
from ramir.demo.stages import STAGE_FILE, training_config
from ramir.demo.tasks import Task

__all__ = [
    "CORPUS_TESTS_AFTER",
    "CORPUS_TESTS_BEFORE",
    "DEFAULT_BACKBONE_ARGS",
    "DEFAULT_LABEL",
    "EXTRA_TASKS",
    "GOALS",
    "SELECTIONS",
    "SELECTION_LABEL",
    "STAGE_FILE",
    "TASKS",
    "DemoConfig",
    "DemoResult",
    "Task",
    "check_config",
    "demo_data_config",
    "load_demo_config",
    "run_demo",
    "training_config",
]

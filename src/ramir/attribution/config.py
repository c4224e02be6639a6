"""The strict config of ``ramir analyze`` (layer attribution of a pretrained checkpoint).

Example (``configs/cpu/analyze.yaml``)::

    checkpoint: runs/cpu_pretrain/model.safetensors
    method: mac
    steps: 200
    images:
      source: folder
      folder: data/analysis_images
      count: 10
      crop: 64
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["AnalysisImages", "AnalyzeConfig"]


@dataclass
class AnalysisImages:
    """Where the analysed (degraded, ``lq``) images come from.

    * ``source: folder``: the first ``count`` images (natural file-name order) of
      ``folder``.
    * ``source: mixture``: the training mixture of a data config (``data``: a data YAML,
      or an experiment YAML with a ``data:`` section): the first ``count`` images of every
      training sub-dataset (the reference: 10 per task, 70 images for 7 tasks; the
      identity task is not used), optionally only the sub-datasets named in ``tasks``.
      Crops are taken before synthetic degradations, which are seeded from
      ``(seed, sub-dataset number, image number)``.

    Every image is centre-cropped to ``crop x crop`` (the reference: 64; ``crop: 0`` keeps
    whole images, which must then all have the same size when ``batch > 1``).
    ``root_dir`` replaces the data config's ``root_dir`` (where the datasets are).
    """

    source: Literal["folder", "mixture"] = "folder"
    folder: str | None = None
    data: str | None = None
    tasks: list[str] | None = None
    count: int | None = 10
    recursive: bool = False
    crop: int = 64
    root_dir: str | None = None

    def __post_init__(self) -> None:
        if self.source == "folder" and not self.folder:
            raise ValueError("images.folder is required when images.source is 'folder'")
        if self.source == "mixture" and not self.data:
            raise ValueError(
                "images.data (a data config YAML) is required when images.source is 'mixture'"
            )
        if self.count is not None and self.count < 1:
            raise ValueError(f"images.count must be >= 1 (or null for all), got {self.count}")
        if self.crop < 0:
            raise ValueError(f"images.crop must be >= 0 (0 = whole image), got {self.crop}")


@dataclass
class AnalyzeConfig:
    """``ramir analyze``: score every layer of a pretrained model (docs/method.md#mac).

    ``method``: ``mac`` (mask attribution conductance), ``ig`` (integrated-gradients
    conductance along the straight path) or ``random`` (random ranking), the three rows
    of the paper's Table 5. ``select_ratio``/``select_by`` only shape the report and the
    plot's highlight; ``ramir finetune`` makes its own selection from ``mac.json``.

    Batching: ``chunk`` path steps of each of ``batch`` images go through the network as
    one forward pass (``batch x chunk`` inputs, which is what bounds the memory: it grows
    linearly with both); ``chunk: null`` takes :data:`ramir.attribution.DEFAULT_CHUNK`
    for the device. Scores, rankings and the selection do not depend on either (the
    same numbers to float rounding as one image and one step per forward pass). Images
    of different sizes (``images.crop: 0``) are never batched together.

    ``threads`` sets torch's CPU threads for the run (``null``: torch's default; on a
    machine shared with other jobs, 1 is often much faster than oversubscribed threads).

    ``checkpoint`` is a weights file (ours or an official ``.pth``; ``arch`` names the
    architecture of the latter if it cannot be guessed), or a training run / checkpoint
    folder, whose EMA weights (``weights: ema``, the default) or raw weights
    (``weights: model``) are used.

    ``mask_generator`` (RAM++, docs/rampp.md): an AdaSAM checkpoint (the release's
    ``AdaSAM_pretrained.pth``); MAC then reveals each image's pixels by ascending AdaSAM
    probability (:func:`ramir.rampp.mac_order`) instead of a random order, everything
    else as RAM's MAC. The images must be the generator's size (``images.crop`` = its
    ``img_size``, 128 in the release).
    """

    checkpoint: str
    images: AnalysisImages
    arch: str | None = None
    weights: Literal["ema", "model"] = "ema"
    method: Literal["mac", "ig", "random"] = "mac"
    steps: int = 200
    start_ratio: float = 0.5
    sharpness: float = 10000.0
    ig_accumulate: Literal["conductance", "gradient"] = "conductance"
    chunk: int | None = None
    batch: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    select_ratio: float = 0.1
    select_by: Literal["layers", "params"] = "layers"
    top_k: int = 30
    out_dir: str = "runs/analyze"
    mask_generator: str | None = None

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ValueError("checkpoint is required (the pretrained model to analyse)")
        if self.mask_generator is not None and self.method != "mac":
            raise ValueError(
                f"mask_generator (RAM++'s AdaSAM reveal order) is for method mac, not "
                f"{self.method!r}"
            )
        if self.steps < 2:
            raise ValueError(f"steps must be >= 2, got {self.steps}")
        if not 0.0 < self.start_ratio <= 1.0:
            raise ValueError(f"start_ratio must be in (0, 1], got {self.start_ratio}")
        if self.sharpness <= 0:
            raise ValueError(f"sharpness must be positive, got {self.sharpness}")
        if (self.chunk is not None and self.chunk < 1) or self.batch < 1:
            raise ValueError(f"chunk and batch must be >= 1, got {self.chunk}, {self.batch}")
        if not 0.0 <= self.select_ratio <= 1.0:
            raise ValueError(f"select_ratio must be in [0, 1], got {self.select_ratio}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(
                f"threads must be >= 1 (or null for torch's default), got {self.threads}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")

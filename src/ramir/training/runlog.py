"""What a run reports: progress bar, JSONL log, TensorBoard, and a curve plot at the end.

Only the main process logs (the others get a :class:`RunLogger` with ``enabled=False``).
``OUT/log.jsonl`` has one JSON object per logged step, e.g.
``{"kind": "train", "iter": 20, "epoch": 0, "loss": 0.41, "lr": 0.0001, "it_per_s": 5.2,
"time": 3.9}`` and ``{"kind": "val", "iter": 100, "psnr": 27.1}``. On resume the records
after the resumed iteration (written by the interrupted run after its last checkpoint) are
dropped, so the log reads as one uninterrupted run.

:class:`LossMeter` sums the step losses on the device between log records and stops the
run (:class:`NonFiniteLossError`) when one was NaN/Inf.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ramir.checkpoint import latest_checkpoint
from ramir.errors import RamirError, ResourceError
from ramir.masking import apply_mask
from ramir.training import distributed as ddp

__all__ = [
    "RunLogger",
    "LossMeter",
    "NonFiniteLossError",
    "log_images",
    "read_log",
    "plot_training_curve",
]

LOG_FILE = "log.jsonl"


class NonFiniteLossError(RamirError, RuntimeError):
    """The loss became NaN or Inf; the run stopped before writing another checkpoint."""


class LossMeter:
    """Sums the step losses on the device (no host sync per step) until :meth:`flush`."""

    def __init__(self, device: torch.device, iteration: int) -> None:
        self.acc = torch.zeros(2, device=device)  # [sum of losses, non-finite losses]
        self.since_iter, self.since_time = iteration, time.perf_counter()

    def add(self, loss: torch.Tensor) -> None:
        self.acc += torch.stack([loss.detach(), (~torch.isfinite(loss.detach())).float()])

    def flush(self, iteration: int, info: ddp.DistInfo, out: Path) -> tuple[float, float]:
        """The mean loss over every process since the last flush, and iterations/s.

        Raises:
            NonFiniteLossError: a loss since the last flush was NaN/Inf.
        """
        total, n_bad = ddp.all_reduce_sum(self.acc.clone(), info).tolist()
        steps = iteration - self.since_iter
        if n_bad > 0:
            good = latest_checkpoint(out) if info.is_main else None
            raise NonFiniteLossError(
                f"the loss became NaN/Inf between iterations {self.since_iter + 1} and "
                f"{iteration}; stopped. Last good checkpoint: {good or 'none'}. Resume from "
                "it with a lower optim.lr, train.grad_clip > 0 or train.precision=fp32"
            )
        now = time.perf_counter()
        rate = steps / max(now - self.since_time, 1e-9)
        self.acc.zero_()
        self.since_iter, self.since_time = iteration, now
        return total / (steps * info.world_size), rate


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSONL log (a run folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / LOG_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return records


class RunLogger:
    """JSONL + TensorBoard + tqdm for one run.

    Args:
        out_dir: the run folder.
        total_iter: for the progress bar.
        start_iter: iterations already done (resume); later log records are dropped.
        enabled: ``False`` on non-main processes (everything becomes a no-op).
        tensorboard: write event files under ``out_dir/tb``.
        progress: show a tqdm bar.
    """

    def __init__(
        self,
        out_dir: str | Path,
        total_iter: int,
        start_iter: int = 0,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOG_FILE
        self._tb = None
        self._bar = None
        self._file = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_log(self.path) if int(r.get("iter", 0)) <= start_iter]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ResourceError(
                    "logging.tensorboard=true needs the tensorboard package: "
                    "pip install tensorboard, or set logging.tensorboard=false"
                ) from None

            # purge_step drops events an interrupted run wrote after its last checkpoint.
            self._tb = SummaryWriter(
                str(self.out_dir / "tb"), purge_step=start_iter + 1 if start_iter else None
            )
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_iter, initial=start_iter, unit="it", dynamic_ncols=True)

    # -- records ------------------------------------------------------------------------
    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record (needs ``kind`` and ``iter``); numbers go to TensorBoard too."""
        if not self.enabled:
            return
        rec = {k: _plain(v) for k, v in record.items()}
        assert self._file is not None
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self._tb is not None:
            kind, step = rec.get("kind", "train"), int(rec["iter"])
            for k, v in rec.items():
                if k not in ("kind", "iter", "epoch", "time") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def progress(self, iteration: int, **postfix: float) -> None:
        """Move the bar to ``iteration`` and show ``postfix`` (e.g. loss, lr)."""
        if self._bar is None:
            return
        self._bar.update(iteration - self._bar.n)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def images(self, tag: str, triplets: torch.Tensor, iteration: int) -> None:
        """Log ``(N, 3, H, 3W)`` images in [0, 1] (lq | pred | gt side by side)."""
        if self._tb is not None:
            self._tb.add_images(tag, triplets.clamp(0, 1).float().cpu(), iteration)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None


def log_images(
    log: RunLogger,
    iteration: int,
    model: Any,
    inp: torch.Tensor,
    mask: torch.Tensor | None,
    pred: torch.Tensor,
    target: torch.Tensor,
    n_images: int,
) -> None:
    """Input (as the network saw it), prediction and target side by side (tensors
    ``(B, 3, H, W)`` in ``model``'s normalised space; ``mask`` 1 = hidden)."""
    shown = inp if mask is None else apply_mask(inp, mask, model.mask_token_for(inp))
    k = min(n_images, inp.shape[0])
    trip = torch.cat([shown[:k], pred[:k].detach(), target[:k]], dim=-1)
    log.images("train/lq_pred_gt", model.normalization.denormalize(trip.float()), iteration)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf
    return v


def plot_training_curve(
    records: Iterable[Mapping[str, Any]], path: str | Path, title: str = ""
) -> Path:
    """Plot the training loss (log scale), the learning rate and validation PSNR to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [r for r in records if r.get("kind", "train") == "train" and "loss" in r]
    val = [r for r in records if r.get("kind") == "val" and "psnr" in r]
    n = 3 if val else 2
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.4 * n), sharex=True)
    it = [r["iter"] for r in train]
    loss = [r["loss"] if isinstance(r["loss"], (int, float)) else float("nan") for r in train]
    axes[0].plot(it, loss, lw=1)
    if any(v > 0 for v in loss if math.isfinite(v)):
        axes[0].set_yscale("log")
    axes[0].set_ylabel("loss")
    axes[0].grid(alpha=0.3)
    axes[1].plot(it, [r.get("lr", float("nan")) for r in train], lw=1, color="tab:orange")
    axes[1].set_ylabel("lr")
    axes[1].grid(alpha=0.3)
    if val:
        axes[2].plot([r["iter"] for r in val], [r["psnr"] for r in val], "o-", color="tab:green")
        axes[2].set_ylabel("val PSNR (dB)")
        axes[2].grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

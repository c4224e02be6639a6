"""The training data stream: one persistent loader, resumable at any iteration."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler
from training_helpers import ToyPairs, make_config

from ramir.training import train
from ramir.training.data import StreamSampler, make_loader
from ramir.training.runlog import read_log


def _take(sampler: StreamSampler, n: int) -> list[list[tuple[int, int]]]:
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_the_stream_walks_the_distributed_sampler_order_epoch_after_epoch():
    s = StreamSampler(10, 3, rank=1, world_size=2, seed=5)
    assert s.iters_per_epoch == 1  # 5 samples per rank, batches of 3, the rest dropped
    for epoch, batch in enumerate(_take(s, 3)):
        ref = DistributedSampler(range(10), num_replicas=2, rank=1, seed=5, drop_last=True)
        ref.set_epoch(epoch)
        assert batch == [(epoch, i) for i in list(ref)[:3]]


def test_the_stream_resumes_at_any_iteration_to_the_same_batches():
    whole = _take(StreamSampler(20, 4, seed=3), 12)  # 5 batches per epoch
    for k in (1, 4, 5, 7):
        assert _take(StreamSampler(20, 4, seed=3, start_iter=k), 12 - k) == whole[k:]


def test_too_small_a_dataset_says_what_to_lower():
    with pytest.raises(ValueError, match="fewer than one global batch"):
        StreamSampler(6, 4, world_size=2)


class Pids(ToyPairs):
    """ToyPairs whose items also say which process made them and for which epoch."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        return {**item, "pid": os.getpid(), "epoch": self.epochs[-1] if self.epochs else -1}


def test_one_loader_keeps_its_workers_across_epochs_and_tags_items_with_their_epoch():
    ds = Pids(n=8)
    sampler = StreamSampler(8, 2, seed=0)  # 4 batches per epoch
    loader = make_loader(ds, sampler, num_workers=2, pin_memory=False, seed=0)
    it = iter(loader)
    try:
        batches = [next(it) for _ in range(12)]  # 3 epochs
    finally:
        it._shutdown_workers()  # type: ignore[attr-defined]
    pids = {int(p) for b in batches for p in b["pid"]}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, started once
    # workers run ahead into the next epoch; each item still belongs to its key's epoch
    assert [b["epoch"].tolist() for b in batches] == [[e, e] for e in (0, 1, 2) for _ in range(4)]
    ref = _take(StreamSampler(8, 2, seed=0), 12)
    assert [b["index"].tolist() for b in batches] == [[i for _, i in keys] for keys in ref]


def test_a_run_with_workers_resumes_mid_epoch_to_the_same_batches_and_weights(tmp_path):
    class Crash(Exception):
        pass

    def crash(iteration: int) -> None:
        if iteration == 5:
            raise Crash

    cfg = make_config(
        train={"total_iter": 7, "input": "masked", "num_workers": 2},
        checkpoint={"every": 3, "keep_last": 5},
    )
    ref = train(cfg, tmp_path / "whole", dataset=ToyPairs(n=16))  # 4 it/epoch
    with pytest.raises(Crash):
        train(cfg, tmp_path / "broken", dataset=ToyPairs(n=16), on_step=crash)
    resumed = train(cfg, tmp_path / "broken", dataset=ToyPairs(n=16))  # from 3: mid-epoch

    def losses(run):
        return {r["iter"]: r["loss"] for r in read_log(run) if r["kind"] == "train"}

    assert losses(tmp_path / "broken") == losses(tmp_path / "whole")
    for a, b in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the same batches as loading in this process, and the log says how long data took
    in_process = make_config(
        train={"total_iter": 7, "input": "masked", "num_workers": 0},
        checkpoint={"every": 3, "keep_last": 5},
    )
    train(in_process, tmp_path / "w0", dataset=ToyPairs(n=16))
    assert losses(tmp_path / "w0") == losses(tmp_path / "whole")
    records = [r for r in read_log(tmp_path / "whole") if r["kind"] == "train"]
    assert records and all(r["data_ms"] >= 0 for r in records)


def _photo_mixture(degrade_on: str) -> dict[str, Any]:
    return {
        "patch_size": 16,
        "identity": True,
        "seed": 0,
        "degrade_on": degrade_on,
        "datasets": [
            {"name": "noise", "layout": "skimage_photos", "degradation": "gaussian_noise",
             "params": {"sigma": 25.0}, "cache": True},
        ],
    }  # fmt: skip


def test_device_degradations_degrade_each_batch_in_the_loop_reproducibly():
    """data.degrade_on: device: the workers hand clean crops (and their source), the loop
    degrades the batch on its device; a pure function of (seed, iteration, rank)."""
    from ramir.config import from_dict
    from ramir.data.config import DataConfig
    from ramir.data.mixture import MixtureDataset
    from ramir.training.data import BatchDegrader, collate_checked

    ds = MixtureDataset(from_dict(DataConfig, _photo_mixture("device")))
    ref = MixtureDataset(from_dict(DataConfig, _photo_mixture("cpu")))
    assert [d is not None for d in ds.device_degradations()] == [True, False]  # not identity
    batch = collate_checked([ds.sample(i, 0) for i in range(8)])
    assert torch.equal(batch["lq"], batch["gt"])  # clean crops: noise and identity alike
    assert batch["source"].tolist() == [0, 1] * 4
    assert torch.equal(batch["gt"], collate_checked([ref.sample(i, 0) for i in range(8)])["gt"])
    degrade = BatchDegrader(ds.device_degradations(), seed=0)
    a, b, c = degrade(batch, 3), degrade(batch, 3), degrade(batch, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[1::2], batch["lq"][1::2])  # identity samples untouched
    residual = (a[0::2] - batch["gt"][0::2]) * 255
    assert 20 < float(residual.std()) < 30  # sigma 25 on the 0-255 scale (then clipped)


def test_a_run_with_device_degradations_resumes_exactly(tmp_path):
    class Crash(Exception):
        pass

    def crash(iteration: int) -> None:
        if iteration == 4:
            raise Crash

    cfg = make_config(
        data=_photo_mixture("device"),
        train={"total_iter": 6, "num_workers": 1},
        checkpoint={"every": 3, "keep_last": 3},
    )
    ref = train(cfg, tmp_path / "whole")
    with pytest.raises(Crash):
        train(cfg, tmp_path / "broken", on_step=crash)
    resumed = train(cfg, tmp_path / "broken")

    def losses(run):
        return {r["iter"]: r["loss"] for r in read_log(run) if r["kind"] == "train"}

    assert losses(tmp_path / "broken") == losses(tmp_path / "whole")
    for x, y in zip(ref.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(x, y)

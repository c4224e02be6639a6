"""DistributedDataParallel on CPU (gloo) with torchrun, and resume after a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ramir.training.runlog import read_log

WORKER = Path(__file__).parent / "ddp_worker.py"
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run(cmd: list[str], ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a timeout kill the whole group."""
    proc = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out:\n{out}\n{err}") from None
    if ok and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _losses(out: Path) -> dict[int, float]:
    return {r["iter"]: r["loss"] for r in read_log(out) if r["kind"] == "train"}


@pytest.mark.distributed
def test_two_gloo_processes_match_one_process_with_twice_the_batch(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(two), "--batch", "2"])
    _run([sys.executable, str(WORKER), str(one), "--batch", "4"])

    r0, r1 = load_file(str(two / "rank0.safetensors")), load_file(str(two / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)  # both ranks end identical
    single = load_file(str(one / "rank0.safetensors"))
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5)
    l2, l1 = _losses(two), _losses(one)
    assert sorted(l2) == sorted(l1) == [1, 2, 3, 4]
    for i in l1:
        assert l2[i] == pytest.approx(l1[i], rel=1e-4)
    # rank 0 alone wrote checkpoints and logs
    assert [p.name for p in sorted((two / "checkpoints").iterdir())] == [
        "iter_00000002",
        "iter_00000004",
    ]


@pytest.mark.distributed
def test_shared_masks_differ_between_ranks_by_default(tmp_path):
    """Shared masks: each process hides its own pixels (as the release), unless
    per_rank is off; rank 0 draws what a single process draws."""
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    for mode in ("per_rank", "same"):
        _run([*torchrun, str(WORKER), str(tmp_path / mode), "--batch", "2", "--shared", mode])
    _run([sys.executable, str(WORKER), str(tmp_path / "one"), "--batch", "2", "--shared", "same"])

    def masks(run: str, rank: int) -> torch.Tensor:
        return load_file(str(tmp_path / run / f"masks{rank}.safetensors"))["masks"]

    assert masks("per_rank", 0).shape[0] == 4  # one mask per iteration
    assert not torch.equal(masks("per_rank", 0), masks("per_rank", 1))
    assert torch.equal(masks("same", 0), masks("same", 1))
    assert torch.equal(masks("per_rank", 0), masks("one", 0))
    assert torch.equal(masks("same", 0), masks("one", 0))


@pytest.mark.slow
@pytest.mark.distributed
def test_a_killed_two_process_run_resumes_to_the_same_result(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(whole), "--batch", "2", "--iters", "5"])
    crashed = _run(
        [*torchrun, str(WORKER), str(killed), "--batch", "2", "--iters", "5", "--crash-at", "3"],
        ok=False,
    )
    assert crashed.returncode != 0
    assert max(_losses(killed)) == 3 and not (killed / "rank0.safetensors").exists()
    _run([*torchrun, str(WORKER), str(killed), "--batch", "2", "--iters", "5"])
    assert _losses(killed) == _losses(whole)
    a, b = load_file(str(whole / "rank1.safetensors")), load_file(str(killed / "rank1.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _initial(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """The weights a run of seed 0 starts from (the loop seeds, then builds)."""
    from ramir.models import build_model

    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in build_model(name, **kwargs).state_dict().items()}


@pytest.mark.distributed
def test_partial_finetuning_under_two_processes_trains_only_the_selection_like_one(tmp_path):
    """Fine-tuning a few layers (the rest frozen) under DDP: the frozen weights stay
    exactly as they started, and the selected ones end as with one process."""
    layers = ["intro", "ending", "encoders.0.0"]  # the block's own beta and gamma
    common = ["--batch", "2", "--iters", "4", "--input", "whole", "--select", ",".join(layers)]
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(tmp_path / "two"), *common])
    common[1] = "4"
    _run([sys.executable, str(WORKER), str(tmp_path / "one"), *common])
    start = _initial("nafnet_tiny")
    two = load_file(str(tmp_path / "two" / "rank0.safetensors"))
    one = load_file(str(tmp_path / "one" / "rank0.safetensors"))
    selected = {k for k in start if k.rsplit(".", 1)[0] in layers}  # owned by a layer
    assert len(selected) == 6
    for k in start:
        if k in selected:
            assert not torch.equal(two[k], start[k])
            torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6)
        else:
            assert torch.equal(two[k], start[k]), k
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-4)


@pytest.mark.distributed
def test_full_training_of_promptir_under_two_processes_runs_like_one(tmp_path):
    """The released PromptIR builds six convolutions its forward never calls: DDP needs
    to know (it failed at the second iteration); they stay as they started."""
    tiny = {"num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}
    common = ["--iters", "3", "--input", "whole", "--model", "promptir", "--args",
              json.dumps(tiny), "--ckpt-every", "100"]  # fmt: skip
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, str(WORKER), str(tmp_path / "two"), "--batch", "1", *common])
    _run([sys.executable, str(WORKER), str(tmp_path / "one"), "--batch", "2", *common])
    assert sorted(_losses(tmp_path / "two")) == [1, 2, 3]
    start = _initial("promptir", **tiny)
    two = load_file(str(tmp_path / "two" / "rank0.safetensors"))
    one = load_file(str(tmp_path / "one" / "rank0.safetensors"))
    unused = [k for k in start if "chnl_reduce" in k or "reduce_noise_channel" in k]
    assert len(unused) == 6
    for k in start:
        if k in unused:
            assert torch.equal(two[k], start[k]), k
        else:
            torch.testing.assert_close(two[k], one[k], rtol=1e-3, atol=1e-5)


def test_the_unused_parameter_probe_finds_what_the_forward_never_touches():
    """What turns DDP's search on: PromptIR's never-called convolutions, RAM-SwinIR's
    learnable mask token on whole inputs (not on masked ones); frozen parameters and a
    model that uses everything give nothing. The model itself is left untouched."""
    from ramir.models import build_model
    from ramir.training.distributed import unused_parameters

    torch.manual_seed(0)
    promptir = build_model("promptir", num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
    before = torch.get_rng_state()
    found = unused_parameters(promptir, (16, 16), masked=False)
    assert torch.equal(torch.get_rng_state(), before)  # the run's random stream did not move
    assert sorted({n.rsplit(".", 1)[0] for n in found}) == sorted(
        ["chnl_reduce1", "chnl_reduce2", "chnl_reduce3", "reduce_noise_channel_1",
         "reduce_noise_channel_2", "reduce_noise_channel_3"]
    )  # fmt: skip
    assert all(p.grad is None for p in promptir.parameters())
    for n, p in promptir.named_parameters():
        p.requires_grad_(n not in found)
    assert unused_parameters(promptir, (16, 16), masked=False) == []

    tiny = {"embed_dim": 12, "depths": [1], "num_heads": [2], "window_size": 4, "img_size": 16}
    swinir = build_model("ram_swinir", mask_token="learnable", **tiny)
    assert unused_parameters(swinir, (16, 16), masked=False) == ["mask_token"]
    assert unused_parameters(swinir, (16, 16), masked=True) == []
    assert unused_parameters(build_model("nafnet_tiny"), (16, 16), masked=True) == []

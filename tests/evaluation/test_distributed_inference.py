"""``ramir restore`` and ``ramir evaluate`` under torchrun: 2 gloo processes on the CPU
give what one process gives; a rank killed mid-run fails the run and a resume ends it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ramir.cli import main

sys.path.insert(0, str(Path(__file__).parent))
from test_restore_scale import write_mixed_folder  # noqa: E402

WORKER = Path(__file__).parent / "inference_worker.py"
TORCHRUN = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2"]

pytestmark = pytest.mark.distributed


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _torchrun(args: list[str], fault: list[str] = (), timeout: float = 180):
    """``torchrun`` of the worker in its own process group (killed whole on a timeout)."""
    cmd = [*TORCHRUN, str(WORKER), *fault, "--", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} timed out:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_swinir_ckpt):
    """A mixed folder, the restore arguments, and what one process makes of it."""
    root = tmp_path_factory.mktemp("mixed")
    write_mixed_folder(root / "in")
    args = [str(root / "in"), "--model", str(tiny_swinir_ckpt), "-q", "--tile", "48"]
    args += ["--tile-overlap", "8", "--batch-size", "2", "--threads", "1"]
    code = main(["restore", *args, "-o", str(root / "one")])
    return root, args, code, _files(root / "one")


def test_two_ranks_restore_a_mixed_folder_byte_for_byte_like_one_process(mixed):
    root, args, code, reference = mixed
    two = _torchrun(["restore", *args, "-o", str(root / "two")])
    assert code == 1 and two.returncode == 1  # the broken file, either way
    assert _files(root / "two") == reference
    assert two.stdout.count("restored 8 of 9 image(s) into") == 1  # rank 0 reports
    assert two.stderr.count("skipped ") == 1 and "broken.png" in two.stderr


def test_a_killed_rank_fails_the_run_and_a_resume_completes_it(mixed):
    """Rank 1 is killed (SIGKILL) as it encodes its 2nd image: the run fails with a
    message, the outputs written are whole, and --skip-existing on 2 ranks ends with the
    outputs of the uninterrupted single process."""
    root, args, _, reference = mixed
    out = ["-o", str(root / "killed")]
    died = _torchrun(["restore", *args, *out], ["--die-at", "2", "--die-rank", "1"])
    assert died.returncode != 0
    assert "Signal 9 (SIGKILL)" in died.stderr or "SIGKILL" in died.stderr, died.stderr
    assert "rerun the same command with --skip-existing" in died.stderr, died.stderr
    kept = {n: b for n, b in _files(root / "killed").items() if not n.startswith(".")}
    assert len(kept) < len(reference) and all(reference[n] == b for n, b in kept.items())
    resumed = _torchrun(["restore", *args, *out, "--skip-existing"])
    assert resumed.returncode == 1, resumed.stderr
    assert f"({len(kept)} already there, kept)" in resumed.stdout
    assert _files(root / "killed") == reference


@pytest.fixture()
def eval_config(tmp_path, tiny_swinir_ckpt):
    from ramir.checkpoint import save_model
    from ramir.data.write import write_image
    from ramir.models import build_model

    clean = tmp_path / "clean"
    import torch

    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate([(40, 48), (40, 48), (40, 48), (36, 44), (72, 64)]):
        small = torch.rand(1, 3, 6, 7, generator=g)
        write_image(clean / f"im{i}.png", torch.nn.functional.interpolate(small, (h, w))[0])
    torch.manual_seed(0)
    naf = save_model(build_model("nafnet_tiny"), tmp_path / "naf.safetensors")
    test = [
        {"name": "noise", "layout": "clean_folder", "root": str(clean),
         "degradation": "gaussian_noise", "params": {"sigma": 25.0}},
        {"name": "jpeg", "layout": "clean_folder", "root": str(clean),
         "degradation": "jpeg", "params": {"quality": 40}},
    ]  # fmt: skip
    cfg = {
        "name": "scale",
        "output_dir": str(tmp_path / "runs"),
        "models": [
            {"name": "swinir", "checkpoint": str(tiny_swinir_ckpt)},
            {"name": "nafnet", "checkpoint": str(naf)},
        ],
        "data": {"test": test, "seed": 5},
        "conventions": ["ram", "promptir"],
        "input_row": True,
        "save_images": True,
        "device": "cpu",
        "tile": 48,
        "tile_overlap": 8,
        "batch_size": 2,
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "runs"


def _untimed(path: Path) -> list[dict]:
    """``table.json`` without its titles (they name the run) and the rows' measured
    ``seconds_per_image`` (wall-clock time differs between any two runs)."""
    found = json.loads(path.read_text())
    for table in found:
        table.pop("title", None)
        for row in table.get("rows", []):
            row.pop("seconds_per_image", None)
    return found


def _untimed_cache(path: Path) -> list[dict]:
    """A per-image ``.jsonl`` cache, its records without their measured ``seconds``."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        record.pop("seconds", None)
    return records


def test_evaluate_on_two_ranks_writes_the_table_of_one_process(eval_config):
    path, runs = eval_config
    one = ["evaluate", "-c", str(path), "-q", "--threads", "1"]
    assert main([*one, "--set", "name=one"]) == 0
    two = _torchrun([*one, "--set", "name=two"])
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("20 image(s) restored, 0 taken from earlier runs") == 1

    assert _untimed(runs / "two" / "table.json") == _untimed(runs / "one" / "table.json")
    for name in ("per_image.csv", "gains.md"):
        assert (runs / "two" / name).read_text() == (runs / "one" / name).read_text(), name
    for model in ("swinir", "nafnet"):
        for s in ("noise", "jpeg"):
            one_cache = _untimed_cache(runs / "one" / "per_image" / model / f"{s}.jsonl")
            assert _untimed_cache(runs / "two" / "per_image" / model / f"{s}.jsonl") == one_cache
            images = sorted(p.name for p in (runs / "two" / "images" / model / s).iterdir())
            assert images == [f"im{i}.png" for i in range(5)]
    assert not list((runs / "two").rglob("*.parts"))  # the rank files were merged
    tables = json.loads((runs / "two" / "table.json").read_text())
    assert [r["label"] for r in tables[0]["rows"]][:3] == ["input (no restoration)", "swinir",
                                                           "nafnet"]  # fmt: skip


def test_rank_files_of_an_interrupted_run_are_reused_and_merged(eval_config, capsys):
    """What a killed 2-rank run leaves (some results only in ``<set>.parts/rank1.jsonl``)
    is not measured again by the next run, which merges it into ``<set>.jsonl``."""
    path, runs = eval_config
    args = ["evaluate", "-c", str(path), "-q", "--threads", "1", "--set", "input_row=false"]
    assert main(args) == 0
    assert "20 image(s) restored" in capsys.readouterr().out
    cache = runs / "scale" / "per_image" / "nafnet" / "jpeg.jsonl"
    table = _untimed(runs / "scale" / "table.json")
    whole = cache.read_text()
    records = _untimed_cache(cache)
    header, *lines = whole.splitlines()
    cache.write_text("\n".join([header, *lines[:2]]) + "\n")
    parts = cache.with_name("jpeg.parts")
    parts.mkdir()
    (parts / "rank1.jsonl").write_text("\n".join([header, *lines[2:4]]) + "\n")
    (parts / "rank3.jsonl").write_text(header + "\n" + lines[4][:20])  # cut short by a kill
    assert main(args) == 0
    assert "1 image(s) restored, 19 taken from earlier runs" in capsys.readouterr().out
    # the same records in the same order; only the re-restored image's time is new
    assert _untimed_cache(cache) == records and not parts.exists()
    assert _untimed(runs / "scale" / "table.json") == table


@pytest.mark.slow
def test_two_machines_by_rendezvous_restore_like_one_process(mixed):
    """The README's two-machine command, both "machines" on localhost: two torchrun
    agents meet at a c10d rendezvous endpoint, one process each."""
    import socket

    root, args, _, reference = mixed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                f"127.0.0.1:{port}", "--rdzv-id", "album", "-m", "ramir"]  # fmt: skip
    cmd = [*torchrun, "restore", *args, "-o", str(root / "nodes")]
    nodes = [subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True) for _ in range(2)]  # fmt: skip
    try:
        outs = [n.communicate(timeout=180) for n in nodes]
    finally:
        for n in nodes:
            if n.poll() is None:
                os.killpg(n.pid, signal.SIGKILL)
    assert sorted(n.returncode for n in nodes) == [1, 1], outs  # the broken file
    assert sum(o.count("restored 8 of 9 image(s)") for o, _ in outs) == 1
    assert _files(root / "nodes") == reference

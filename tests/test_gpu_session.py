"""benchmarks/gpu_session.py in its CPU smoke mode: the default-model continuation runs
end to end, comes back in at most 8 files of at most 16 MB, and a second call
continues where the first stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.py"


def _call(out: Path, runs: Path, *extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--runs", str(runs), "--budget", "240",
           "--device", "cpu", "--smoke", *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [f for f in out.iterdir() if f.is_file()]
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files)
    return json.loads((out / "session.json").read_text())


def _log(out: Path, tmp: Path) -> tuple[list[dict], Path]:
    """The train records of the run a call brought back, and where it was unpacked."""
    joined = tmp / "joined.tgz"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("default_run.tgz.part-*"))))
    with tarfile.open(joined) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    run = tmp / "unpacked" / "default_run"
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x]
    return [r for r in records if r.get("kind") == "train"], run


def test_the_smoke_run_continues_the_default_model_across_two_calls(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    s1 = _call(first, tmp_path / "runs1", "--tasks", "steps", "train", "--stop-after", "20")
    assert s1["train"]["from"] == "default_model.safetensors"
    assert s1["train"]["reached"] == 20 and "time limit" in s1["train"]["stopped_at"]
    assert "continued" in s1["eval"] and "shipped" in s1["eval"]
    assert any("nafnet_w16" in line for line in s1["steps"])  # bench_loop's row
    report = (first / "report.md").read_text()
    assert "Default-model continuation" in report and "Training steps" in report

    s2 = _call(second, tmp_path / "runs2", "--tasks", "train", "--resume", str(first))
    assert s2["train"]["from"] == "iter_00000020"
    assert s2["train"]["start_iter"] == 20 and s2["train"]["reached"] == 40
    records, run = _log(second, tmp_path)
    assert [r["iter"] for r in records] == list(range(10, 41, 10))  # one log, no repeats
    ema = load_file(str(run / "checkpoints" / "iter_00000040" / "model_ema.safetensors"))
    shipped = load_file(str(ROOT / "src" / "ramir" / "assets" / "default_model.safetensors"))
    assert set(ema) == set(shipped)
    assert any(not torch.equal(ema[k], shipped[k]) for k in ema)  # it trained


def test_the_session_chooses_on_the_validation_part_only():
    """The continuation's evaluation never measures the test part: its photo-corpus
    evaluation sets are restricted to part val; other sets are kept as they are."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = {
        "patch_size": 96,
        "test": [
            {"name": "clean", "layout": "photo_corpus", "options": {"view": "eval"}},
            {"name": "native", "layout": "photo_corpus", "options": {"view": "eval_native"}},
            {"name": "sk", "layout": "folder", "root": "x", "options": {}},
        ],
    }
    out = mod.validation_part(data)
    assert [d["options"].get("part") for d in out["test"]] == ["val", "val", None]
    assert out["patch_size"] == 96 and data["test"][0]["options"] == {"view": "eval"}

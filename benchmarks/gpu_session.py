"""One prepared GPU session: the CUDA tests, and default-model candidates trained on a GPU.

A lent GPU machine gives a few minutes at a time, so this script does everything in one
call and finishes inside ``--budget`` seconds whatever happens:

1. measures each candidate backbone's bare training speed (it/s of forward, L1,
   backward and Adam on in-memory batches) for ``--pilot`` steps, then starts
   ``pytest -m gpu tests/test_gpu.py`` in the background (log: ``gpu_tests.log``);
2. sizes each candidate's masked pretraining to the time left (``configs/default_model.yaml``
   with the candidate's width, ``--batch`` crops and ``num_workers``; a third of the
   training time at ``--speed-factor`` x the measured speed, rounded to 500 iterations)
   and runs ``ramir demo -c <that recipe> --device cuda`` for all candidates at once (the
   small networks leave the GPU mostly idle, so they share it well);
3. when a candidate's pretraining is done, stops its demo, sets its fine-tuning
   iterations from the speed its pretraining measured and the time left, and restarts
   it (the demo reuses finished stages): both stages end with their full schedules;
4. kills any demo still running at the deadline;
5. packs each candidate's report, logs, recipe and weights (the finished export, or the
   newest checkpoint if the deadline came first) into ``<name>.tgz`` under ``--out``,
   split into 15 MB parts (``<name>.tgz.part-aa``, ...); join with ``cat``;
6. with time left, times the shipped model's restoration on the GPU (``bench_restore``).

``--tasks`` picks the steps: ``tests`` (1), ``train`` (2-5), ``restore`` (6), and
``scale``, which runs first, alone on the GPU, for ``--scale-budget`` seconds:
``benchmarks/bench_scale.py --part batch`` (images/s of batch sizes 1/8/32/auto on
512x512 and 2048x2048 photos, the shipped model and RAM-PromptIR at paper size) and the
CUDA tests of batched restoration. The default is all four.

The recipes it wrote are in the archives (``recipe.yaml``): rerun one with
``ramir demo -c recipe.yaml`` to reproduce that model. On the first H100 session (two
candidates at once) training ran at 20 to 24 it/s each, and a demo's work after
fine-tuning (evaluating 2 models on 21 held-out photos, the report) took about 2 minutes,
hence ``--overhead-after``. A demo stopped at the deadline resumes from its checkpoints
while the machine is still warm (``runs/`` is kept between calls):
``PYTHONPATH=src python3 -m ramir demo -c runs/gpu_session/<name>/recipe.yaml``.

Example (on the device machine, from the repository root)::

    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 560
    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 300 --tasks scale
    # here: smoke-test the plumbing on CPU in a minute
    python benchmarks/gpu_session.py --out /tmp/gs --budget 150 --device cpu --smoke
    python benchmarks/gpu_session.py --out /tmp/gs --budget 90 --device cpu --smoke --tasks scale
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from ramir.models import resolve_model

ROOT = Path(__file__).resolve().parents[1]
BASE_RECIPE = ROOT / "configs" / "default_model.yaml"

# name -> NAFNet arguments (the shipped model's blocks, the named size nafnet_w16, at two
# widths); the demo recipe takes them as backbone_args
CANDIDATES: dict[str, dict[str, Any]] = {
    "w16": resolve_model("nafnet_w16")[1],
    "w32": {**resolve_model("nafnet_w16")[1], "width": 32},
}
SMOKE_ARGS = resolve_model("nafnet_tiny")[1]
TASKS = ("scale", "tests", "train", "restore")


def log(msg: str) -> None:
    print(f"[gpu_session {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bare_speed(args: dict[str, Any], batch: int, patch: int, steps: int, device: str) -> float:
    """Training iterations per second of a NAFNet on in-memory batches (no data loading)."""
    from ramir.models import build_model

    torch.manual_seed(0)
    model = build_model("nafnet", **args).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, patch, patch, device=device)
    y = x.flip(-1)

    def step() -> None:
        loss = (model(x) - y).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    speed = steps / (time.perf_counter() - t)
    if device == "cuda":
        torch.cuda.empty_cache()
    return speed


def write_recipe(
    run: Path, its: int, a: argparse.Namespace, model_args: dict[str, Any]
) -> dict[str, Any]:
    """Write ``run/recipe.yaml``, the shipped recipe resized for the GPU; return it."""
    cfg = yaml.safe_load(BASE_RECIPE.read_text())
    pre = max(500, int(round(its / 3 / 500)) * 500) if not a.smoke else 20
    cfg.update(
        out_dir=str(run),
        backbone_args=model_args,
        steps=3 * pre,
        pretrain_iters=pre,
        finetune_iters=2 * pre,
        batch_size=a.batch,
        num_workers=a.workers,
        epoch_length=a.batch * (20 if a.smoke else 1000),
        device=a.device,
        export_model=str(run / "model.safetensors"),
    )
    if a.smoke:
        cfg.update(analysis_images=1, analysis_steps=4, eval_crop=64, patch_size=32)
    if "corpus" in cfg.get("photo_sources", []) and not corpus_ready():
        # A lent GPU machine reaches no registry and the corpus (~530 MB prepared) is too
        # large to carry: train on the photos that ship with the installed packages.
        log("photo corpus not fetched here: training on the bundled photos instead")
        cfg.update(photo_sources=["skimage", "matplotlib", "sklearn"], eval_photos="skimage")
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def corpus_ready() -> bool:
    """Whether the photo corpus's training and evaluation views are in the cache."""
    from ramir.data.corpus import CorpusError, view_files

    try:
        view_files("train")
        view_files("eval")
    except CorpusError:
        return False
    return True


def start_demo(run: Path, env: dict[str, str], append: bool = False) -> subprocess.Popen:
    """``ramir demo -c run/recipe.yaml`` in its own process group, output to demo.log."""
    with open(run / "demo.log", "a" if append else "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "ramir", "demo", "-c", str(run / "recipe.yaml")],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def measured_speed(log_path: Path) -> float:
    """Median it/s of the second half of a training log (the first includes warm-up)."""
    speeds = [
        r["it_per_s"]
        for r in map(json.loads, log_path.read_text().splitlines())
        if r.get("kind") == "train" and "it_per_s" in r
    ]
    tail = sorted(speeds[len(speeds) // 2 :]) or [1.0]
    return float(tail[len(tail) // 2])


def newest_weights(run: Path) -> Path | None:
    """The exported model, else the newest EMA checkpoint of the furthest stage."""
    if (run / "model.safetensors").is_file():
        return run / "model.safetensors"
    for stage in ("ram_finetune_mac", "ram_pretrain"):
        if (run / stage / "model_ema.safetensors").is_file():
            return run / stage / "model_ema.safetensors"
        found = sorted(
            f
            for name in ("model_ema.safetensors", "ema.safetensors")  # new and older runs
            for f in (run / stage).glob(f"checkpoints/*/{name}")
        )
        if found:
            return found[-1]
    return None


def pack(name: str, run: Path, out: Path, part_mb: int = 15) -> list[Path]:
    """Report, logs, recipe and weights of one candidate in ``out/<name>.tgz.part-*``."""
    archive = run.parent / f"{name}.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in (
            "recipe.yaml",
            "demo.log",
            "report.md",
            "results.json",
            "before_after.png",
            "training_curves.png",
            "mac.png",
            "analyze_mac/mac.json",
            "ram_pretrain/log.jsonl",
            "ram_finetune_mac/log.jsonl",
        ):
            if (run / rel).is_file():
                tar.add(run / rel, arcname=f"{name}/{rel}")
        weights = newest_weights(run)
        if weights is not None:
            tar.add(weights, arcname=f"{name}/weights/{weights.relative_to(run)}")
    data, parts = archive.read_bytes(), []
    size = part_mb * 2**20
    for i in range(0, len(data), size):
        part = out / f"{name}.tgz.part-{chr(97 + i // size // 26)}{chr(97 + i // size % 26)}"
        part.write_bytes(data[i : i + size])
        parts.append(part)
    return parts


def run_scale(a: argparse.Namespace, env: dict[str, str], budget: float) -> None:
    """The batched-restoration CUDA tests, then ``bench_scale.py --part batch`` in the
    time left of ``budget``; their output is printed and kept in ``scale.log``."""
    t0 = time.perf_counter()
    lines: list[str] = []
    if a.device == "cuda":
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-k",
               "batch", "-p", "no:cacheprovider"]  # fmt: skip
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=max(10.0, budget / 4))  # fmt: skip
            lines += ["gpu tests (batched restoration):", *res.stdout.splitlines()[-8:]]
        except subprocess.TimeoutExpired:
            lines.append("gpu tests (batched restoration): stopped at their time limit")
    left = budget - (time.perf_counter() - t0) - 10
    cmd = [sys.executable, "benchmarks/bench_scale.py", "--part", "batch", "--device",
           a.device, "--budget", f"{max(5.0, left - 30):.0f}"]  # fmt: skip
    if a.smoke:
        cmd += ["--smoke", "--sizes", "128", "600", "--images-small", "8", "--images-large",
                "1", "--batch-sizes", "4", "auto"]  # fmt: skip
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(10.0, left))  # fmt: skip
        lines += ["bench_scale --part batch:", *res.stdout.splitlines()]
        if res.returncode != 0:
            lines += res.stderr.splitlines()[-10:]
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines += ["bench_scale --part batch (stopped at its time limit):", *out.splitlines()]
    (a.out / "scale.log").write_text("\n".join(lines) + "\n")
    log("scale:\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the results (e.g. $OUT)")
    p.add_argument("--budget", type=float, default=560, help="seconds the whole script may take")
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=6, help="data-loader workers per candidate")
    p.add_argument("--pilot", type=int, default=30, help="timed steps of the speed pilot")
    p.add_argument(
        "--speed-factor",
        type=float,
        default=0.5,
        help="share of the bare speed expected in the demo (shared GPU, data, EMA)",
    )
    p.add_argument(
        "--overhead",
        type=float,
        default=100,
        help="seconds of a demo outside training (data, MAC, evaluation, report)",
    )
    p.add_argument(
        "--overhead-after",
        type=float,
        default=150,
        help="seconds of a demo after pretraining outside fine-tuning",
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu_session")
    p.add_argument("--no-tests", action="store_true")
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=TASKS,
        default=list(TASKS),
        help="steps to run (default all): tests, train, restore, scale",
    )
    p.add_argument(
        "--scale-budget",
        type=float,
        default=240,
        help="seconds of the scale step (bench_scale --part batch and its CUDA tests)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny models and iterations (plumbing)")
    a = p.parse_args(argv)  # fmt: skip

    t0 = time.perf_counter()
    deadline = t0 + a.budget
    a.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    log(f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {a.device}"
        + (f" ({torch.cuda.get_device_name()})" if a.device == "cuda" else ""))  # fmt: skip

    if "scale" in a.tasks:
        run_scale(a, env, min(a.scale_budget, deadline - time.perf_counter() - 5))
    if "train" not in a.tasks:
        a.candidates = []
    if "tests" not in a.tasks:
        a.no_tests = True

    speeds = {}
    for name in a.candidates:
        args = SMOKE_ARGS if a.smoke else CANDIDATES[name]
        speeds[name] = bare_speed(args, a.batch, 64, a.pilot, a.device)
        log(f"pilot {name}: {speeds[name]:.1f} it/s bare (batch {a.batch}, 64x64, fp32)")
    tests = None
    if not a.no_tests:
        tests_log = open(a.out / "gpu_tests.log", "w")  # noqa: SIM115
        tests = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, stdout=tests_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    train_s = deadline - time.perf_counter() - a.overhead - 45
    if a.candidates:
        log(f"training time per candidate: {train_s:.0f} s (all candidates at once)")

    shutil.rmtree(a.runs, ignore_errors=True)
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    for name in a.candidates:
        run = a.runs / name
        its = int(speeds[name] * a.speed_factor * train_s)
        cfg = write_recipe(run, its, a, SMOKE_ARGS if a.smoke else CANDIDATES[name])
        procs[name] = (start_demo(run, env), run)
        log(f"{name}: {cfg['pretrain_iters']} pretraining iterations of batch {cfg['batch_size']}"
            f", then fine-tuning sized to the time left")  # fmt: skip

    # Once a candidate's pretraining is done, stop its demo, size its fine-tuning to the
    # measured speed and the time left, and restart it (the demo reuses finished stages).
    resized: set[str] = set()
    stop_at = deadline - 40
    while time.perf_counter() < stop_at and any(pr.poll() is None for pr, _ in procs.values()):
        for name, (pr, run) in procs.items():
            done = (run / "ram_pretrain" / "model_ema.safetensors").is_file()
            if name in resized or pr.poll() is not None or not done:
                continue
            time.sleep(1)
            os.killpg(pr.pid, signal.SIGKILL)
            pr.wait()
            speed = measured_speed(run / "ram_pretrain" / "log.jsonl")
            left = deadline - time.perf_counter() - a.overhead_after - 45
            fine = max(500, int(speed * 0.9 * left / 500) * 500) if not a.smoke else 40
            cfg = yaml.safe_load((run / "recipe.yaml").read_text())
            cfg.update(finetune_iters=fine, steps=cfg["pretrain_iters"] + fine)
            (run / "recipe.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            log(f"{name}: pretraining ran at {speed:.1f} it/s; fine-tuning for {fine} "
                f"iterations in the {left:.0f} s left")  # fmt: skip
            procs[name] = (start_demo(run, env, append=True), run)
            resized.add(name)
        time.sleep(2)
    for name, (pr, _) in procs.items():
        if pr.poll() is None:
            log(f"{name}: still running at the deadline; stopped")
            os.killpg(pr.pid, signal.SIGKILL)
            pr.wait()
        else:
            log(f"{name}: demo exited with {pr.returncode} after {time.perf_counter() - t0:.0f} s")

    for name, (_, run) in procs.items():
        parts = pack(name, run, a.out)
        log(f"{name}: packed {', '.join(q.name for q in parts)} "
            f"({sum(q.stat().st_size for q in parts) / 2**20:.1f} MB)")  # fmt: skip
        report = run / "report.md"
        if report.is_file():
            for line in report.read_text().splitlines():
                if line.startswith("| "):
                    print(line)

    if tests is not None:
        try:
            tests.wait(timeout=max(1.0, deadline - time.perf_counter() - 25))
        except subprocess.TimeoutExpired:
            os.killpg(tests.pid, signal.SIGKILL)
            log("gpu tests: stopped at the deadline")
        tail = (a.out / "gpu_tests.log").read_text().splitlines()[-15:]
        log("gpu tests (tail):\n" + "\n".join(tail))

    left = deadline - time.perf_counter()
    if left > 30 and a.device == "cuda" and "restore" in a.tasks:
        cmd = [sys.executable, "benchmarks/bench_restore.py", "--models", "default",
               "--sizes", "512", "1024", "--device", "cuda", "--no-onnx", "--repeat", "3"]  # fmt: skip
        try:
            res = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left - 10
            )
            print(res.stdout[-3000:], res.stderr[-1000:], flush=True)
        except subprocess.TimeoutExpired:
            log("bench_restore: stopped at the deadline")
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

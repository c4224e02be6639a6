"""One prepared GPU session: continue training the default model, time the paper's
networks, run the CUDA tests; everything back in at most 8 files of at most 16 MB.

A lent GPU machine gives a few minutes at a time, so this script does everything in one
call and finishes inside ``--budget`` seconds whatever happens. The steps (``--tasks``,
default ``tests steps train restore``):

* ``tests``: ``pytest -m gpu`` on ``tests/test_gpu.py`` and ``tests/models/test_bf16.py``
  (at most ``--tests-budget`` seconds; the tail goes into the report);
* ``steps``: ``benchmarks/bench_loop.py`` for RAM-SwinIR (batch 12 x 64x64, the paper's
  pretraining per GPU) and RAM-PromptIR (batch 4 x 128x128) at the paper's size, fp32
  and bf16: bare step it/s, whole-loop it/s, their ratio, data wait and host syncs per
  step (at most ``--steps-budget`` seconds);
* ``train``: **continues the default model's run** on the GPU for the time left: the
  fine-tuning stage of ``configs/default_model.yaml`` (its tasks, task weights and haze
  scenes, whole inputs, network in eval mode, EMA 0.995) from the shipped weights
  (``src/ramir/assets/default_model.safetensors``), in bf16, with the persistent data
  loader (``--workers`` processes), batch ``--batch`` of ``--patch`` crops, Adam ``--lr``
  with a cosine over ``--total-iter`` iterations: the schedule of the whole
  continuation, which several calls share. It stops at the last checkpoint
  (``--ckpt-every``) that fits the time, then evaluates the shipped and the continued
  weights (EMA) on the validation part of the evaluation photos (never the test part).
  Every layer trains: the shipped file does not record which half of the layers its MAC
  selection fine-tuned;
* ``restore``: the shipped model's restoration speed (``bench_restore``), with time left;
* ``scale`` (only when asked): ``benchmarks/bench_scale.py --part batch`` and the CUDA
  tests of batched restoration, first and alone on the GPU, for ``--scale-budget`` s.

What comes back under ``--out``: ``default_run.tgz.part-aa``, ``-ab``, ... (at most 15 MB
each: the run's newest checkpoint, i.e. the weights, their EMA and the optimiser state,
its config, ``log.jsonl``, curve and evaluation tables), ``report.md`` (what ran, the
figures, the test tails) and ``session.json`` (the same as data): at most 8 files.

**A second call continues where the first stopped**: put the files the first call brought
back in a folder of the working tree and pass it with ``--resume``; the run resumes from
its checkpoint exactly (same data order, RNG streams and schedule), e.g.::

    # on the device machine, from the repository root (here: carry runs/gpu_prev)
    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 560
    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 560 \
        --resume runs/gpu_prev
    PYTHONPATH=src python3 benchmarks/gpu_session.py --out "$OUT" --budget 300 --tasks scale
    # here: smoke-test the plumbing on CPU in about a minute
    python benchmarks/gpu_session.py --out /tmp/gs --budget 120 --device cpu --smoke
    python benchmarks/gpu_session.py --out /tmp/gs2 --budget 120 --device cpu --smoke \
        --resume /tmp/gs

Without the photo corpus (a lent GPU machine reaches no registry, and the prepared corpus
is too large to carry), training and evaluation use the photos that ship with the
installed packages (scikit-image, matplotlib, scikit-learn); the report says which.
Join the parts with ``cat default_run.tgz.part-* | tar -xz``; the continued weights are
``default_run/checkpoints/iter_*/model_ema.safetensors`` (``ramir restore --model``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BASE_RECIPE = ROOT / "configs" / "default_model.yaml"
SHIPPED = ROOT / "src" / "ramir" / "assets" / "default_model.safetensors"
TASKS = ("scale", "tests", "steps", "train", "restore")
DEFAULT_TASKS = ("tests", "steps", "train", "restore")
ARCHIVE = "default_run.tgz"
MAX_FILES, PART_MB = 8, 15
# the paper's per-GPU training batch of each network: (name, batch, crop)
PAPER_STEPS = (("ram_swinir", 12, 64), ("ram_promptir", 4, 128))


def log(msg: str) -> None:
    print(f"[gpu_session {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def corpus_ready() -> bool:
    """Whether the photo corpus's training and evaluation views are in the cache."""
    from ramir.corpus.manifest import CorpusError
    from ramir.corpus.views import view_files

    try:
        view_files("train")
        view_files("eval")
    except CorpusError:
        return False
    return True


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


class _TimeUp(Exception):
    """Raised by the training hook: stop after this checkpoint."""


# ----------------------------------------------------------------------------- train


def _unpack(source: Path, run: Path) -> None:
    """Put a previous call's run into ``run``: from ``default_run.tgz.part-*`` files (as
    they came back) or from an unpacked ``default_run`` folder."""
    parts = sorted(source.glob(f"{ARCHIVE}.part-*"))
    shutil.rmtree(run, ignore_errors=True)
    run.parent.mkdir(parents=True, exist_ok=True)
    if parts:
        joined = run.parent / ARCHIVE
        with open(joined, "wb") as f:
            for part in parts:
                f.write(part.read_bytes())
        with tarfile.open(joined, "r:gz") as tar:
            tar.extractall(run.parent, filter="data")
        joined.unlink()
        if not run.is_dir():
            raise SystemExit(f"{source}: the archive holds no {run.name}/ folder")
        return
    folder = source / run.name if (source / run.name).is_dir() else source
    if not (folder / "config.yaml").is_file():
        raise SystemExit(f"--resume {source}: neither {ARCHIVE}.part-* files nor a run folder")
    shutil.copytree(folder, run)


def _recipe(a: argparse.Namespace, run: Path) -> tuple[Any, Any]:
    """The continuation's training config and the demo config it comes from."""
    from ramir.config import from_dict
    from ramir.demo.config import load_demo_config
    from ramir.demo.data import demo_data_config
    from ramir.demo.stages import training_dict
    from ramir.training.config import TrainingConfig

    over = [f"device={a.device}", f"out_dir={run}"]
    if "corpus" not in a.photos or not corpus_ready():
        # A lent GPU machine reaches no registry and the prepared corpus is too large to
        # carry: train and evaluate on the photos that ship with the installed packages.
        log("photo corpus not here: training on the bundled photos (skimage, matplotlib, "
            "sklearn), evaluating on scikit-image's held-out photos")  # fmt: skip
        over += ["photo_sources=[skimage,matplotlib,sklearn]", "eval_photos=skimage"]
    if a.smoke:
        over += ["eval_crop=64"]
    over += a.set
    dcfg = load_demo_config(BASE_RECIPE, over)
    raw = training_dict(dcfg, demo_data_config(dcfg, run), "finetune")
    init = a.init if a.init is not None else SHIPPED
    raw["model"]["init"] = str(init)
    raw["model"]["init_weights"] = "model"
    if a.init is not None:  # e.g. a widened copy of the shipped model (ramir widen)
        from ramir.checkpoint import read_metadata

        meta = read_metadata(init)
        raw["model"]["name"] = meta["arch"]
        raw["model"]["args"] = dict(meta["arch_kwargs"])
    raw["data"]["patch_size"] = a.patch
    raw["data"]["degrade_on"] = a.degrade_on
    raw["train"].update(
        total_iter=a.total_iter, batch_size=a.batch, precision=a.precision,
        num_workers=a.workers, device=a.device, loss=a.loss,
    )  # fmt: skip
    raw["optim"]["lr"] = a.lr
    raw["schedule"] = {"type": "cosine", "warmup_iter": a.warmup, "eta_min": a.lr * 0.05}
    raw["logging"].update(log_every=10 if a.smoke else 50, progress=False)
    raw["checkpoint"] = {"every": a.ckpt_every, "keep_last": 1}
    return from_dict(TrainingConfig, raw, "<gpu_session continuation>"), dcfg


def continue_default(a: argparse.Namespace, run: Path, deadline: float) -> dict[str, Any]:
    """Train the continuation until the last checkpoint that fits before ``deadline``
    (or ``--stop-after`` iterations, or its end); return what happened."""
    from ramir.checkpoint import latest_checkpoint
    from ramir.training import train
    from ramir.training.config import load_training_config

    if a.resume is not None:
        _unpack(a.resume, run)
    resumed = latest_checkpoint(run) if run.is_dir() else None
    if resumed is not None:
        cfg = load_training_config(run / "config.yaml")
        log(f"continuing {run.name} from {resumed.name} (its own config)")
    else:
        shutil.rmtree(run, ignore_errors=True)
        cfg, _ = _recipe(a, run)
        log(f"starting the continuation from {Path(cfg.model.init).name}: {cfg.train.total_iter} "
            f"iterations planned, batch {cfg.train.batch_size} x {cfg.data.patch_size}, "
            f"{cfg.train.precision}")  # fmt: skip
    every = cfg.checkpoint.every
    first: dict[str, float] = {}

    def on_step(iteration: int) -> None:
        now = time.perf_counter()
        if not first:
            first.update(iter=iteration, t=now)
            return
        done = iteration - first["iter"]
        if iteration % every == 0:
            speed = done / max(now - first["t"], 1e-9)
            if now + 1.15 * every / speed > deadline:
                raise _TimeUp(iteration)
            if a.stop_after and done + 1 >= a.stop_after:
                raise _TimeUp(iteration)
        elif now > deadline + 20:  # a slow step: stop, the newest checkpoint stays
            raise _TimeUp(iteration)

    start_iter = int(resumed.name.split("_")[-1]) if resumed is not None else 0
    t = time.perf_counter()
    try:
        train(cfg, run, on_step=on_step)
        stopped = "the end of the planned iterations"
    except _TimeUp as e:
        stopped = f"the time limit, after checkpoint {e.args[0]}"
    seconds = time.perf_counter() - t
    newest = latest_checkpoint(run)
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x]
    steps = [r for r in records if r.get("kind") == "train"]
    mine = [r for r in steps if r["iter"] > start_iter]
    info = {
        "from": resumed.name if resumed is not None else Path(cfg.model.init).name,
        "start_iter": start_iter,
        "reached": int(newest.name.split("_")[-1]) if newest is not None else start_iter,
        "total_iter": cfg.train.total_iter,
        "stopped_at": stopped,
        "seconds": seconds,
        "it_per_s": _median([r["it_per_s"] for r in mine[len(mine) // 2 :]]),
        "data_ms": _median([r.get("data_ms", 0.0) for r in mine[len(mine) // 2 :]]),
        "loss_first": mine[0]["loss"] if mine else None,
        "loss_last": mine[-1]["loss"] if mine else None,
        "batch": cfg.train.batch_size,
        "patch": cfg.data.patch_size,
        "precision": cfg.train.precision,
        "checkpoint": str(newest.relative_to(run)) if newest is not None else None,
    }
    log(f"trained {info['start_iter']} -> {info['reached']} of {info['total_iter']} in "
        f"{seconds:.0f} s ({info['it_per_s']:.1f} it/s, {info['data_ms']:.1f} ms/step waiting "
        f"for data); stopped at {stopped}")  # fmt: skip
    return info


def _median(values: list[float]) -> float:
    values = sorted(v for v in values if v is not None)
    return float(values[len(values) // 2]) if values else float("nan")


def validation_part(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its photo-corpus evaluation sets restricted to the validation part:
    the part that chooses (the test part is only reported, with
    ``python -m ramir.evaluation.protocol``). Other test sets (the bundled photos of a
    machine without the corpus) are left as they are."""
    tests = []
    for d in data.get("test", []):
        opts = dict(d.get("options") or {})
        if d.get("layout") == "photo_corpus" and opts.get("view") in ("eval", "eval_native"):
            opts["part"] = "val"
        tests.append({**d, "options": opts})
    return {**data, "test": tests}


def evaluate_run(a: argparse.Namespace, run: Path) -> str:
    """Markdown table: the shipped and the continued weights on the validation photos."""
    from ramir.checkpoint import resolve_weights_path
    from ramir.config import from_dict, to_dict
    from ramir.demo.config import DemoConfig
    from ramir.demo.stages import evaluate_models
    from ramir.training.config import load_training_config

    cfg = load_training_config(run / "config.yaml")
    data = validation_part(to_dict(cfg.data))
    weights = resolve_weights_path(run, "ema")
    dcfg = from_dict(DemoConfig, {"device": a.device}, "<gpu_session eval>")
    result = evaluate_models(dcfg, data, {"shipped": SHIPPED, "continued": weights}, run / "eval")
    return result.tables[0].to_markdown()


def pack(run: Path, out: Path) -> list[Path]:
    """The run's config, log, curve, evaluation and newest checkpoint in
    ``out/default_run.tgz.part-*`` (at most ``PART_MB`` MB each)."""
    from ramir.checkpoint import latest_checkpoint

    archive = run.parent / ARCHIVE
    newest = latest_checkpoint(run)
    with tarfile.open(archive, "w:gz") as tar:
        for rel in ("config.yaml", "log.jsonl", "training_curve.png"):
            if (run / rel).is_file():
                tar.add(run / rel, arcname=f"{run.name}/{rel}")
        for f in sorted((run / "eval").glob("*")) if (run / "eval").is_dir() else []:
            if f.is_file() and f.suffix in (".md", ".json", ".csv"):
                tar.add(f, arcname=f"{run.name}/eval/{f.name}")
        if newest is not None:
            tar.add(newest, arcname=f"{run.name}/{newest.relative_to(run)}")
    data, parts = archive.read_bytes(), []
    size = PART_MB * 2**20
    for old in out.glob(f"{ARCHIVE}.part-*"):
        old.unlink()
    for i in range(0, len(data), size):
        k = i // size
        part = out / f"{ARCHIVE}.part-{chr(97 + k // 26)}{chr(97 + k % 26)}"
        part.write_bytes(data[i : i + size])
        parts.append(part)
    archive.unlink()
    return parts


# ----------------------------------------------------------------------------- steps, tests


def run_steps(a: argparse.Namespace, env: dict[str, str], budget: float) -> list[str]:
    """``bench_loop.py`` rows for the paper's networks, fp32 and bf16, within ``budget``."""
    t0 = time.perf_counter()
    lines: list[str] = []
    plans = [("nafnet_w16", 2, 32)] if a.smoke else PAPER_STEPS
    precisions = ["fp32"] if a.smoke else ["fp32", "bf16"]
    for name, batch, crop in plans:
        for precision in precisions:
            left = budget - (time.perf_counter() - t0)
            if left < 20:
                lines.append(f"{name} {precision}: skipped (time)")
                continue
            cmd = [sys.executable, "benchmarks/bench_loop.py", "--models", name, "--device",
                   a.device, "--batch", str(batch), "--crop", str(crop), "--precision",
                   precision, "--repeats", "1", "--workers", str(a.workers if not a.smoke else 0),
                   "--iters", "10" if a.smoke else "40", "--warmup", "2" if a.smoke else "10",
                   "--segment", "5" if a.smoke else "10"]  # fmt: skip
            try:
                res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                     timeout=left)  # fmt: skip
                rows = [ln for ln in res.stdout.splitlines() if ln.startswith(name)]
                lines += [f"{precision} batch {batch} x {crop}: {ln}" for ln in rows]
                if res.returncode != 0 or not rows:
                    lines += [f"{name} {precision} failed:", *res.stderr.splitlines()[-6:]]
            except subprocess.TimeoutExpired:
                lines.append(f"{name} {precision}: stopped at the time limit")
    log("training steps:\n" + "\n".join(lines))
    return lines


def run_tests(a: argparse.Namespace, env: dict[str, str], budget: float) -> list[str]:
    """The CUDA tests (``-m gpu``), at most ``budget`` seconds; the tail of their output."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py",
           "tests/models/test_bf16.py", "-p", "no:cacheprovider"]  # fmt: skip
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=max(10.0, budget))  # fmt: skip
        tail = res.stdout.splitlines()[-15:]
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        tail = [*out.splitlines()[-10:], "(stopped at the time limit)"]
    log("gpu tests (tail):\n" + "\n".join(tail))
    return tail


def write_report(out: Path, session: dict[str, Any]) -> None:
    """``report.md`` and ``session.json`` under ``out``."""
    lines = [f"# GPU session {session['started']}", "", f"- {session['device']}", ""]
    tr = session.get("train")
    if tr:
        lines += [
            "## Default-model continuation", "",
            f"- from {tr['from']}: iterations {tr['start_iter']} -> {tr['reached']} of "
            f"{tr['total_iter']} (stopped at {tr['stopped_at']}), {tr['seconds']:.0f} s",
            f"- {tr['it_per_s']:.1f} it/s, batch {tr['batch']} x {tr['patch']}x{tr['patch']}, "
            f"{tr['precision']}; {tr['data_ms']:.1f} ms per step waiting for data",
            f"- loss {tr['loss_first']} -> {tr['loss_last']}",
            f"- weights: `default_run/{tr['checkpoint']}/model_ema.safetensors` in "
            f"`{ARCHIVE}.part-*`; continue with `--resume FOLDER_WITH_THE_PARTS`", "",
        ]  # fmt: skip
    if session.get("eval"):
        lines += [session["eval"].replace("## ", "### "), ""]
    for key, title in (("steps", "Training steps (bench_loop)"), ("tests", "CUDA tests"),
                       ("scale", "Scale"), ("restore", "Restoration speed")):  # fmt: skip
        if session.get(key):
            lines += [f"## {title}", "", "```", *session[key], "```", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "session.json").write_text(json.dumps(session, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the results (e.g. $OUT)")
    p.add_argument("--budget", type=float, default=560, help="seconds the whole script may take")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(DEFAULT_TASKS),
                   help="steps to run (default: tests steps train restore)")  # fmt: skip
    p.add_argument("--resume", type=Path, help="what a previous call brought back (a folder)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--patch", type=int, default=64, help="training crop (the recipe's: 64)")
    p.add_argument("--workers", type=int, default=8, help="data-loader worker processes")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32", "auto"])
    p.add_argument("--degrade-on", default="cpu", choices=["cpu", "device"],
                   help="data.degrade_on: degrade in the workers (NumPy) or batched on the GPU")  # fmt: skip
    p.add_argument("--init", type=Path, default=None,
                   help="weights a new continuation starts from (default: the shipped model; "
                   "e.g. its widened copy from ramir widen); its architecture is read from it")  # fmt: skip
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=500, help="warm-up iterations")
    p.add_argument("--total-iter", type=int, default=60000,
                   help="iterations of the whole continuation (its cosine)")  # fmt: skip
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--loss", choices=["l1", "psnr"], default="l1",
                   help="train.loss of a new continuation (psnr: NAFNet's PSNR loss)")  # fmt: skip
    p.add_argument("--stop-after", type=int, default=0,
                   help="train at most this many iterations in this call (0: the time)")  # fmt: skip
    p.add_argument("--photos", nargs="+", default=["corpus"],
                   help="'corpus' when the photo corpus is prepared here, else bundled photos")  # fmt: skip
    p.add_argument("--reserve", type=float, default=75,
                   help="seconds kept after training (evaluation, packing)")  # fmt: skip
    p.add_argument("--tests-budget", type=float, default=100)
    p.add_argument("--steps-budget", type=float, default=150)
    p.add_argument("--scale-budget", type=float, default=240)
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "gpu_session")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of configs/default_model.yaml for a new continuation "
                   "(e.g. finetune_task_weights={noise: 3}); a resumed run keeps its config")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="tiny batches and iterations (plumbing)")
    a = p.parse_args(argv)
    if a.smoke:
        a.batch, a.patch, a.workers = min(a.batch, 4), min(a.patch, 32), min(a.workers, 1)
        a.total_iter, a.ckpt_every, a.warmup = min(a.total_iter, 40), min(a.ckpt_every, 10), 2
        a.precision = "fp32" if a.device == "cpu" else a.precision

    t0 = time.perf_counter()
    deadline = t0 + a.budget
    a.out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    device = (f"torch {torch.__version__}, {os.cpu_count()} CPUs, device {a.device}"
              + (f" ({torch.cuda.get_device_name()})" if a.device == "cuda" else ""))  # fmt: skip
    log(device)
    session: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": device,
                               "args": {k: str(v) for k, v in vars(a).items()}}  # fmt: skip

    def left() -> float:
        return deadline - time.perf_counter()

    if "scale" in a.tasks:
        run_scale(a, env, min(a.scale_budget, left() - 5))
        session["scale"] = (a.out / "scale.log").read_text().splitlines()
        (a.out / "scale.log").unlink()
    if "tests" in a.tasks and a.device == "cuda":
        session["tests"] = run_tests(a, env, min(a.tests_budget, left() - 30))
    if "steps" in a.tasks:
        session["steps"] = run_steps(a, env, min(a.steps_budget, left() - 30))
    run = a.runs / "default_run"
    if "train" in a.tasks:
        try:
            session["train"] = continue_default(a, run, deadline - a.reserve)
            session["eval"] = evaluate_run(a, run)
        finally:  # whatever happened, bring back what there is
            if run.is_dir():
                parts = pack(run, a.out)
                session["parts"] = [q.name for q in parts]
                log(f"packed {', '.join(q.name for q in parts)} "
                    f"({sum(q.stat().st_size for q in parts) / 2**20:.1f} MB)")  # fmt: skip
            write_report(a.out, session)
    if left() > 30 and a.device == "cuda" and "restore" in a.tasks:
        cmd = [sys.executable, "benchmarks/bench_restore.py", "--models", "default",
               "--sizes", "512", "1024", "--device", "cuda", "--no-onnx", "--repeat", "3"]  # fmt: skip
        try:
            res = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=left() - 10
            )
            session["restore"] = res.stdout.splitlines()[-20:] + res.stderr.splitlines()[-5:]
            log("restore:\n" + "\n".join(session["restore"]))
        except subprocess.TimeoutExpired:
            session["restore"] = ["bench_restore: stopped at the deadline"]
    write_report(a.out, session)
    files = [f for f in a.out.iterdir() if f.is_file()]
    big = [f.name for f in files if f.stat().st_size > 16 * 2**20]
    if len(files) > MAX_FILES or big:
        log(f"warning: {len(files)} files under {a.out}, over 16 MB: {big or 'none'}")
    log(f"done in {time.perf_counter() - t0:.0f} s: {', '.join(sorted(f.name for f in files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

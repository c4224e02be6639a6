"""The whole training loop against the bare model step, on real photos.

For each backbone this compares, in one fresh process, on the same model size, batch,
crop and optimiser:

* ``bare``: forward, masked L1, backward and the optimiser step on batches already on the
  device (made from the same photo mixture beforehand); nothing else;
* ``loop``: :func:`ramir.training.train` itself on the photo mixture of
  ``configs/data/synthetic7.yaml`` (the seven degradations + identity on the photos that
  ship with scikit-image, cropped and degraded on the fly): data loading, the schedule,
  masks, loss accounting, logging every ``--log-every`` steps; no EMA, progress bar,
  TensorBoard or checkpoint inside the timed steps.

The two alternate in segments of ``--segment`` steps (the loop's ``on_step`` hook runs
the bare segment), so a shared machine whose speed changes from second to second slows
both alike; the loop's data-loader workers are paused (SIGSTOP) during a bare segment,
so they neither slow it down nor prepare the loop's batches meanwhile. It prints it/s of
both, the ratio ``loop / bare`` and the milliseconds per step the loop waited for data
(``data_ms`` of its log; "n/a" for a ramir that does not log it). The goal is a ratio of
at least 0.85 on a CPU and 0.9 on a GPU. ``--repeats`` runs each setting that many times
(fresh processes): the median ratio and the best speeds are printed.

The mixture's epoch is as short as the demo's (``n_tasks x photos`` samples) unless
``--epoch-length`` says otherwise, so a loader that restarts its workers every epoch
shows it. On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` is on during the loop's
timed steps and the benchmark counts the host synchronisations it reports, apart from
the logging steps (which read the loss on purpose).

``--compile`` sets ``train.compile`` for the loop and compiles the bare step's network
the same way (``torch.compile(net)``), so the ratio compares like with like.
``--compile-vs-eager`` measures what ``train.compile`` buys instead: in one fresh process
per model (with an empty TorchInductor cache, so the compilation is a cold one) it times
the first step of the compiled network (the compilation plus one step) and then the bare
step eager and compiled in alternating segments after ``--warmup`` steps of each, and
prints the compile seconds, the steady-state it/s of both and their ratio.

Examples::

    python benchmarks/bench_loop.py                         # NAFNet w16/w32, CPU, 2 threads
    python benchmarks/bench_loop.py --compile-vs-eager --models nafnet_w16 --threads 1
    python benchmarks/bench_loop.py --models nafnet_w16 --workers 0 2 --repeats 5
    python benchmarks/bench_loop.py --device cuda --batch 32 --crop 128 --precision bf16 \\
        --models nafnet_w16 nafnet_w32 nafnet_w64 ram_swinir ram_promptir
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "configs" / "data" / "synthetic7.yaml"

_W16 = {"middle_blk_num": 2, "enc_blk_nums": [1, 1, 2, 4], "dec_blk_nums": [1, 1, 1, 1]}
# name: (architecture, constructor arguments); RAM's backbones at the paper's size
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "nafnet_w16": ("nafnet", {"width": 16, **_W16}),
    "nafnet_w32": ("nafnet", {"width": 32, **_W16}),
    "nafnet_w64": ("nafnet", {"width": 64, **_W16}),
    "ram_swinir": ("ram_swinir", {}),
    "ram_promptir": ("ram_promptir", {}),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(a: argparse.Namespace, iters: int) -> Any:
    import yaml

    from ramir.config import from_dict
    from ramir.training import TrainingConfig

    arch, args = MODELS[a.one]
    data = yaml.safe_load(DATA.read_text())
    data["patch_size"] = a.crop
    data.pop("test", None)
    if a.degrade_on != "cpu":  # (a ramir before data.degrade_on refuses the key)
        data["degrade_on"] = a.degrade_on
    if a.epoch_length:
        data["epoch_length"] = a.epoch_length
    else:
        data.pop("epoch_length", None)  # the demo's: n_tasks x photos
    if arch == "ram_swinir":
        args = {**args, "img_size": a.crop}
    train: dict[str, Any] = {
        "total_iter": iters,
        "batch_size": a.batch,
        "input": a.input,
        "device": a.device,
        "precision": a.precision,
        "num_workers": a.workers,
        "seed": 0,
    }
    if a.compile:
        train["compile"] = True
    return from_dict(
        TrainingConfig,
        {
            "model": {"name": arch, "args": args},
            "data": data,
            "train": train,
            "optim": {"type": "Adam", "lr": 1e-4, "betas": [0.9, 0.99]},
            "logging": {
                "log_every": a.log_every,
                "tensorboard": False,
                "progress": False,
                "plot": False,
            },
            "checkpoint": {"every": 10**9, "keep_last": 1},
        },
        "<bench_loop>",
    )


class BareStep:
    """Forward, masked L1, backward and the optimiser step on batches on the device."""

    def __init__(
        self,
        a: argparse.Namespace,
        cfg: Any,
        batches: list[dict[str, Any]],
        compile: bool = False,
    ) -> None:
        from ramir.models import build_model
        from ramir.training.inputs import make_input_maker
        from ramir.training.optim import build_optimizer

        self.device = device = torch.device(a.device)
        torch.manual_seed(0)
        self.model = build_model(cfg.model.name, **cfg.model.args).to(device).train()
        # what train.compile does to the loop's network
        self.net = torch.compile(self.model) if compile else self.model
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = build_optimizer(params, cfg.optim)  # what the loop builds
        self.make_input = make_input_maker(cfg.train)
        norm = self.model.normalization
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.precision]
        self.data = [
            (norm.normalize(b["lq"].to(device)), norm.normalize(b["gt"].to(device)))
            for b in batches
        ]
        self.it = 0

    def run(self, steps: int) -> float:
        """Seconds of ``steps`` steps (synchronised before and after)."""
        from ramir.training.losses import l1_loss, masked_l1_loss

        _sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.it += 1
            lq, gt = self.data[self.it % len(self.data)]
            inp, target, mask = self.make_input(lq, gt, self.it, None)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                pred = self.net(inp, mask, check_finite=False)
            pred = pred.float()
            loss = masked_l1_loss(pred, target, mask) if mask is not None else l1_loss(pred, target)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start


def run_pair(a: argparse.Namespace, bare: BareStep) -> dict[str, Any]:
    """Loop and bare steps in alternating segments of ``--segment`` steps: the loop runs a
    segment of :func:`ramir.training.train`, its ``on_step`` hook then runs as many bare
    steps, and so on, so that a machine whose speed changes slows both alike. Returns
    it/s of each, the loop's data wait and (CUDA) the syncs inside its timed steps."""
    from ramir.training import train
    from ramir.training.runlog import read_log

    device = torch.device(a.device)
    seg, n = a.segment, max(1, a.iters // a.segment)
    first, last = a.warmup, a.warmup + n * seg
    cfg = _config(a, last + 1)  # the last iteration writes the final checkpoint: untimed
    times = {"loop": 0.0, "bare": 0.0, "start": 0.0}
    where = {"iter": 0}
    syncs: list[tuple[int, str]] = []
    sync_check = device.type == "cuda" and hasattr(torch.cuda, "set_sync_debug_mode")

    def on_step(iteration: int) -> None:
        where["iter"] = iteration + 1  # what runs next belongs to the next iteration
        if iteration < first or iteration > last or (iteration - first) % seg:
            return
        if sync_check:
            torch.cuda.set_sync_debug_mode(0)
        _sync(device)
        now = time.perf_counter()
        if iteration > first:
            times["loop"] += now - times["start"]
        if iteration < last:
            workers = multiprocessing.active_children()  # the loader's worker processes
            for w in workers:  # paused: neither competing with nor working for the loop
                os.kill(w.pid, signal.SIGSTOP)  # type: ignore[arg-type]
            try:
                times["bare"] += bare.run(seg)
            finally:
                for w in workers:
                    os.kill(w.pid, signal.SIGCONT)  # type: ignore[arg-type]
        times["start"] = time.perf_counter()
        if sync_check and iteration < last:
            torch.cuda.set_sync_debug_mode("warn")

    def record(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if "synchroniz" in str(message):
            syncs.append((where["iter"], str(message).splitlines()[0][:120]))

    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record  # type: ignore[assignment]
        train(cfg, out, on_step=on_step)
        records = [r for r in read_log(out) if r.get("kind") == "train"]
    timed = [r for r in records if first < r["iter"] <= last]
    data_ms = [r["data_ms"] for r in timed if "data_ms" in r]
    log_iters = {r["iter"] for r in records}
    loop_its, bare_its = n * seg / times["loop"], n * seg / times["bare"]
    return {
        "it_per_s": loop_its,
        "bare": bare_its,
        "ratio": loop_its / bare_its,
        "data_ms": statistics.mean(data_ms) if data_ms else None,
        "syncs_in_steps": sum(1 for i, _ in syncs if i not in log_iters) if sync_check else None,
        "syncs_at_log_steps": sum(1 for i, _ in syncs if i in log_iters) if sync_check else None,
        "sync_examples": sorted({m for _, m in syncs})[:3],
    }


def _child(a: argparse.Namespace) -> None:
    if a.threads:
        torch.set_num_threads(a.threads)
    from ramir.data import build_mixture

    cfg = _config(a, 2)
    ds = build_mixture(cfg.data)
    batches = []
    for k in range(4):  # real crops of the mixture, collated once
        items = [ds.sample(k * a.batch + i, 0) for i in range(a.batch)]
        batches.append({key: torch.stack([it[key] for it in items]) for key in ("lq", "gt")})
    del ds
    if a.compile_vs_eager:
        print("RESULT " + json.dumps(compile_vs_eager(a, cfg, batches)), flush=True)
        return
    bare = BareStep(a, cfg, batches, compile=a.compile)
    bare.run(a.warmup)
    print("RESULT " + json.dumps(run_pair(a, bare)), flush=True)


def _compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled in this process so far (0 where torch does not say)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"].get("unique_graphs", 0))


def compile_vs_eager(a: argparse.Namespace, cfg: Any, batches: list[dict[str, Any]]) -> dict:
    """The bare step eager and compiled (same weights and batches): the first compiled
    step's seconds (compilation included), then it/s of each in alternating segments."""
    eager = BareStep(a, cfg, batches)
    eager.run(1)
    compiled = BareStep(a, cfg, batches, compile=True)
    first = compiled.run(1)  # compiles (and recompiles, if a later step needs it, below)
    compiled.run(a.warmup)
    eager.run(a.warmup)
    seg, n = a.segment, max(1, a.iters // a.segment)
    times = {"eager": 0.0, "compiled": 0.0}
    graphs = _compiled_graphs()
    for _ in range(n):
        times["eager"] += eager.run(seg)
        times["compiled"] += compiled.run(seg)
    eager_its, compiled_its = n * seg / times["eager"], n * seg / times["compiled"]
    return {
        "graphs_compiled_in_timed_steps": _compiled_graphs() - graphs,
        "first_compiled_step_s": first,
        "eager_step_s": times["eager"] / (n * seg),
        "compile_s": first - times["compiled"] / (n * seg),
        "eager_it_per_s": eager_its,
        "compiled_it_per_s": compiled_its,
        "ratio": compiled_its / eager_its,
    }


def _measure(a: argparse.Namespace, name: str, workers: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", name, "--workers", str(workers)]
    for key in ("device", "batch", "crop", "iters", "warmup", "log_every", "threads",
                "precision", "input", "epoch_length", "segment", "degrade_on"):  # fmt: skip
        cmd += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    if a.compile:
        cmd.append("--compile")
    if a.compile_vs_eager:
        cmd.append("--compile-vs-eager")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    with tempfile.TemporaryDirectory() as cache:  # every process compiles from scratch
        env["TORCHINDUCTOR_CACHE_DIR"] = cache
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--models", nargs="+", default=["nafnet_w16", "nafnet_w32"], choices=list(MODELS)
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=0, help="per step (0: 8 on CPU, 32 on CUDA)")
    p.add_argument("--crop", type=int, default=0, help="patch size (0: 64 on CPU, 128 on CUDA)")
    p.add_argument("--workers", type=int, nargs="+", default=None,
                   help="train.num_workers values to compare (default: 0 on CPU, 6 on CUDA)")  # fmt: skip
    p.add_argument("--iters", type=int, default=0, help="timed steps of each (0: 60 CPU, 200 CUDA)")
    p.add_argument("--warmup", type=int, default=0, help="untimed first steps (0: 5 / 30)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--segment", type=int, default=5,
                   help="loop and bare steps alternate in segments of this many steps")  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: default)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--input", default="masked", choices=["masked", "whole"])
    p.add_argument("--epoch-length", type=int, default=0, help="0: the demo's short epochs")
    p.add_argument("--compile", action="store_true", help="train.compile (torch.compile)")
    p.add_argument("--compile-vs-eager", action="store_true",
                   help="bare step compiled vs eager: compile seconds, steady it/s (see above)")  # fmt: skip
    p.add_argument("--degrade-on", default="cpu", choices=["cpu", "device"],
                   help="data.degrade_on: in the workers, or batched on the device")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per setting")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    gpu = a.device.startswith("cuda")
    a.batch = a.batch or (32 if gpu else 8)
    a.crop = a.crop or (128 if gpu else 64)
    a.iters = a.iters or (200 if gpu else 60)
    a.warmup = a.warmup or (30 if gpu else 5)
    if a.one:
        a.workers = a.workers[0] if isinstance(a.workers, list) else a.workers
        _child(a)
        return
    workers = a.workers if a.workers is not None else ([6] if gpu else [0])
    if a.compile_vs_eager:
        compare_compile(a, gpu)
        return
    goal = 0.9 if gpu else 0.85
    print(
        f"device {a.device}" + (f" ({torch.cuda.get_device_name()})" if gpu else "")
        + f", torch {torch.__version__}, {os.cpu_count()} CPUs, threads {a.threads or 'default'}, "
        f"batch {a.batch} x {a.crop}x{a.crop}, {a.precision}, {a.input} input, "
        f"{a.iters} timed steps, {a.repeats} runs each (median ratio, best it/s); "
        f"goal: loop >= {goal} x bare",
        flush=True,
    )  # fmt: skip
    header = (
        f"{'model':<13} {'workers':>7} {'bare it/s':>9} {'loop it/s':>9} {'ratio':>6} "
        f"{'(runs)':<20} {'data ms/step':>12}" + (f" {'syncs/step':>10}" if gpu else "")
    )
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for name in a.models:
        for w in workers:
            runs = [_measure(a, name, w) for _ in range(a.repeats)]
            ratios = [r["ratio"] for r in runs]
            data = [r["data_ms"] for r in runs if r["data_ms"] is not None]
            row = {
                "model": name,
                "workers": w,
                "bare_it_per_s": max(r["bare"] for r in runs),
                "loop_it_per_s": max(r["it_per_s"] for r in runs),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
                "data_ms": statistics.median(data) if data else None,
                "syncs_in_steps": runs[-1]["syncs_in_steps"],
                "sync_examples": runs[-1]["sync_examples"],
            }
            rows.append(row)
            shown = " ".join(f"{r:.2f}" for r in ratios)
            data_txt = f"{row['data_ms']:.1f}" if row["data_ms"] is not None else "n/a"
            line = (
                f"{name:<13} {w:>7} {row['bare_it_per_s']:>9.2f} {row['loop_it_per_s']:>9.2f} "
                f"{row['ratio']:>6.2f} {'(' + shown + ')':<20} {data_txt:>12}"
            )
            if gpu:
                n = row["syncs_in_steps"]
                line += f" {n / a.iters if n is not None else float('nan'):>10.2f}"
            print(line, flush=True)
            if gpu and row["sync_examples"]:
                print(f"{'':<13} syncs seen: {'; '.join(row['sync_examples'])}", flush=True)
    if a.json:
        a.json.write_text(
            json.dumps({"args": vars(a) | {"json": str(a.json)}, "rows": rows}, indent=2)
        )


def compare_compile(a: argparse.Namespace, gpu: bool) -> None:
    """``--compile-vs-eager``: a fresh process (cold compile) per model and repeat."""
    print(
        f"device {a.device}" + (f" ({torch.cuda.get_device_name()})" if gpu else "")
        + f", torch {torch.__version__}, {os.cpu_count()} CPUs, threads {a.threads or 'default'}, "
        f"batch {a.batch} x {a.crop}x{a.crop}, {a.precision}, {a.input} input; bare step "
        f"eager vs torch.compile (train.compile): {a.warmup} warm-up steps each, then "
        f"{a.iters} timed steps each in alternating segments of {a.segment}; {a.repeats} "
        "fresh processes (median)",
        flush=True,
    )  # fmt: skip
    header = (
        f"{'model':<13} {'compile s':>9} {'eager it/s':>10} {'compiled it/s':>13} "
        f"{'ratio':>6} {'(runs)':<20}"
    )
    print(header)
    print("-" * len(header), flush=True)
    rows = []
    for name in a.models:
        runs = [_measure(a, name, 0) for _ in range(a.repeats)]
        row = {
            "model": name,
            "compile_s": statistics.median(r["compile_s"] for r in runs),
            "eager_it_per_s": statistics.median(r["eager_it_per_s"] for r in runs),
            "compiled_it_per_s": statistics.median(r["compiled_it_per_s"] for r in runs),
            "ratio": statistics.median(r["ratio"] for r in runs),
            "runs": runs,
        }
        rows.append(row)
        shown = " ".join(f"{r['ratio']:.2f}" for r in runs)
        print(
            f"{name:<13} {row['compile_s']:>9.1f} {row['eager_it_per_s']:>10.2f} "
            f"{row['compiled_it_per_s']:>13.2f} {row['ratio']:>6.2f} {'(' + shown + ')':<20}",
            flush=True,
        )
        late = sum(r.get("graphs_compiled_in_timed_steps", 0) for r in runs)
        if late:
            print(f"{'':<13} {late} graph(s) compiled during the timed steps", flush=True)
    if a.json:
        a.json.write_text(
            json.dumps({"args": vars(a) | {"json": str(a.json)}, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()

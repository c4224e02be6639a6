"""Restoration speed and memory: PyTorch vs ONNX Runtime, whole images and tiled.

For each backbone (default: all registered, at their default = paper size) and each image
size (default 512x512 and 1024x1024 whole, 4000x3000 tiled) this restores a random image
with :func:`ramir.restore` and, unless ``--no-onnx``, with the model exported by
:func:`ramir.inference.export.export_onnx` run in ONNX Runtime (tiled the same way through
:func:`ramir.inference.tiling.tiled_apply`). Every case runs in a fresh process, so the reported
peak memory (``VmHWM`` of that process on Linux; on CUDA, ``max_memory_allocated``) belongs to
that case alone; "warm MB" is the resident memory after loading the model and one warm-up
run at the timed shape (one tile when tiled), "peak MB" the process's high-water mark.

A size ``HxW`` is restored whole; ``HxWt`` (e.g. ``4000x3000t``) with ``--tile`` tiles.

Examples::

    python benchmarks/bench_restore.py                              # everything (slow on CPU)
    python benchmarks/bench_restore.py --models nafnet --sizes 512 1024 4000x3000t
    python benchmarks/bench_restore.py --tiny --sizes 256 1024x768t --repeat 2
    python benchmarks/bench_restore.py --models default --repeat 3  # the shipped model
    python benchmarks/bench_restore.py --json bench_restore.json

``--tiny`` uses the small test-size backbones (like the reference vectors' tiny models)
instead of the paper-size ones: for smoke runs. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# --tiny: the named sizes of ramir.models (ramir.models.list_variants())
TINY_NAMES: dict[str, str] = {
    "ram_swinir": "ram_swinir_tiny",
    "ram_promptir": "ram_promptir_tiny",
    "nafnet": "nafnet_tiny",
}


def parse_size(text: str) -> tuple[int, int, bool]:
    """``"512"`` -> (512, 512, False); ``"4000x3000t"`` -> (3000, 4000, True) as (H, W)."""
    tiled = text.endswith("t")
    body = text[:-1] if tiled else text
    if "x" in body:
        w, h = (int(v) for v in body.split("x"))
    else:
        w = h = int(body)
    return h, w, tiled


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_now_mb() -> float:
    """Resident memory of this process now (Linux), else its peak."""
    now = _proc_status_mb("VmRSS")
    return now if now is not None else rss_peak_mb()


def rss_peak_mb() -> float:
    """Peak resident memory of this process. ``VmHWM`` on Linux: unlike ``ru_maxrss`` it is
    not inherited from the parent across fork/exec."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB else
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def build(name: str, tiny: bool) -> torch.nn.Module:
    from ramir.models import build_model

    if name == "default":  # the model shipped with ramir (ramir restore with no --model)
        from ramir.checkpoint import load_model
        from ramir.inference.restore import default_model_path

        return load_model(default_model_path()).eval()
    torch.manual_seed(0)
    return build_model(TINY_NAMES.get(name, name) if tiny else name).eval()


def _case(job: dict[str, Any]) -> dict[str, Any]:
    """One (model, size, engine) measurement, run in its own process."""
    torch.set_num_threads(job["threads"])
    from ramir.inference.restore import restore_tensor
    from ramir.inference.tiling import tiled_apply

    h, w, tiled = job["h"], job["w"], job["tiled"]
    tile = job["tile"] if tiled else None
    device = torch.device(job["device"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, h, w, generator=g)
    # Warm up at the shape that will be timed (one tile when tiled), so one-off costs
    # (oneDNN primitive creation, ORT shape inference) are not timed.
    warm = x if tile is None else x[..., : min(tile, h), : min(tile, w)]
    if job["engine"] == "torch":
        model = build(job["model"], job["tiny"]).to(device)

        def run(inp: torch.Tensor) -> torch.Tensor:
            return restore_tensor(
                model, inp, tile=tile, tile_overlap=job["overlap"], device=device, half=job["half"]
            )

    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = job["threads"]
        sess = ort.InferenceSession(job["onnx"], opts, providers=["CPUExecutionProvider"])

        def run_np(inp: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(sess.run(None, {"image": inp.numpy()})[0])

        def run(inp: torch.Tensor) -> torch.Tensor:
            if tile is None:
                return run_np(inp)
            return tiled_apply(run_np, inp, tile, job["overlap"])

    run(warm)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    model_mb = rss_now_mb()
    times = []
    for _ in range(job["repeat"]):
        t0 = time.perf_counter()
        out = run(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    assert out.shape == x.shape
    res = {
        "seconds": min(times),
        "seconds_all": times,
        "rss_model_mb": model_mb,
        "rss_peak_mb": rss_peak_mb(),
    }
    if device.type == "cuda":
        res["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_case, (job,))


def main(argv: list[str] | None = None) -> int:
    from ramir.models import count_parameters, list_models

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models",
        nargs="+",
        default=None,
        help=f"default: {' '.join(list_models(restoring=True))}; 'default' = the shipped model",
    )
    p.add_argument("--sizes", nargs="+", default=["512", "1024", "4000x3000t"])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--tile-overlap", type=int, default=32)
    p.add_argument("--repeat", type=int, default=1, help="timed runs per case (best is shown)")
    p.add_argument("--tiny", action="store_true", help="small test-size backbones")
    p.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    p.add_argument("--device", default="cpu", help="PyTorch device (ONNX Runtime runs on CPU)")
    p.add_argument("--half", action="store_true", help="float16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    models = args.models or list_models(restoring=True)
    sizes = [parse_size(s) for s in args.sizes]
    print(
        f"# bench_restore: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} threads, device {args.device}, "
        f"{'tiny' if args.tiny else 'paper-size'} models, tile {args.tile}/{args.tile_overlap}"
    )
    header = (
        f"{'model':<13} {'params':>10} {'size':>11} {'engine':>6} {'seconds':>9} "
        f"{'MP/s':>7} {'warm MB':>9} {'peak MB':>8} {'vs torch':>8}"
    )
    print(header)
    print("-" * len(header))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = build(name, args.tiny)
            n_params = count_parameters(model)
            onnx_path = None
            if not args.no_onnx:
                from ramir.inference.export import export_onnx

                onnx_path = str(Path(tmp) / f"{name}.onnx")
                export_onnx(model, onnx_path, check=False)
            del model
            for h, w, tiled in sizes:
                engines = ["torch"] + (["onnx"] if onnx_path else [])
                base = None
                for engine in engines:
                    job = dict(
                        model=name, tiny=args.tiny, h=h, w=w, tiled=tiled, tile=args.tile,
                        overlap=args.tile_overlap, engine=engine, onnx=onnx_path,
                        device=args.device if engine == "torch" else "cpu", half=args.half,
                        threads=args.threads, repeat=args.repeat,
                    )  # fmt: skip
                    res = run_case(job)
                    base = res["seconds"] if engine == "torch" else base
                    ratio = f"{base / res['seconds']:.2f}x" if base and engine == "onnx" else ""
                    size = f"{w}x{h}{'t' if tiled else ''}"
                    peak = res.get("cuda_peak_mb", res["rss_peak_mb"])
                    print(
                        f"{name:<13} {n_params:>10,} {size:>11} {engine:>6} "
                        f"{res['seconds']:>9.3f} {h * w / 1e6 / res['seconds']:>7.3f} "
                        f"{res['rss_model_mb']:>9.0f} {peak:>8.0f} {ratio:>8}",
                        flush=True,
                    )
                    results.append({**job, **res, "params": n_params})
    print("(MP/s = megapixels per second; 'vs torch' = ONNX Runtime speed-up over PyTorch)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

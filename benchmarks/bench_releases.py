"""The field's released models in ramir vs their upstream code: forward time and agreement.

For each family (NAFNet-SIDD-width32, SwinIR-M colour denoising, Restormer, PromptIR, at
their released sizes, with seeded weights) this times the upstream forward (with the
upstream padding) and ``ramir``'s (the model ``ramir.load_model`` builds from the same
weights in the release format), on one image of ``--size``, and prints the max abs
difference of the outputs and the speed ratio. The upstream code is read from local
checkouts (``--repos``, see ``tests/models/make_official_vectors.py``; einops must be on
the path), nothing is downloaded.

    PYTHONPATH=/path/to/einops python benchmarks/bench_releases.py --repos /tmp/upstream
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "models"))

from make_official_vectors import pad_reflect_8, upstream_modules  # noqa: E402
from official_seeded import layout_of, seeded_parameters  # noqa: E402

RELEASES = {
    "NAFNet-SIDD-width32": ("nafnet", "NAFNet",
                            dict(img_channel=3, width=32, middle_blk_num=12,
                                 enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2]), False),
    "SwinIR-M colorDN": ("swinir", "SwinIR",
                         dict(upscale=1, in_chans=3, img_size=128, window_size=8, img_range=1.0,
                              depths=[6] * 6, embed_dim=180, num_heads=[6] * 6, mlp_ratio=2,
                              upsampler="", resi_connection="1conv"), False),
    "Restormer": ("restormer", "Restormer", dict(LayerNorm_type="WithBias"), True),
    "PromptIR": ("promptir", "PromptIR", dict(decoder=True), True),
}  # fmt: skip


def timed(fn, x: torch.Tensor, repeats: int) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        out = fn(x)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn(x)
            best = min(best, time.perf_counter() - t0)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=Path, required=True, help="upstream checkouts")
    parser.add_argument("--size", type=int, nargs=2, default=(120, 180), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--only", nargs="*", help="release names to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import ramir

    modules = upstream_modules(args.repos)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, *args.size, generator=g)
    print(f"# {args.threads} threads, torch {torch.__version__}, input 1x3x{args.size[0]}x"
          f"{args.size[1]} (needs padding), best of {args.repeats}")  # fmt: skip
    print(f"{'release':22} {'params':>11} {'upstream s':>11} {'ramir s':>9} {'speed-up':>9} "
          f"{'max |diff|':>11}")  # fmt: skip
    for name, (family, cls_name, kwargs, pad8) in RELEASES.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        upstream = getattr(modules[family], cls_name)(**kwargs).eval()
        layout = layout_of(upstream)
        params = seeded_parameters(layout, 1)
        upstream.load_state_dict(params, strict=False)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "release.pth"
            torch.save({"params": upstream.state_dict()}, path)
            ours = ramir.load_model(path)
        ref, t_up = timed((lambda m: lambda t: pad_reflect_8(m, t))(upstream) if pad8
                          else upstream, x, args.repeats)  # fmt: skip
        got, t_ours = timed(ours, x, args.repeats)
        n = sum(p.numel() for p in ours.parameters())
        diff = (got - ref).abs().max().item()
        print(f"{name:22} {n:>11,} {t_up:>11.3f} {t_ours:>9.3f} {t_up / t_ours:>8.2f}x "
              f"{diff:>11.2e}")  # fmt: skip


if __name__ == "__main__":
    main()

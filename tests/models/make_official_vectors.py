"""Record the official-release test vectors with the upstream code (run by hand, not CI).

For each case this builds a small model with the *upstream* architecture code, fills its
parameters with :func:`official_seeded.seeded_parameters`, runs the upstream forward on
a crop of a scikit-image photo (with the upstream test scripts' padding where the
network itself does not pad) and writes ``tests/data/official/<case>.npz``: the
state-dict layout, the constructor arguments, the release format the test must write,
the input and the output. The tests then rebuild the same weights, save them in the
release format, load them with ``ramir.load_model`` and compare.

Upstream code used (snapshots; pass the folders with ``--repos``)::

    megvii-research/NAFNet  2b4af71ebe098a92a75910c233a3965a3e93ede4
        basicsr/models/archs/{NAFNet_arch,local_arch,arch_util}.py
    JingyunLiang/SwinIR     6545850fbf8df298df73d81f3e8cba638787c8bd
        models/network_swinir.py
    swz30/Restormer         df766d5521afd21cce56e24159f300b30ebf3fb0
        basicsr/models/archs/restormer_arch.py
    va1shn9v/PromptIR       106159ab809101f2e25b6714195cd6fa9a938d36
        net/model.py

Needs ``einops`` (Restormer, PromptIR) on the path; ``timm`` (SwinIR) and BasicSR's
utilities (NAFNet) are replaced by small stand-ins, which only affect initialisation
(overwritten here) and logging.

    python tests/models/make_official_vectors.py --repos /tmp/upstream
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_seeded import VECTOR_DIR, layout_of, save_case, seeded_parameters  # noqa: E402


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that submodules can be registered
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def upstream_modules(root: Path) -> dict[str, types.ModuleType]:
    # timm stand-in for SwinIR: DropPath is the identity in eval mode.
    class DropPath(nn.Module):
        def __init__(self, p: float = 0.0) -> None:
            super().__init__()

        def forward(self, x):
            return x

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    _stub("timm")
    _stub("timm.models")
    _stub(
        "timm.models.layers",
        DropPath=DropPath,
        to_2tuple=to_2tuple,
        trunc_normal_=nn.init.trunc_normal_,
    )
    # BasicSR stand-ins for NAFNet's arch files.
    _stub("basicsr")
    _stub("basicsr.utils", get_root_logger=lambda *a, **k: __import__("logging").getLogger())
    _stub("basicsr.models")
    _stub("basicsr.models.archs")
    nafnet_dir = root / "NAFNet" / "basicsr" / "models" / "archs"
    _load("basicsr.models.archs.arch_util", nafnet_dir / "arch_util.py")
    _load("basicsr.models.archs.local_arch", nafnet_dir / "local_arch.py")
    return {
        "nafnet": _load("upstream_nafnet", nafnet_dir / "NAFNet_arch.py"),
        "swinir": _load("upstream_swinir", root / "SwinIR" / "models" / "network_swinir.py"),
        "restormer": _load(
            "upstream_restormer",
            root / "Restormer" / "basicsr" / "models" / "archs" / "restormer_arch.py",
        ),
        "promptir": _load("upstream_promptir", root / "PromptIR" / "net" / "model.py"),
    }


def photo(name: str, channels: int, h: int, w: int, top: int, left: int) -> torch.Tensor:
    """``(1, channels, h, w)`` float crop of a scikit-image photo in [0, 1]."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    crop = img[top : top + h, left : left + w, :3].astype(np.float32) / 255.0
    if channels == 1:  # OpenCV's BGR2GRAY weights, as the upstream grayscale tests read
        crop = crop @ np.array([0.299, 0.587, 0.114], dtype=np.float32)[:, None]
    elif channels == 6:  # a dual-pixel pair: the view and a 1-pixel shifted view
        crop = np.concatenate([crop, np.roll(crop, 1, axis=1)], axis=-1)
    return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]


def pad_reflect_8(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The upstream Restormer/PromptIR test scripts: reflect-pad to a multiple of 8, crop."""
    h, w = x.shape[-2:]
    ph, pw = (8 - h % 8) % 8, (8 - w % 8) % 8
    return model(F.pad(x, (0, pw, 0, ph), "reflect"))[..., :h, :w]


# name: (family, constructor, kwargs, release format, seed, photo, runner, extra meta)
CASES = {
    "nafnet_sidd_style": dict(
        family="nafnet",
        ctor="NAFNet",
        kwargs=dict(img_channel=3, width=8, middle_blk_num=2, enc_blk_nums=[1, 1, 2, 1],
                    dec_blk_nums=[1, 2, 1, 1]),
        release="basicsr_params",
        seed=1,
        photo=("astronaut", 3, 37, 45, 60, 200),
    ),
    "nafnet_local": dict(
        family="nafnet",
        ctor="NAFNetLocal",
        kwargs=dict(img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 3],
                    dec_blk_nums=[1, 1, 1, 1], train_size=(1, 3, 16, 16)),
        release="basicsr_params",
        seed=2,
        photo=("coffee", 3, 50, 61, 100, 150),
        load_kwargs={"local_stats": 16},
    ),
    "swinir_color_dn": dict(
        family="swinir",
        ctor="SwinIR",
        kwargs=dict(upscale=1, in_chans=3, img_size=32, window_size=8, img_range=1.0,
                    depths=[2, 2], embed_dim=16, num_heads=[2, 4], mlp_ratio=2,
                    upsampler="", resi_connection="1conv"),
        release="basicsr_params",
        seed=3,
        photo=("chelsea", 3, 37, 45, 80, 120),
    ),
    "swinir_color_car": dict(
        family="swinir",
        ctor="SwinIR",
        kwargs=dict(upscale=1, in_chans=3, img_size=28, window_size=7, img_range=255.0,
                    depths=[2, 1], embed_dim=16, num_heads=[2, 2], mlp_ratio=2,
                    upsampler="", resi_connection="3conv"),
        release="basicsr_params",
        seed=4,
        photo=("rocket", 3, 30, 33, 200, 100),
    ),
    "swinir_gray_dn": dict(
        family="swinir",
        ctor="SwinIR",
        kwargs=dict(upscale=1, in_chans=1, img_size=16, window_size=8, img_range=1.0,
                    depths=[2], embed_dim=8, num_heads=[2], mlp_ratio=2,
                    upsampler="", resi_connection="1conv"),
        release="basicsr_params",
        seed=5,
        photo=("camera", 1, 20, 27, 100, 200),
    ),
    "restormer_withbias": dict(
        family="restormer",
        ctor="Restormer",
        kwargs=dict(inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 2, 1, 2],
                    num_refinement_blocks=1, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66,
                    bias=False, LayerNorm_type="WithBias", dual_pixel_task=False),
        release="basicsr_params",
        seed=6,
        photo=("astronaut", 3, 37, 45, 300, 300),
        pad8=True,
    ),
    "restormer_biasfree": dict(
        family="restormer",
        ctor="Restormer",
        kwargs=dict(inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1],
                    num_refinement_blocks=2, heads=[1, 1, 2, 2], ffn_expansion_factor=2.66,
                    bias=False, LayerNorm_type="BiasFree", dual_pixel_task=False),
        release="basicsr_params",
        seed=7,
        photo=("coffee", 3, 41, 35, 200, 300),
        pad8=True,
    ),
    "restormer_dual_pixel": dict(
        family="restormer",
        ctor="Restormer",
        kwargs=dict(inp_channels=6, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1],
                    num_refinement_blocks=1, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66,
                    bias=False, LayerNorm_type="WithBias", dual_pixel_task=True),
        release="basicsr_params",
        seed=8,
        photo=("chelsea", 6, 24, 32, 50, 50),
        pad8=True,
    ),
    "promptir": dict(
        family="promptir",
        ctor="PromptIR",
        kwargs=dict(dim=48, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                    heads=[1, 2, 4, 8], decoder=True),
        release="lightning",
        seed=9,
        photo=("rocket", 3, 37, 45, 150, 250),
        pad8=True,
    ),
}  # fmt: skip


def record(name: str, case: dict, modules: dict[str, types.ModuleType]) -> None:
    cls = getattr(modules[case["family"]], case["ctor"])
    torch.manual_seed(0)
    model = cls(**case["kwargs"]).eval()
    layout = layout_of(model)
    params = seeded_parameters(layout, case["seed"])
    missing, unexpected = model.load_state_dict(params, strict=False)
    assert not unexpected and all(k not in params for k in missing), (missing, unexpected)
    x = photo(*case["photo"])
    with torch.no_grad():
        y = pad_reflect_8(model, x) if case.get("pad8") else model(x)
    change = (y[:, :3] - x[:, :3]).abs().mean().item() if y.shape[1] == x.shape[1] else 1.0
    assert change > 0.01, f"{name}: the network barely changes its input ({change})"
    meta = {
        "family": case["family"],
        "upstream_class": case["ctor"],
        "kwargs": case["kwargs"],
        "release": case["release"],
        "seed": case["seed"],
        "padding": "upstream test script: reflect to a multiple of 8"
        if case.get("pad8")
        else "the network's own forward",
        "load_kwargs": case.get("load_kwargs", {}),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save_case(VECTOR_DIR / f"{name}.npz", meta, layout, input=x.numpy(), output=y.numpy())
    print(f"{name}: {meta['parameters']} parameters, input {tuple(x.shape)}, "
          f"mean |out - in| {change:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repos", type=Path, required=True,
                        help="folder with NAFNet/, SwinIR/, Restormer/, PromptIR/ checkouts")  # fmt: skip
    parser.add_argument("cases", nargs="*", help="cases to record (default: all)")
    args = parser.parse_args()
    modules = upstream_modules(args.repos)
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.cases or CASES:
        record(name, CASES[name], modules)


if __name__ == "__main__":
    main()

"""Record RAM++ fine-tuning vectors (RestormerRFR, the DINO path, the MAC order and
scores) with the official code (run by hand, not CI).

Official code used: DragonisCV/RAM 41de43cb, run unmodified from a checkout passed with
``--repo``, with ``transformers==4.48.0`` (the release's pin)::

    ram/archs/restormerRFR_arch.py        RestormerRFR
    ram/utils/dino_feature_extractor.py   DinoFeatureModule
    ram/archs/AdaSAM_arch.py              AdaptiveMaskPixGenerator (for the MAC)
    scripts/adaSAM_mac_analysis.py        Ada_MACAnalysis._mask_attribute_conductance

    git --git-dir=RAM.git archive 41de43cb ram scripts | tar -x -C /tmp/ram
    PYTHONPATH=/path/to/einops python tests/models/make_rampp_rfr_vectors.py --repo /tmp/ram

The release's RestormerRFR hard-codes DINO width 1536 and ``dim`` 48, so its vectors use
those widths with one block per level, a small image and seeded random features. The
DINO path uses a tiny random DINOv2 (40 layers, width 16, seeded weights) saved with
``save_pretrained`` into ``<repo>/pretrained_model/facebookdinov2_giant``, the folder the
release's extractor reads (relative to the working directory, which this script sets).
The MAC analysis object is built without its data loaders and log folders (its
``__init__`` needs both); the conductance method and the hooks are the release's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_rampp_vectors import GEN_SMALL, WOSKIP_SMALL, _load, _stub, normalize, photos  # noqa: E402
from official_seeded import VECTOR_DIR, layout_of, save_case, seeded_parameters  # noqa: E402

RAMPP_DIR = VECTOR_DIR / "rampp"

RFR_SMALL = dict(inp_channels=3, out_channels=3, dim=48, num_blocks=[1, 1, 1, 1],
                 num_refinement_blocks=1, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66,
                 bias=False, LayerNorm_type="WithBias")  # fmt: skip
RFR_SEED, FEATURE_SEED, DINO_SEED = 51, 52, 53
DINO_CONFIG = dict(hidden_size=16, num_hidden_layers=40, num_attention_heads=2,
                   mlp_ratio=2, patch_size=14, image_size=56,
                   layerscale_value=1.0, use_swiglu_ffn=False)  # fmt: skip
PREPROCESSOR = {  # facebook/dinov2-giant's preprocessor_config.json
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}  # fmt: skip
DINO_SIZES = [(37, 45), (80, 112), (224, 144), (64, 32)]  # (H, W) of lq
NAMES = ["shallow_feat1", "mid_feat1", "deep_feat1", "shallow_feat2", "mid_feat2", "deep_feat2"]


def rfr_features(seed: int, b: int, c: int, h: int, w: int) -> dict[str, torch.Tensor]:
    """Seeded random DINO features (shared with the tests), in the release's key order."""
    rng = np.random.default_rng(seed)
    return {
        n: torch.from_numpy(rng.standard_normal((b, c, h, w)).astype(np.float32)) for n in NAMES
    }


def tiny_dino(folder: Path) -> None:
    """A seeded tiny DINOv2 (and DINOv2-giant's processor settings) saved into ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(**DINO_CONFIG)).eval()
    params = seeded_parameters(layout_of(model), DINO_SEED)
    model.load_state_dict(params, strict=False)
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))


def official(repo: Path) -> dict[str, types.ModuleType]:
    class _Registry:
        def register(self, obj=None):
            return (lambda o: o) if obj is None else obj

    _stub("ram")
    _stub("ram.utils")
    _stub("ram.utils.registry", ARCH_REGISTRY=_Registry())
    _stub("ram.archs")
    return {
        "rfr": _load("ram.archs.restormerRFR_arch", repo / "ram/archs/restormerRFR_arch.py"),
        "dino": _load("ram.utils.dino_feature_extractor", repo / "ram/utils/dino_feature_extractor.py"),
        "adasam": _load("ram.archs.AdaSAM_arch", repo / "ram/archs/AdaSAM_arch.py"),
        "woskip": _load(
            "ram.archs.AdaSAM_RestormerWoskip_arch", repo / "ram/archs/AdaSAM_RestormerWoskip_arch.py"
        ),
    }  # fmt: skip


def record_rfr(mods) -> None:
    torch.manual_seed(0)
    net = mods["rfr"].RestormerRFR(**RFR_SMALL).eval()
    layout = layout_of(net)
    net.load_state_dict(seeded_parameters(layout, RFR_SEED), strict=False)
    x = torch.from_numpy(normalize(photos(2, 30, 45, 3)))  # padded 32 x 48: grid 4 x 6
    feats = rfr_features(FEATURE_SEED, 2, 1536, 4, 6)
    gates = {}
    with torch.no_grad():
        out = net(x, feats)
        for part, (a, b) in {"shallow": (0, 3), "mid": (1, 4), "deep": (2, 5)}.items():
            fusion = getattr(net, f"dino_fusion_{part}")
            f1, f2 = feats[NAMES[a]], feats[NAMES[b]]
            pooled = torch.cat(
                [fusion.global_pool(f1).flatten(1), fusion.global_pool(f2).flatten(1)], 1
            )
            gates[f"gate_{part}"] = fusion.gate_network(pooled).numpy()
    meta = {"class": "RestormerRFR", "kwargs": RFR_SMALL, "seed": RFR_SEED,
            "feature_seed": FEATURE_SEED, "feature_shape": [2, 1536, 4, 6],
            "parameters": sum(p.numel() for p in net.parameters()),
            "keys": len(net.state_dict())}  # fmt: skip
    save_case(
        RAMPP_DIR / "rfr_features.npz", meta, layout, input=x.numpy(), output=out.numpy(), **gates
    )
    print(f"rfr: {meta['parameters']} parameters, {meta['keys']} keys, out {out.abs().mean():.3f}")
    full = mods["rfr"].RestormerRFR()
    print(f"release size: {sum(p.numel() for p in full.parameters())} parameters, "
          f"{len(full.state_dict())} keys")  # fmt: skip


def record_dino(mods, repo: Path) -> None:
    folder = repo / "pretrained_model" / "facebookdinov2_giant"
    folder.mkdir(parents=True, exist_ok=True)
    tiny_dino(folder)
    os.chdir(repo)
    module = mods["dino"].DinoFeatureModule()  # float16, as the release
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"config": DINO_CONFIG, "seed": DINO_SEED, "preprocessor": PREPROCESSOR,
                  "sizes": [], "fails": []}  # fmt: skip
    for i, (h, w) in enumerate(DINO_SIZES):
        b = 2 if i == 0 else 1
        x = torch.from_numpy(normalize(photos(b, h, w, 10 + i)))
        arrays[f"input_{i}"] = x.numpy()
        # the release's processor call, for the pixel values
        from transformers import AutoImageProcessor

        hp, wp = h + (16 - h % 16) % 16, w + (16 - w % 16) % 16
        den = torch.nn.functional.pad(
            x * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
            (0, wp - w, 0, hp - h),
            mode="reflect",
        )
        proc = AutoImageProcessor.from_pretrained(str(folder), do_rescale=False, do_center_crop=False,
                                                  use_fast=True, size={"shortest_edge": min(hp, wp) // 8 * 14})  # fmt: skip
        pixels = proc(images=den, return_tensors="pt")["pixel_values"].numpy()
        meta["processor_class"] = type(proc).__name__
        meta["sizes"].append([b, h, w])
        try:
            feats = module(x)
        except AssertionError as e:
            meta["fails"].append([h, w, str(e)])
            del arrays[f"input_{i}"]  # a failing size: only the failure is checked
            continue
        arrays[f"pixels_{i}"] = pixels
        for n in NAMES:
            arrays[f"{n}_{i}"] = feats[n].numpy()
        assert list(feats) == NAMES
    save_case(RAMPP_DIR / "rfr_dino.npz", meta, [], **arrays)
    print(f"dino: {meta['processor_class']}, fails {meta['fails']}")


MAC_SEED_GEN, MAC_SEED_NET = 61, 62
MAC_OPT = {"total_step": 6, "pretrained_ratio": 0.5, "k": 100}


def record_mac(mods, repo: Path) -> None:
    """``Ada_MACAnalysis._mask_attribute_conductance`` on a small Woskip + AdaSAM pair."""
    _stub("ram.archs", build_network=None)
    _stub("ram.data", build_dataloader=None, build_dataset=None)
    _stub("ram.models")
    _stub("ram.models.base_model", BaseModel=object)
    _stub("ram.utils", get_env_info=None, get_root_logger=None, get_time_str=None, imwrite=None,
          make_exp_dirs=None, tensor2img=None)  # fmt: skip
    _stub("ram.utils.options", dict2str=None, parse_options=None)
    _stub("ram.archs.AdaSAM_arch", AdaptiveMaskPixGenerator=mods["adasam"].AdaptiveMaskPixGenerator)
    import importlib.machinery

    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        _stub(name, normalize=None).__spec__ = importlib.machinery.ModuleSpec(name, None)
    _stub("scripts")
    utils = _load("scripts.analysis_utils", repo / "scripts/analysis_utils.py")
    ada = _load("scripts.adaSAM_mac_analysis", repo / "scripts/adaSAM_mac_analysis.py")
    torch.manual_seed(0)
    gen = mods["adasam"].AdaptiveMaskPixGenerator(**GEN_SMALL).eval()
    gen_layout = layout_of(gen)
    gen.load_state_dict(seeded_parameters(gen_layout, MAC_SEED_GEN), strict=False)
    torch.manual_seed(0)
    net = mods["woskip"].AdaSAM_RestormerWoskip(**WOSKIP_SMALL).eval()
    net_layout = layout_of(net)
    net.load_state_dict(seeded_parameters(net_layout, MAC_SEED_NET), strict=False)
    analysis = object.__new__(ada.Ada_MACAnalysis)
    analysis.opt, analysis.device = dict(MAC_OPT), torch.device("cpu")
    analysis.model, analysis.mask_generator = net, gen
    analysis.hook_list = utils.BaseAnalysis._register_hooks(analysis)
    x = torch.from_numpy(normalize(photos(1, 32, 32, 7)))
    with torch.no_grad():
        _, _, p_full = gen(x)
    order = torch.argsort(p_full.flatten()).numpy()
    scores = analysis._mask_attribute_conductance(torch.zeros_like(x), x)
    meta = {"generator": GEN_SMALL, "generator_seed": MAC_SEED_GEN, "net": WOSKIP_SMALL,
            "net_seed": MAC_SEED_NET, "opt": MAC_OPT,
            "names": [h.name for h in analysis.hook_list]}  # fmt: skip
    save_case(RAMPP_DIR / "mac.npz", meta, [], input=x.numpy(), pixel_probs=p_full.numpy(),
              order=order.astype(np.float32), scores=np.array([float(s) for s in scores]))  # fmt: skip
    print(f"mac: {len(scores)} layers, max score {max(float(s) for s in scores):.3e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a DragonisCV/RAM checkout")
    parser.add_argument("--only", choices=["rfr", "dino", "mac"], default=None)
    args = parser.parse_args()
    repo = args.repo.resolve()
    mods = official(repo)
    RAMPP_DIR.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "rfr"):
        record_rfr(mods)
    if args.only in (None, "dino"):
        record_dino(mods, repo)
    if args.only in (None, "mac"):
        record_mac(mods, repo)


if __name__ == "__main__":
    main()

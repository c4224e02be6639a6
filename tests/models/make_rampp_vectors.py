"""Record the RAM++ test vectors with the official code (run by hand, not CI).

Builds small networks with the release's own classes, fills their parameters with
:func:`official_seeded.seeded_parameters`, runs them and writes
``tests/data/official/rampp/<case>.npz`` (the state-dict layout, the constructor
arguments, the seeds, inputs and outputs; no weights: the tests rebuild them from the
layout and the seed). ``tests/models/test_rampp_official.py`` checks ramir against them.

Official code used: DragonisCV/RAM 41de43cb (RAM++), run unmodified from a checkout
passed with ``--repo``::

    ram/archs/AdaSAM_arch.py                AdaptiveMaskPixGenerator
    ram/archs/AdaSAM_RestormerWoskip_arch.py AdaSAM_RestormerWoskip
    ram/losses/losses.py, loss_util.py      AdaptiveMaskL1Loss, AdaptiveMaskProbL1Loss

Needs ``einops``; the release's registry, ``lpips`` and VGG imports are replaced by small
stand-ins (they do not touch these classes). The pretraining step is the release's
``RAMPlusPretrainModel.optimize_parameters`` forward and backward, written out here.

    git --git-dir=RAM.git archive 41de43cb ram | tar -x -C /tmp/ram
    PYTHONPATH=/path/to/einops python tests/models/make_rampp_vectors.py --repo /tmp/ram

Masks: the release draws them with ``torch.multinomial`` on PyTorch's global generator.
Each masked case seeds it with ``torch.manual_seed(seed)`` right before the forward; the
tests draw either from a ``torch.Generator`` seeded the same (eval mode: the draw is the
first random number used) or from the global generator seeded the same (training mode,
where dropout draws first).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_seeded import VECTOR_DIR, layout_of, save_case, seeded_parameters  # noqa: E402

RAMPP_DIR = VECTOR_DIR / "rampp"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Registry:
    def register(self, obj=None):
        return (lambda o: o) if obj is None else obj


def official_modules(repo: Path) -> dict[str, types.ModuleType]:
    _stub("ram")
    _stub("ram.utils")
    _stub("ram.utils.registry", ARCH_REGISTRY=_Registry(), LOSS_REGISTRY=_Registry())
    _stub("ram.archs")
    _stub("ram.archs.vgg_arch", VGGFeatureExtractor=nn.Module)
    _stub("lpips")
    _stub("ram.losses")
    _load("ram.losses.loss_util", repo / "ram" / "losses" / "loss_util.py")
    return {
        "adasam": _load("ram.archs.AdaSAM_arch", repo / "ram" / "archs" / "AdaSAM_arch.py"),
        "woskip": _load(
            "ram.archs.AdaSAM_RestormerWoskip_arch",
            repo / "ram" / "archs" / "AdaSAM_RestormerWoskip_arch.py",
        ),
        "losses": _load("ram.losses.losses", repo / "ram" / "losses" / "losses.py"),
    }


def photos(batch: int, h: int, w: int, offset: int) -> np.ndarray:
    """``(batch, 3, h, w)`` crops of scikit-image photos in [0, 1]."""
    from skimage import data

    names = ["astronaut", "coffee", "chelsea", "rocket"]
    out = []
    for i in range(batch):
        img = getattr(data, names[(offset + i) % len(names)])()
        k = offset + i
        top, left = 40 + (17 * k) % 200, 60 + (23 * k) % 300
        crop = img[top : top + h, left : left + w, :3].astype(np.float32) / 255.0
        out.append(crop.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


def normalize(x: np.ndarray) -> np.ndarray:
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def seeded(model: nn.Module, seed: int) -> list[dict]:
    layout = layout_of(model)
    params = seeded_parameters(layout, seed)
    missing, unexpected = model.load_state_dict(params, strict=False)
    assert not unexpected and all(k not in params for k in missing), (missing, unexpected)
    return layout


GEN_SMALL = dict(img_size=32, patch_size=8, in_chans=3, embed_dim=64, mask_ratio=0.5,
                 use_learnable_pos_emb=True)  # fmt: skip
GEN_SINUSOID = dict(img_size=32, patch_size=4, in_chans=3, embed_dim=32, mask_ratio=0.3,
                    use_learnable_pos_emb=False)  # fmt: skip
WOSKIP_SMALL = dict(inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 2, 1, 1],
                    num_refinement_blocks=1, heads=[1, 2, 4, 8], ffn_expansion_factor=2.66,
                    bias=False, LayerNorm_type="WithBias", img_size=32)  # fmt: skip
WOSKIP_BIASFREE = dict(inp_channels=3, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1],
                       num_refinement_blocks=2, heads=[1, 1, 2, 2], ffn_expansion_factor=2.66,
                       bias=True, LayerNorm_type="BiasFree", img_size=32)  # fmt: skip
GEN_SEED, SIN_SEED, WOSKIP_SEED, BIASFREE_SEED = 21, 22, 23, 24


def record_generator(mods, name: str, kwargs: dict, seed: int, extra: bool) -> None:
    cls = mods["adasam"].AdaptiveMaskPixGenerator
    torch.manual_seed(0)
    net = cls(**kwargs)
    layout = seeded(net, seed)
    x = torch.from_numpy(normalize(photos(2, kwargs["img_size"], kwargs["img_size"], seed)))
    arrays: dict[str, np.ndarray] = {"input": x.numpy()}
    net.eval()
    with torch.no_grad():
        tokens = net.patch_embed(x)
        logits = net.get_token_probs(tokens + net.pos_embed_probs)
        arrays["token_probs"] = torch.softmax(logits, -1).numpy()
        eval_seed = 1000 + seed
        torch.manual_seed(eval_seed)
        mask, mask_token, p_full = net(x)
    assert float(mask_token.abs().sum()) == 0.0
    arrays["mask_eval"], arrays["pixel_probs"] = mask.numpy(), p_full.numpy()
    meta = {"class": "AdaptiveMaskPixGenerator", "kwargs": kwargs, "seed": seed,
            "eval_seed": eval_seed, "parameters": sum(p.numel() for p in net.parameters()),
            "num_masked": int(mask[0].sum())}  # fmt: skip
    if not kwargs["use_learnable_pos_emb"]:
        arrays["pos_table"] = net.pos_embed_probs.numpy()
    if extra:  # training mode: dropout 0.1 draws from the global RNG before the mask
        net.train()
        train_seed = 2000 + seed
        with torch.no_grad():
            torch.manual_seed(train_seed)
            mask_t, _, p_t = net(x)
        arrays["mask_train"], arrays["pixel_probs_train"] = mask_t.numpy(), p_t.numpy()
        meta["train_seed"] = train_seed
    save_case(RAMPP_DIR / f"{name}.npz", meta, layout, **arrays)
    print(f"{name}: {meta['parameters']} parameters, {meta['num_masked']} pixels hidden, "
          f"token probs {arrays['token_probs'].min():.4f}..{arrays['token_probs'].max():.4f}")  # fmt: skip


def record_woskip(mods, name: str, kwargs: dict, seed: int) -> None:
    cls = mods["woskip"].AdaSAM_RestormerWoskip
    torch.manual_seed(0)
    net = cls(**kwargs).eval()
    layout = seeded(net, seed)
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(normalize(photos(1, 37, 45, seed)))  # odd: padded to 48 x 48
    mask = torch.from_numpy((rng.random((1, 1, 37, 45)) < 0.5).astype(np.float32))
    tokens = torch.from_numpy(rng.standard_normal((1, 3, 37, 45)).astype(np.float32))
    sq = torch.from_numpy(normalize(photos(1, 32, 32, seed + 1)))
    sq_mask = torch.from_numpy((rng.random((1, 1, 32, 32)) < 0.5).astype(np.float32))
    with torch.no_grad():
        out = net(x)
        out_mask = net(x, mask, tokens)
        out_zero = net(x, mask, torch.zeros_like(x))
        out_sq = net(sq, sq_mask)  # the release's own mask token: zeros of img_size
    change = (out - x).abs().mean().item()
    assert change > 0.05, change
    meta = {"class": "AdaSAM_RestormerWoskip", "kwargs": kwargs, "seed": seed,
            "parameters": sum(p.numel() for p in net.parameters())}  # fmt: skip
    save_case(RAMPP_DIR / f"{name}.npz", meta, layout, input=x.numpy(), mask=mask.numpy(),
              tokens=tokens.numpy(), output=out.numpy(), output_mask_tokens=out_mask.numpy(),
              output_mask_zeros=out_zero.numpy(), input_square=sq.numpy(),
              mask_square=sq_mask.numpy(), output_square=out_sq.numpy())  # fmt: skip
    print(f"{name}: {meta['parameters']} parameters, mean |out - in| {change:.3f}")


def record_losses(mods) -> None:
    losses = mods["losses"]
    rng = np.random.default_rng(31)
    pred = torch.from_numpy(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    gt = torch.from_numpy(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    mask = torch.from_numpy((rng.random((2, 1, 16, 16)) < 0.5).astype(np.float32))
    p = torch.from_numpy((rng.random((2, 1, 16, 16)) * 0.05 + 1e-4).astype(np.float32))
    pred.requires_grad_(True)
    p.requires_grad_(True)
    l_pix = losses.AdaptiveMaskL1Loss(loss_weight=1.0)(pred, gt, mask)
    l_prob = losses.AdaptiveMaskProbL1Loss(loss_weight=1e-4)(pred.detach(), gt, mask, p)
    (g_pred,) = torch.autograd.grad(l_pix, pred)
    (g_p,) = torch.autograd.grad(l_prob, p)
    l_pix2 = losses.AdaptiveMaskL1Loss(loss_weight=0.5)(pred, gt, mask)
    l_prob2 = losses.AdaptiveMaskProbL1Loss(loss_weight=3e-3)(pred.detach(), gt, mask, p)
    meta = {"weights": [[1.0, 1e-4], [0.5, 3e-3]]}
    save_case(RAMPP_DIR / "losses.npz", meta, [], pred=pred.detach().numpy(), gt=gt.numpy(),
              mask=mask.numpy(), p_x=p.detach().numpy(),
              values=np.array([[l_pix.item(), l_prob.item()], [l_pix2.item(), l_prob2.item()]]),
              grad_pred=g_pred.numpy(), grad_p_x=g_p.numpy())  # fmt: skip
    print(f"losses: l_pix {l_pix.item():.5f}, l_prob {l_prob.item():.3e}")


STEP_GRADS = {
    # (not the scorer's bias: a softmax ignores a shift of all logits, its gradient is 0)
    "net_mask": ["get_token_probs.1.weight", "get_token_probs.0.norm1.bias",
                 "patch_embed.proj.bias", "pos_embed_probs"],
    "net_g": ["output.weight", "patch_embed.proj.weight", "latent.0.attn.temperature"],
}  # fmt: skip


def record_step(mods) -> None:
    """One pretraining step as ``RAMPlusPretrainModel.optimize_parameters`` (train mode)."""
    losses = mods["losses"]
    torch.manual_seed(0)
    net_mask = mods["adasam"].AdaptiveMaskPixGenerator(**GEN_SMALL)
    seeded(net_mask, GEN_SEED)
    torch.manual_seed(0)
    net_g = mods["woskip"].AdaSAM_RestormerWoskip(**WOSKIP_SMALL)
    seeded(net_g, WOSKIP_SEED)
    net_g.train()
    net_mask.train()
    rng = np.random.default_rng(41)
    clean = photos(2, 32, 32, 5)
    noisy = np.clip(clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32), 0, 1)
    lq, gt = torch.from_numpy(normalize(noisy)), torch.from_numpy(normalize(clean))
    cri_pix = losses.AdaptiveMaskL1Loss(loss_weight=1.0)
    cri_prob = losses.AdaptiveMaskProbL1Loss(loss_weight=1e-4)
    step_seed = 4242
    torch.manual_seed(step_seed)
    mask, mask_token, p_x = net_mask(lq)
    output = net_g(lq, mask.detach(), mask_token.detach())
    l_pix = cri_pix(output, gt, mask)
    l_prob = cri_prob(output.detach(), gt, mask, p_x)
    (l_pix + l_prob).backward()
    grads = {}
    for net_name, net in (("net_mask", net_mask), ("net_g", net_g)):
        named = dict(net.named_parameters())
        for k in STEP_GRADS[net_name]:
            grads[f"grad:{net_name}:{k}"] = named[k].grad.numpy()
    meta = {"generator": GEN_SMALL, "generator_seed": GEN_SEED, "net": WOSKIP_SMALL,
            "net_seed": WOSKIP_SEED, "step_seed": step_seed, "weights": [1.0, 1e-4],
            "mode": "train", "grads": STEP_GRADS}  # fmt: skip
    save_case(RAMPP_DIR / "step.npz", meta, [], lq=lq.numpy(), gt=gt.numpy(),
              mask=mask.numpy(), output=output.detach().numpy(),
              pixel_probs=p_x.detach().numpy(), losses=np.array([l_pix.item(), l_prob.item()]),
              **grads)  # fmt: skip
    print(f"step: l_pix {l_pix.item():.5f}, l_prob {l_prob.item():.3e}, hidden {mask.sum():.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a DragonisCV/RAM checkout")
    args = parser.parse_args()
    mods = official_modules(args.repo)
    RAMPP_DIR.mkdir(parents=True, exist_ok=True)
    record_generator(mods, "adasam_learnable", GEN_SMALL, GEN_SEED, extra=True)
    record_generator(mods, "adasam_sinusoid", GEN_SINUSOID, SIN_SEED, extra=False)
    record_woskip(mods, "woskip_withbias", WOSKIP_SMALL, WOSKIP_SEED)
    record_woskip(mods, "woskip_biasfree", WOSKIP_BIASFREE, BIASFREE_SEED)
    record_losses(mods)
    record_step(mods)


if __name__ == "__main__":
    main()

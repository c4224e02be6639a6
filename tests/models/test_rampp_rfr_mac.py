"""RAM++ MAC (the reveal order from AdaSAM's probabilities) and the fine-tuning selection
from the release's ``filter_name_RFR.txt``, against the official code and files.

``rampp/mac.npz``: the release's ``Ada_MACAnalysis._mask_attribute_conductance`` on a small
AdaSAM + pretraining-network pair (``make_rampp_rfr_vectors.py``; 6 path steps, k 100).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_seeded import load_case, seeded_parameters

from ramir import rampp
from ramir.attribution import list_layers, mask_attribution_conductance
from ramir.checkpoint import load_state_dict
from ramir.models import build_model

DATA = Path(__file__).resolve().parents[1] / "attribution" / "data" / "mac_analysis_result"


def _mac_case():
    meta, _, arrays = load_case("rampp/mac")
    # the official layouts of these sizes (the pretraining vectors' cases)
    gen_layout = load_case("rampp/adasam_learnable")[1]
    net_layout = load_case("rampp/woskip_withbias")[1]
    gen = build_model("adasam", **meta["generator"]).eval()
    gen.load_state_dict(seeded_parameters(gen_layout, meta["generator_seed"]), strict=False)
    kwargs = {k: v for k, v in meta["net"].items() if k != "img_size"}
    net = build_model("adasam_restormer_woskip", **kwargs).eval()
    load_state_dict(net, seeded_parameters(net_layout, meta["net_seed"]))
    return meta, arrays, gen, net


def test_mac_order_and_scores_match_official():
    meta, arrays, gen, net = _mac_case()
    x = torch.from_numpy(arrays["input"])
    probs = rampp.pixel_probs(gen, x)
    torch.testing.assert_close(probs, torch.from_numpy(arrays["pixel_probs"]), rtol=1e-5, atol=0)
    recorded = torch.from_numpy(arrays["order"]).long()[None]
    flat = probs.flatten()
    # ramir's order: ascending, ties by pixel index; the release's sorts the same values
    order = rampp.mac_order(gen, x)
    assert order.shape == (1, 32 * 32)
    assert torch.all(flat[order[0]].diff() >= 0)
    assert torch.equal(flat[order[0]], flat[recorded[0]])
    tie = flat[order[0]] == flat[order[0]].roll(-1)
    assert torch.all(order[0][:-1][tie[:-1]] < order[0][1:][tie[:-1]])  # stable
    assert not torch.all(flat.diff() == 0)
    # release=True is the release's own call (same PyTorch, same tie order as recorded)
    assert torch.equal(rampp.mac_order(gen, x, release=True), recorded)
    opt = meta["opt"]
    scores = mask_attribution_conductance(
        net, x, steps=opt["total_step"], start_ratio=opt["pretrained_ratio"],
        sharpness=opt["k"], order=recorded,
    )  # fmt: skip
    assert list(scores) == meta["names"] == list_layers(net)
    got = torch.tensor(list(scores.values()), dtype=torch.float64)
    torch.testing.assert_close(got, torch.from_numpy(arrays["scores"]).double(), rtol=1e-4, atol=0)
    # the same layers rank first with ramir's own (stable) order
    own = mask_attribution_conductance(
        net, x, steps=opt["total_step"], start_ratio=opt["pretrained_ratio"],
        sharpness=opt["k"], order=order,
    )  # fmt: skip
    assert max(own, key=own.get) == max(scores, key=scores.get)


def test_release_mac_order_flattens_the_batch():
    meta, arrays, gen, net = _mac_case()
    x = torch.from_numpy(arrays["input"]).repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    per_image = rampp.mac_order(gen, x)
    assert per_image.shape == (2, 1024) and int(per_image.max()) == 1023
    release = rampp.mac_order(gen, x, release=True)
    assert release.shape == (1, 2048) and int(release.max()) == 2047  # spans both images
    with pytest.raises(ValueError, match="order must have shape"):
        mask_attribution_conductance(net, x, steps=2, order=release)
    one = rampp.mac_order(gen, x[:1], release=True)  # at batch 1 it is an order
    flat = rampp.pixel_probs(gen, x[:1]).flatten()
    assert torch.all(flat[one[0]].diff() >= 0)


def _rfr_list() -> list[str]:
    """The release's filter_name_RFR.txt (3/5-task): 33 DINO-side modules, then the
    Restormer layers in 3task_mac's MAC order."""
    head = (DATA / "ram_plus" / "rfr_modules.txt").read_text("utf-8").split()
    with torch.device("meta"):
        layers = list_layers(build_model("restormer"))
    index = (DATA / "ram_plus" / "3task_mac" / "filter_index.txt").read_text("utf-8").split()
    return head + [layers[int(i)] for i in index]


def test_selection_from_the_release_rfr_list():
    names = _rfr_list()
    assert len(names) == 439
    with torch.device("meta"):
        model = build_model("restormer_rfr")
    assert set(names) == set(list_layers(model))  # bare dino_fusion_X: the temperature
    chosen = rampp.rfr_selection(names, 0.358)
    assert len(chosen) == 157 and chosen[:33] == names[:33]
    trainable, total = rampp.freeze_for_finetuning(model, names, 0.358)
    tensors = sum(p.requires_grad for p in model.parameters())
    assert (tensors, trainable, total) == (217, 71_654_210, 81_757_117)  # 3-task, measured
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("dino_"))
    assert rampp.freeze_for_finetuning(model, names, 1.0)[0] == total  # full fine-tuning
    # the release prefixes 'module.': nothing of an unwrapped network matches
    prefixed = rampp.rfr_selection(names, 0.358, release_prefix=True)
    assert prefixed[0] == "module." + names[0]
    with pytest.raises(ValueError, match="matches no parameter"):
        rampp.freeze_for_finetuning(model, names, 0.358, release_prefix=True)
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DistributedDataParallel names it
    assert rampp.freeze_for_finetuning(wrapped, names, 0.358, release_prefix=True)[0] == trainable


def test_analyze_with_the_adasam_order(tmp_path):
    """``ramir analyze`` with ``mask_generator:`` writes the usual mac.json/plot, with the
    scores of the AdaSAM order; the crop must be the generator's size."""
    from ramir.attribution import load_mac
    from ramir.cli import main
    from ramir.data.read import read_image
    from ramir.data.write import write_image

    torch.manual_seed(0)
    net = build_model("adasam_restormer_woskip", dim=8, num_blocks=[1, 1, 1, 1],
                      num_refinement_blocks=1, heads=[1, 1, 2, 2]).eval()  # fmt: skip
    gen = build_model("adasam", img_size=16, patch_size=4, embed_dim=16).eval()
    torch.save({"params": net.state_dict(), "params_ema": net.state_dict()},
               tmp_path / "RestormerWoSkip.pth")  # fmt: skip
    torch.save({"params": gen.state_dict(), "params_ema": gen.state_dict()},
               tmp_path / "AdaSAM_pretrained.pth")  # fmt: skip
    g = torch.Generator().manual_seed(1)
    for i in range(2):
        write_image(tmp_path / "images" / f"img{i}.png", torch.rand(3, 20, 24, generator=g))
    lines = [f"checkpoint: {tmp_path / 'RestormerWoSkip.pth'}", "steps: 3", "device: cpu",
             f"mask_generator: {tmp_path / 'AdaSAM_pretrained.pth'}", "images:",
             f"  folder: {tmp_path / 'images'}", "  count: 2", "  crop: 16"]  # fmt: skip
    cfg = tmp_path / "analyze.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["analyze", "-c", str(cfg), "--out", str(out), "-q"]) == 0
    result = load_mac(out / "mac.json")
    assert result.parameters["order"] == "adasam ascending"
    assert (out / "mac.png").stat().st_size > 0
    expected = dict.fromkeys(result.scores, 0.0)
    for i in range(2):
        img = read_image(tmp_path / "images" / f"img{i}.png").rgb[:, 2:18, 4:20]
        lq = net.normalization.normalize(img.unsqueeze(0))
        order = rampp.mac_order(gen, lq)
        for k, v in mask_attribution_conductance(net, lq, steps=3, order=order).items():
            expected[k] += v
    assert all(abs(result.scores[k] - expected[k]) <= 1e-5 * abs(expected[k]) for k in expected)
    cfg.write_text("\n".join(lines[:-1] + ["  crop: 12"]) + "\n")
    assert main(["analyze", "-c", str(cfg), "--out", str(tmp_path / "bad"), "-q"]) != 0


def test_imported_rfr_list_selects_what_the_release_fine_tunes(tmp_path):
    from ramir.attribution import load_mac, select_layers
    from ramir.attribution.official import import_official_mac

    names = _rfr_list()
    listing = tmp_path / "filter_name_RFR.txt"
    listing.write_text("".join(f"{n}\n" for n in names), "utf-8")
    mac_json, _ = import_official_mac(listing, tmp_path / "out", arch="restormer_rfr")
    mac = load_mac(mac_json)
    for ratio in (0.358, 1.0):
        assert select_layers(mac.scores, ratio) == rampp.rfr_selection(names, ratio)


def test_fine_tuning_starts_from_the_pretraining_weights():
    torch.manual_seed(5)
    small = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2])
    woskip = build_model("adasam_restormer_woskip", **small)
    rfr = build_model("restormer_rfr", **small, dino_dim=16, gate_hidden=8)
    before = {k: v.clone() for k, v in rfr.state_dict().items()}
    left = rampp.init_from_pretraining(rfr, woskip.state_dict())
    assert len(left) == 51 and all(torch.equal(rfr.state_dict()[k], before[k]) for k in left)
    for k, v in woskip.state_dict().items():
        assert torch.equal(rfr.state_dict()[k], v), k
    other = build_model("adasam_restormer_woskip", **{**small, "dim": 16})
    with pytest.raises(ValueError, match="with another shape"):
        rampp.init_from_pretraining(rfr, other.state_dict())


def test_load_model_mask_ratio_for_the_generator(tmp_path):
    from ramir.checkpoint import load_model
    from ramir.models.adasam import masked_pixels

    gen = build_model("adasam", img_size=16, patch_size=4, embed_dim=16)
    torch.save({"params": gen.state_dict(), "params_ema": gen.state_dict()},
               tmp_path / "AdaSAM_pretrained.pth")  # fmt: skip
    loaded = load_model(tmp_path / "AdaSAM_pretrained.pth", mask_ratio=0.3)
    draw = loaded(torch.zeros(1, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert int(draw.mask.sum()) == masked_pixels(16, 4, 0.3) != masked_pixels(16, 4, 0.5)

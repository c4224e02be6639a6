"""MAC, the IG/random baselines and the path masks, on toy networks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ramir.attribution import (
    gradient_magnitude,
    integrated_gradients_conductance,
    list_layers,
    mask_attribution_conductance,
    mask_path_alphas,
    random_orders,
    random_scores,
    soft_reveal_masks,
)
from ramir.attribution.reference import mac_reference, reference_soft_mask


class DeadBranchNet(nn.Module):
    """Live conv chain; ``dead`` is computed but unused; ``const`` ignores the input."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 3, 1, 1))  # root-owned: not a layer
        self.head = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.GroupNorm(2, 6)
        self.body = nn.Conv2d(6, 6, 3, padding=1)
        self.dead = nn.Conv2d(3, 6, 3, padding=1)
        self.const = Bias(3)
        self.tail = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _ = self.dead(x)
        y = torch.relu(self.norm(self.head(x)))
        y = torch.tanh(self.body(y)) + y
        return self.tail(y) + x + self.const(x)


class Bias(nn.Module):
    """Owns a raw parameter; its output does not depend on the input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.linspace(-1, 1, c).view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1, x.shape[2], x.shape[3])


class TwiceNet(nn.Module):
    """One module called twice, one returning a tuple, windowed (batch x windows) outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.pair = PairOut()
        self.win = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sin(self.conv(torch.sin(self.conv(x))))
        y, _ = self.pair(y)
        b, c, h, w = y.shape  # 4x4 windows, sample-major: (B * nW, 16, C)
        win = y.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1).reshape(-1, 16, c)
        win = torch.tanh(self.win(win))
        return win.view(b, h // 4, w // 4, 4, 4, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class PairOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return x * self.scale, 7


def _toy(cls: type[nn.Module], seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return cls().to(dtype)


def _images(b: int, h: int, w: int, seed: int = 1, dtype: torch.dtype = torch.float64):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _rel(a: dict[str, float], b: dict[str, float]) -> float:
    assert list(a) == list(b)
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in a)


def test_layers_skip_root_and_keep_parameter_containers() -> None:
    assert list_layers(DeadBranchNet()) == ["head", "norm", "body", "dead", "const", "tail"]
    assert list_layers(TwiceNet()) == ["conv", "pair", "win"]


def test_dead_branch_scores_zero_and_live_layers_rank_first() -> None:
    model = _toy(DeadBranchNet)
    scores = mask_attribution_conductance(
        model, _images(2, 8, 8), steps=16, generator=torch.Generator().manual_seed(0), chunk=5
    )
    assert list(scores) == list_layers(model)
    assert scores["dead"] == 0.0
    assert scores["const"] == 0.0  # output independent of the input: scored, 0
    live = ["head", "norm", "body", "tail"]
    assert all(scores[n] > 1e-6 for n in live)
    ranking = sorted(scores, key=lambda n: -scores[n])
    assert set(ranking[:4]) == set(live)


def test_batched_equals_reference_way() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(2, 8, 6)
    order = random_orders(2, 8, 6, generator=torch.Generator().manual_seed(3))
    fast = mask_attribution_conductance(model, lq, steps=12, order=order, chunk=5)
    slow = mac_reference(model, lq, steps=12, order=order)
    assert _rel(fast, slow) < 1e-10
    assert any(v > 0 for v in fast.values())


def test_batched_equals_reference_way_float32() -> None:
    model = _toy(DeadBranchNet, dtype=torch.float32)
    lq = _images(1, 8, 8, dtype=torch.float32)
    order = random_orders(1, 8, 8, generator=torch.Generator().manual_seed(4))
    fast = mask_attribution_conductance(model, lq, steps=10, order=order, chunk=4)
    slow = mac_reference(model, lq, steps=10, order=order)
    live = {k: v for k, v in slow.items() if v > 0}
    assert _rel({k: fast[k] for k in live}, live) < 1e-5
    assert fast["dead"] == slow["dead"] == 0.0


def test_multiple_calls_tuple_outputs_and_windows() -> None:
    model = _toy(TwiceNet)
    lq = _images(2, 8, 8)
    order = random_orders(2, 8, 8, generator=torch.Generator().manual_seed(5))
    fast = mask_attribution_conductance(model, lq, steps=8, order=order, chunk=3)
    slow = mac_reference(model, lq, steps=8, order=order)
    assert _rel(fast, slow) < 1e-10
    assert all(v > 0 for v in fast.values())


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 50])
def test_scores_do_not_depend_on_chunk(chunk: int) -> None:
    model = _toy(DeadBranchNet)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(6))
    ref = mask_attribution_conductance(model, lq, steps=10, order=order, chunk=4)
    got = mask_attribution_conductance(model, lq, steps=10, order=order, chunk=chunk)
    assert _rel({k: got[k] for k in ref if ref[k]}, {k: v for k, v in ref.items() if v}) < 1e-10


def test_images_add_up() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(7))
    both = mask_attribution_conductance(model, lq, steps=6, order=order)
    one = mask_attribution_conductance(model, lq[:1], steps=6, order=order[:1])
    two = mask_attribution_conductance(model, lq[1:], steps=6, order=order[1:])
    assert (
        _rel({k: one[k] + two[k] for k in one if one[k]}, {k: v for k, v in both.items() if v})
        < 1e-10
    )


def test_order_and_generator_make_it_deterministic() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(1, 6, 6)
    order = random_orders(1, 6, 6, generator=torch.Generator().manual_seed(8))
    a = mask_attribution_conductance(model, lq, steps=6, order=order)
    torch.manual_seed(123)  # the global RNG plays no part when order is given
    b = mask_attribution_conductance(model, lq, steps=6, order=order)
    assert a == b
    g1 = mask_attribution_conductance(
        model, lq, steps=6, generator=torch.Generator().manual_seed(1)
    )
    g2 = mask_attribution_conductance(
        model, lq, steps=6, generator=torch.Generator().manual_seed(1)
    )
    g3 = mask_attribution_conductance(
        model, lq, steps=6, generator=torch.Generator().manual_seed(2)
    )
    assert g1 == g2
    assert g1 != g3


def test_model_is_left_exactly_as_it_was() -> None:
    model = _toy(DeadBranchNet)
    model.train()
    model.norm.eval()
    model.body.weight.requires_grad_(False)
    model.tail.bias.grad = torch.ones_like(model.tail.bias)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    seen_modes = []
    model.head.register_forward_hook(lambda m, i, o: seen_modes.append(model.training))
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    mask_attribution_conductance(model, _images(1, 6, 6), steps=4, chunk=2)
    integrated_gradients_conductance(model, _images(1, 6, 6), steps=4)

    assert seen_modes and not any(seen_modes)  # ran in eval mode
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert sum(len(m._forward_hooks) for m in model.modules()) == n_hooks
    assert all(len(m._backward_hooks) == 0 for m in model.modules())
    for n, p in model.named_parameters():
        if n == "tail.bias":
            assert torch.equal(p.grad, torch.ones_like(p))
        else:
            assert p.grad is None, n
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_model_restored_after_an_error() -> None:
    model = _toy(DeadBranchNet)
    model.train()

    def bad_target(pred: torch.Tensor) -> torch.Tensor:
        return pred.sum()  # a scalar instead of one value per sample

    with pytest.raises(ValueError, match="one value per sample"):
        mask_attribution_conductance(model, _images(1, 6, 6), steps=4, target=bad_target)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_custom_target_and_layer_subset() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(1, 6, 6)
    order = random_orders(1, 6, 6, generator=torch.Generator().manual_seed(9))

    def mean_intensity(pred: torch.Tensor) -> torch.Tensor:
        return pred.flatten(1).mean(1)

    fast = mask_attribution_conductance(
        model, lq, steps=6, order=order, target=mean_intensity, layers=["tail", "head"]
    )
    slow = mac_reference(
        model, lq, steps=6, order=order, target=mean_intensity, layers=["tail", "head"]
    )
    assert list(fast) == ["tail", "head"]
    assert _rel(fast, slow) < 1e-10
    with pytest.raises(KeyError, match="did you mean"):
        mask_attribution_conductance(model, lq, steps=4, layers=["tails"])


def test_inplace_modified_output_is_a_clear_error() -> None:
    class Inplace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu_(self.conv(x))

    with pytest.raises(RuntimeError, match="in place"):
        mask_attribution_conductance(_toy(Inplace), _images(1, 4, 4), steps=3)


def test_bad_arguments() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(1, 4, 4)
    with pytest.raises(ValueError, match="steps"):
        mask_attribution_conductance(model, lq, steps=1)
    with pytest.raises(ValueError, match="chunk"):
        mask_attribution_conductance(model, lq, steps=4, chunk=0)
    with pytest.raises(ValueError, match="permutation"):
        mask_attribution_conductance(model, lq, steps=4, order=torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        mask_attribution_conductance(model, lq, steps=4, order=torch.arange(15).view(1, 15))
    with pytest.raises(ValueError, match="4-D|B, C, H, W"):
        mask_attribution_conductance(model, lq[0], steps=4)


def test_integrated_gradients_matches_reference_way() -> None:
    model = _toy(DeadBranchNet)
    lq = _images(2, 6, 6)
    for acc in ("conductance", "gradient"):
        fast = integrated_gradients_conductance(model, lq, steps=7, chunk=3, accumulate=acc)
        slow = mac_reference(model, lq, steps=7, path="line", accumulate=acc)
        live = {k: v for k, v in slow.items() if v}
        assert _rel({k: fast[k] for k in live}, live) < 1e-10
        assert fast["dead"] == 0.0
    mac = mask_attribution_conductance(
        model, lq, steps=7, generator=torch.Generator().manual_seed(0)
    )
    ig = integrated_gradients_conductance(model, lq, steps=7)
    assert list(ig) == list(mac) and ig != mac


def test_random_scores() -> None:
    model = DeadBranchNet()
    a = random_scores(model, torch.Generator().manual_seed(0))
    b = random_scores(model, torch.Generator().manual_seed(0))
    c = random_scores(model, torch.Generator().manual_seed(1))
    assert list(a) == list_layers(model) and a == b and a != c
    assert all(0.0 <= v < 1.0 for v in a.values())


def test_soft_masks_match_the_pixel_loop() -> None:
    h, w, k = 5, 7, 1e4
    order = random_orders(2, h, w, generator=torch.Generator().manual_seed(10))
    alphas = mask_path_alphas(20, 0.5)
    assert alphas[0] == 0.5 and math.isclose(alphas[-1], 0.975)
    masks = soft_reveal_masks(order, alphas, k, h, w, dtype=torch.float64)
    assert masks.shape == (2, 20, h, w)
    for b in range(2):
        for t in (0, 1, 7, 19):
            ref = reference_soft_mask(order[b].tolist(), alphas[t], k, h, w)
            assert torch.equal(masks[b, t], ref)
            assert int((masks[b, t] > 0).sum()) == math.ceil(alphas[t] * h * w)
    # a softer mask reveals partially around the boundary rank
    soft = soft_reveal_masks(order[:1], [0.5], 20.0, h, w)[0, 0].flatten()[order[0]]
    assert (soft[:18] > 0).all() and (soft[18:] == 0).all() and soft[0] > soft[17]


def test_mask_path_chunks_are_slices_of_the_whole_path() -> None:
    """The engine's chunk-by-chunk masks (tensors put on the device once) equal the
    masks of all steps at once, whatever the chunk boundaries."""
    from ramir.attribution.path import MaskPath

    h, w, k = 6, 5, 1e4
    order = random_orders(3, h, w, generator=torch.Generator().manual_seed(21))
    alphas = mask_path_alphas(11, 0.5)
    whole = soft_reveal_masks(order, alphas, k, h, w, dtype=torch.float64)
    path = MaskPath(order, alphas, k, h, w)
    assert len(path) == 11
    for chunk in (1, 4, 11):
        parts = [path.masks(t0, min(chunk, 11 - t0), torch.float64) for t0 in range(0, 11, chunk)]
        assert torch.equal(torch.cat(parts, dim=1), whole)
    assert path.masks(3, 2).dtype == torch.float32
    assert torch.equal(path.masks(3, 2), whole[:, 3:5].float())


def test_a_model_that_checks_its_input_is_told_not_to_on_the_path() -> None:
    """lq is checked once; the path inputs (lq mixed with zeros) skip the model's own
    finite check, which would read the values back from the device every forward pass."""
    seen: list[bool] = []

    class Checking(TwiceNet):
        per_sample_outputs = True  # no layout probe

        def forward(self, x: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
            seen.append(check_finite)
            return super().forward(x)

    lq = _images(2, 8, 8)
    order = random_orders(2, 8, 8, generator=torch.Generator().manual_seed(22))
    got = mask_attribution_conductance(_toy(Checking), lq, steps=6, order=order, chunk=4)
    assert seen == [False, False]  # two batches of path steps
    assert _rel(got, mac_reference(_toy(TwiceNet), lq, steps=6, order=order)) < 1e-10
    with pytest.raises(ValueError, match="NaN or Inf"):
        mask_attribution_conductance(_toy(Checking), lq * float("nan"), steps=4)


def test_gradient_magnitude_target() -> None:
    img = torch.zeros(2, 3, 3, 4, dtype=torch.float64)
    img[0, 1, 1, 1] = 3.0
    value = gradient_magnitude(img)
    # pixel (1,1) differs from (2,1) and (1,2) by 3: sqrt(18); (0,1) differs vertically by
    # 3; (1,0) differs horizontally by 3; the rest of the valid region is flat.
    assert value.shape == (2,)
    assert math.isclose(float(value[0]), math.sqrt(18) + 3 + 3)
    assert float(value[1]) == 0.0
    x = torch.zeros(1, 3, 4, 4, requires_grad=True)
    gradient_magnitude(x).sum().backward()
    assert torch.isfinite(x.grad).all()  # flat image: subgradient 0, not NaN


class SequenceFirstNet(nn.Module):
    """A Linear applied to ``(L, N, C)`` tokens: its output is not sample-major."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(3, 4, 3, padding=1)
        self.seq = nn.Linear(4, 4)
        self.out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.inp(x))
        n, c, h, w = y.shape
        t = torch.tanh(self.seq(y.flatten(2).permute(2, 0, 1)))  # (L, N, C)
        return self.out(t.permute(1, 2, 0).reshape(n, c, h, w))


class GroupedWindowNet(nn.Module):
    """Like RAM-SwinIR: a "fast" mode that groups rows of all samples together."""

    def __init__(self) -> None:
        super().__init__()
        self.attn_impl = "fast"
        self.inp = nn.Conv2d(3, 4, 3, padding=1)
        self.rows = nn.Linear(4, 4)
        self.out = nn.Conv2d(4, 3, 3, padding=1)

    def set_attention_impl(self, impl: str) -> None:
        self.attn_impl = impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.inp(x))
        n, c, h, w = y.shape
        tok = y.permute(0, 2, 3, 1)  # (N, H, W, C): one "window" per image row
        if self.attn_impl == "fast":  # even rows of all images first, then odd rows
            perm = torch.cat([torch.arange(0, h, 2), torch.arange(1, h, 2)])
            grouped = tok[:, perm].transpose(0, 1).reshape(n * h, w, c)
            z = torch.tanh(self.rows(grouped)).view(h, n, w, c).transpose(0, 1)
            z = z[:, torch.argsort(perm)]
        else:
            z = torch.tanh(self.rows(tok.reshape(n * h, w, c))).view(n, h, w, c)
        return self.out(z.permute(0, 3, 1, 2))


def test_layers_that_are_not_sample_major_fall_back_to_one_step_per_forward() -> None:
    model = _toy(SequenceFirstNet)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(11))
    with pytest.warns(RuntimeWarning, match=r"seq.*chunk=1"):
        fast = mask_attribution_conductance(model, lq, steps=6, order=order, chunk=3)
    slow = mac_reference(model, lq, steps=6, order=order)
    assert _rel(fast, slow) < 1e-10


def test_grouped_attention_is_switched_to_plain_and_restored() -> None:
    model = _toy(GroupedWindowNet)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(12))
    import warnings

    seen = []
    model.rows.register_forward_hook(lambda m, i, o: seen.append(model.attn_impl))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = mask_attribution_conductance(model, lq, steps=6, order=order, chunk=4)
    assert "plain" in seen and model.attn_impl == "fast"
    slow = mac_reference(model, lq, steps=6, order=order)  # "fast" mode, one step at a time
    assert _rel(fast, slow) < 1e-10


def test_outputs_without_a_leading_batch_work_one_step_per_forward() -> None:
    class OddTokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Conv2d(3, 4, 3, padding=1)
            self.seq = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.tanh(self.inp(x))
            n, c, h, w = y.shape
            t = torch.tanh(self.seq(y.flatten(2).permute(2, 0, 1)))  # (L = 25, N, C)
            return t.permute(1, 2, 0).reshape(n, c, h, w)[:, :3] + x

    model = _toy(OddTokens)
    lq = _images(2, 5, 5)
    order = random_orders(2, 5, 5, generator=torch.Generator().manual_seed(13))
    with pytest.warns(RuntimeWarning, match="chunk=1"):
        fast = mask_attribution_conductance(model, lq, steps=5, order=order, chunk=2)
    assert _rel(fast, mac_reference(model, lq, steps=5, order=order)) < 1e-10


def _no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    import ramir.attribution.layout as layout

    def fail(*args, **kwargs):
        raise AssertionError("a model that declares its layout must not be probed")

    monkeypatch.setattr(layout, "not_sample_major", fail)


def test_a_declared_per_sample_model_is_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Declared(TwiceNet):
        per_sample_outputs = True

    _no_probe(monkeypatch)
    model = _toy(Declared)
    lq = _images(2, 8, 8)
    order = random_orders(2, 8, 8, generator=torch.Generator().manual_seed(14))
    fast = mask_attribution_conductance(model, lq, steps=6, order=order, chunk=3)
    assert _rel(fast, mac_reference(model, lq, steps=6, order=order)) < 1e-10


def test_a_model_declaring_mixed_outputs_runs_one_step_per_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Declared(SequenceFirstNet):
        per_sample_outputs = False

    _no_probe(monkeypatch)
    model = _toy(Declared)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(15))
    sizes = []
    model.seq.register_forward_hook(lambda m, i, o: sizes.append(o.shape[1]))
    with pytest.warns(RuntimeWarning, match=r"per_sample_outputs is False.*chunk=1"):
        fast = mask_attribution_conductance(model, lq, steps=6, order=order, chunk=3)
    assert set(sizes) == {2}  # (L, N, C) tokens: N = 2 images, one path step per forward
    assert _rel(fast, mac_reference(model, lq, steps=6, order=order)) < 1e-10


def test_a_declared_attention_switch_is_used_without_probing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Declared(GroupedWindowNet):
        @property
        def per_sample_outputs(self) -> bool:
            return self.attn_impl == "plain"

    _no_probe(monkeypatch)
    model = _toy(Declared)
    lq = _images(2, 6, 6)
    order = random_orders(2, 6, 6, generator=torch.Generator().manual_seed(16))
    seen = []
    model.rows.register_forward_hook(lambda m, i, o: seen.append(model.attn_impl))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = mask_attribution_conductance(model, lq, steps=6, order=order, chunk=4)
    assert set(seen) == {"plain"} and model.attn_impl == "fast"
    assert _rel(fast, mac_reference(model, lq, steps=6, order=order)) < 1e-10


def test_a_non_boolean_declaration_is_an_error() -> None:
    class Declared(TwiceNet):
        per_sample_outputs = "yes"

    with pytest.raises(TypeError, match="per_sample_outputs must be True or False"):
        mask_attribution_conductance(_toy(Declared), _images(1, 8, 8), steps=4, chunk=2)

import math

import pytest
import torch

from ramir.training.config import OptimSection, ScheduleSection
from ramir.training.optim import LRSchedule, build_optimizer, lr_at


def test_warmup_then_cosine_to_eta_min():
    cfg = ScheduleSection(warmup_iter=4, eta_min=1e-6)
    lrs = [lr_at(t, 2e-4, cfg, total_iter=100) for t in range(1, 102)]
    assert lrs[:3] == pytest.approx([2e-4 * t / 4 for t in (1, 2, 3)])
    # BasicSR: after warmup the cosine continues at (t - 1) / period
    assert lrs[3] == pytest.approx(1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 3 / 100)))
    assert lrs[50] == pytest.approx(1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 50 / 100)))
    assert lrs[100] == pytest.approx(1e-6)  # past the period: eta_min
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:], strict=False))


def test_no_warmup_starts_at_base_and_constant_stays():
    assert lr_at(1, 1e-4, ScheduleSection(eta_min=6e-5), 400_000) == pytest.approx(1e-4)
    const = ScheduleSection(type="constant", warmup_iter=2)
    assert [lr_at(t, 1.0, const, 10) for t in (1, 2, 9)] == [0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="1-based"):
        lr_at(0, 1.0, const, 10)


def test_schedule_sets_the_optimizer_and_resumes_from_its_state():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimSection(type="AdamW", lr=1e-3, betas=(0.8, 0.9)))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.8, 0.9)
    sched = LRSchedule(opt, 1e-3, ScheduleSection(warmup_iter=10), 100)
    sched.step(5)
    other = LRSchedule(opt, 1e-3, ScheduleSection(warmup_iter=10), 100)
    opt.param_groups[0]["lr"] = 0.0
    other.load_state_dict(sched.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_no_trainable_parameters_is_a_clear_error():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer([], OptimSection())


def test_adam_is_fused_where_pytorch_has_it_and_agrees_with_the_plain_loop():
    from ramir.training.config import OptimSection

    def run(impl: str) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(5, 3, generator=g)) for _ in range(3)]
        opt = build_optimizer(params, OptimSection(lr=1e-2, impl=impl))
        for _ in range(5):
            for p in params:
                p.grad = torch.sin(p.detach() * 3)
            opt.step()
        return opt, [p.detach() for p in params]

    fused, a = run("auto")
    plain, b = run("for_loop")
    assert fused.defaults["fused"] is True  # PyTorch >= 2.4 fuses Adam on the CPU too
    assert not plain.defaults.get("fused")
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)

import torch

from ramir.training.ema import EMA


def test_ema_update_is_decay_times_ema_plus_one_minus_decay_times_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    ema = EMA(model, decay=0.995)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(w0[k], v) for k, v in ema.state_dict().items())  # starts as a copy

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.update(model)
    w2 = model.state_dict()
    for k, v in ema.state_dict().items():
        e1 = 0.995 * w0[k] + 0.005 * w1[k]
        e2 = 0.995 * e1 + 0.005 * w2[k]
        torch.testing.assert_close(v, e2, rtol=1e-6, atol=1e-7)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training

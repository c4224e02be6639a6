"""Swin window geometry: the fast path's plans against roll + partition, shift masks."""

from __future__ import annotations

import torch

from ramir.models.swin_geometry import shift_attention_mask, window_partition, window_plan


def test_window_plan_is_a_permutation_that_matches_roll_and_partition():
    b, h, w, ws, s = 2, 8, 12, 4, 2
    plan = window_plan(b, h, w, ws, s, torch.device("cpu"))
    n = b * h * w
    assert torch.equal(plan.gather.sort().values, torch.arange(n))
    assert torch.equal(plan.gather[plan.scatter], torch.arange(n))
    tokens = torch.arange(n).view(b, h, w, 1)
    rolled = torch.roll(tokens, shifts=(-s, -s), dims=(1, 2))
    official = window_partition(rolled, ws).reshape(-1, ws * ws)  # (B*nW, N)
    ours = plan.gather.view(-1, ws * ws)
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, official.tolist()))
    # Interior windows need no mask; the others carry the official pattern.
    masks = shift_attention_mask(h, w, ws, s)
    for (start, end), pattern in zip(plan.groups, plan.patterns, strict=True):
        for win in ours[start:end].tolist():
            k = official.tolist().index(win) % masks.shape[0]
            expected = masks[k]
            if pattern is None:
                assert torch.all(expected == 0)
            else:
                assert torch.equal(pattern, expected)
    assert sum(p is None for p in plan.patterns) == 1


def test_shift_attention_mask_values():
    mask = shift_attention_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert torch.all(mask[0] == 0)  # the top-left window holds one region only
    # The bottom-right window mixes 4 regions of 2x2 tokens: each token sees 4 of 16.
    assert torch.all((mask[3] == 0).sum(-1) == 4)

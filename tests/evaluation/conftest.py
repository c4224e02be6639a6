"""Tiny models and checkpoints shared by the evaluation/restore/export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ramir.models import build_model

TINY_SWINIR = dict(
    img_size=32, embed_dim=24, depths=[2, 2], num_heads=[2, 2], window_size=8, mlp_ratio=2
)


@pytest.fixture(scope="session")
def tiny_swinir() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("ram_swinir", **TINY_SWINIR).eval()


@pytest.fixture(scope="session")
def tiny_swinir_ckpt(tmp_path_factory, tiny_swinir) -> Path:
    from ramir.checkpoint import save_model

    return save_model(tiny_swinir, tmp_path_factory.mktemp("ckpt") / "tiny_swinir.safetensors")

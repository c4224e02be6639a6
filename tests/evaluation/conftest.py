"""Tiny models and checkpoints shared by the evaluation/restore/export tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ramir.models import build_model


@pytest.fixture(scope="session")
def tiny_swinir() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("ram_swinir_tiny").eval()


@pytest.fixture(scope="session")
def tiny_swinir_ckpt(tmp_path_factory, tiny_swinir) -> Path:
    from ramir.checkpoint import save_model

    return save_model(tiny_swinir, tmp_path_factory.mktemp("ckpt") / "tiny_swinir.safetensors")

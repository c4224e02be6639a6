"""Fixtures for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import ToyPairs


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the CI machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy_data() -> ToyPairs:
    return ToyPairs()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"

"""Fixtures for the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from training_helpers import ToyPairs


@pytest.fixture
def toy_data() -> ToyPairs:
    return ToyPairs()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"

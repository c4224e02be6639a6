"""The model shipped inside the package: it loads, matches its metadata and restores."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from ramir.checkpoint import load_model, read_metadata
from ramir.cli import main
from ramir.models import count_parameters
from ramir.restore import default_model_path


def test_shipped_checkpoint_loads_and_matches_its_metadata():
    path = default_model_path()
    assert path.stat().st_size < 20 * 2**20  # "a few MB"
    meta = read_metadata(path)
    model = load_model(path)
    assert model.arch_name == meta["arch"]
    assert model.arch_kwargs == meta["arch_kwargs"]
    assert model.normalization.name == meta["model_info"]["normalization"]
    assert not model.training
    # every weight is finite and the model was actually trained (not an initialisation)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert count_parameters(model) > 100_000


def test_restore_with_no_model_argument_uses_the_default(tmp_path):
    photo = tmp_path / "astronaut.png"
    img = skdata.astronaut()[100:260, 120:300]  # 160 x 180, odd-ish crop
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(photo)
    out = tmp_path / "out"
    assert main(["restore", str(photo), "-o", str(out), "-q"]) == 0
    written = sorted(out.iterdir())
    assert len(written) == 1
    restored = np.asarray(Image.open(written[0]))
    assert restored.shape == noisy.shape
    assert np.abs(restored.astype(int) - noisy.astype(int)).mean() > 1.0
    # it denoises: closer to the clean photo than the noisy input is
    err_in = np.abs(noisy.astype(float) - img).mean()
    err_out = np.abs(restored.astype(float) - img).mean()
    assert err_out < err_in


@pytest.mark.parametrize("field", ["arch", "arch_kwargs"])
def test_info_reports_the_default_model(capsys, field):
    assert main(["info", str(default_model_path()), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info[field] == read_metadata(default_model_path())[field]

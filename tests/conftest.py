"""Shared test helpers: the reference weight rule and the official backbone test data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is faster than two, and immune to the
    oversubscription a busy machine (or a test that starts worker processes) causes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def init_reference_weights(model: nn.Module) -> nn.Module:
    """Fill ``model``'s parameters by the rule of docs/method.md#reference-weights, in place.

    Walk the state dict in order, skipping buffers; parameter number ``i`` (0-based,
    counting parameters only) becomes ``randn(shape, seed i) * 0.05``, plus 1.0 when its
    name ends in ``.weight`` and it is 1-D (norm weights). Returns ``model``.
    """
    params = dict(model.named_parameters())
    i = 0
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name not in params:
                continue
            value = torch.randn(tensor.shape, generator=torch.Generator().manual_seed(i)) * 0.05
            if name.endswith(".weight") and tensor.dim() == 1:
                value += 1.0
            params[name].copy_(value)
            i += 1
    return model


@pytest.fixture(scope="session")
def reference_weights() -> Callable[[nn.Module], nn.Module]:
    """The :func:`init_reference_weights` function."""
    return init_reference_weights


@pytest.fixture(scope="session")
def backbone_manifest() -> dict:
    """Official state-dict keys, shapes and constructor args (``backbone_manifest.json``)."""
    return json.loads((DATA_DIR / "backbone_manifest.json").read_text())


@pytest.fixture(scope="session")
def backbone_vectors() -> dict[str, np.ndarray]:
    """Reference inputs/outputs of the official tiny backbones (``backbone_vectors.npz``)."""
    with np.load(DATA_DIR / "backbone_vectors.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture
def tiny_corpus(tmp_path, monkeypatch):
    """A photo corpus 'already fetched': a small manifest over crops of scikit-image's
    photos, prepared views written into ``$RAMIR_CACHE/photos``. Returns the manifest."""
    from PIL import Image
    from skimage import data as skdata

    from ramir.corpus import manifest as manifest_module
    from ramir.corpus import views as corpus_views
    from ramir.corpus.manifest import Manifest, PackageSource, Photo

    photos = {
        "train": {
            "astronaut": skdata.astronaut(),
            "rocket": skdata.rocket(),
            "coffee": skdata.coffee(),
        },
        "eval": {"chelsea": skdata.chelsea(), "motorcycle": skdata.stereo_motorcycle()[0]},
    }
    pkgs = {
        split: PackageSource(f"{split}pkg", "debian", "1", "https://x/p.deb", "0" * 64, 1, "CC0")
        for split in photos
    }
    entries = []
    monkeypatch.setenv("RAMIR_CACHE", str(tmp_path / "cache"))
    for split, items in photos.items():
        for name, img in items.items():
            img = np.ascontiguousarray(img[:200, :240])
            h, w = img.shape[:2]
            entries.append(
                Photo(name, split, f"{split}pkg", f"{name}.png", name * 4, 1, w, h, "CC0")
            )
            views = ["train"] if split == "train" else ["eval", "eval_native"]
            for view in views:
                folder = corpus_views.view_dir(view)
                folder.mkdir(parents=True, exist_ok=True)
                out = img if view == "train" else img[:96, :96]
                suffix = "_x1" if view == "train" else ""
                Image.fromarray(out).save(folder / f"{name}{suffix}.png")
    manifest = Manifest({p.name: p for p in pkgs.values()}, entries)
    # where the callers look it up: the CLI and the protocol (ramir.corpus.manifest),
    # the photo_corpus layout (through ramir.corpus.views.view_files)
    monkeypatch.setattr(manifest_module, "load_manifest", lambda path=None: manifest)
    monkeypatch.setattr(corpus_views, "load_manifest", lambda path=None: manifest)
    return manifest


# ----------------------------------------------------------------------------- RAM++ DINO

TINY_RFR = dict(dim=8, dino_dim=16, gate_hidden=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)
"""A RestormerRFR small enough for tests, taking 16-channel DINOv2 features."""


@pytest.fixture(scope="session")
def tiny_dino_dir(tmp_path_factory) -> Path:
    """A Hugging Face DINOv2 folder built here (40 layers, as the features read hidden
    states up to 39; width 16, random seeded weights) with DINOv2's preprocessor file:
    what ``--dino DIR`` takes, nothing downloaded."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("dinov2_tiny")
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=16, num_hidden_layers=40, num_attention_heads=2, mlp_ratio=2,
        patch_size=14, image_size=56, layerscale_value=1.0, use_swiglu_ffn=False,
    )  # fmt: skip
    transformers.Dinov2Model(config).eval().save_pretrained(folder)
    processor = {
        "do_normalize": True, "do_rescale": True, "do_resize": True, "do_center_crop": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
        "image_processor_type": "BitImageProcessor", "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": 256},
        "crop_size": {"height": 224, "width": 224},
    }  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


@pytest.fixture(scope="session")
def tiny_rfr_release(tmp_path_factory) -> Path:
    """A tiny RAM++ RestormerRFR in the release's file format (``{'params': ...}``)."""
    from ramir.models import build_model

    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("rfr") / "RestormerRFR.pth"
    torch.save({"params": build_model("restormer_rfr", **TINY_RFR).state_dict()}, path)
    return path

"""Classical baselines: each method improves its task on a real photo, the rows of
``ramir evaluate`` (tuned settings, not-run sets, timing, resume), a missing optional
library skips its row with a note, and the grid search picks the best setting."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage import data

from ramir.cli import main
from ramir.config import ConfigError
from ramir.data.write import write_image
from ramir.degradations.blur import gaussian_blur
from ramir.errors import ResourceError
from ramir.evaluation.benchmark import INPUT_ROW
from ramir.evaluation.classical import (
    METHODS,
    restore_classical,
    restore_tensor,
    unavailable,
)
from ramir.evaluation.classical_settings import settings_per_set, tuned_settings_path
from ramir.evaluation.classical_tuning import tune
from ramir.evaluation.config import load_eval_config
from ramir.evaluation.metrics import psnr

ROOT = Path(__file__).resolve().parents[2]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs(module: str):
    return pytest.mark.skipif(not _has(module), reason=f"needs {module}: ramir[classical]")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 64x64 crop of a real photo (scikit-image's astronaut: face and fabric)."""
    return data.astronaut()[120:184, 180:244].astype(np.float32) / 255.0


def _noisy(img: np.ndarray, sigma: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(img + rng.normal(0, sigma / 255.0, img.shape), 0, 1).astype(np.float32)


# method, settings, degradation ("noise": sigma 25, "blur": Gaussian sigma 1), least gain (dB)
CASES = [
    pytest.param("bm3d", {"sigma": 25.0}, "noise", 6.0, marks=needs("bm3d")),
    pytest.param("bm3d_est", {}, "noise", 6.0, marks=needs("bm3d")),
    pytest.param("nlm", {"h": 10.0}, "noise", 3.0, marks=needs("cv2")),
    pytest.param("wavelet", {}, "noise", 3.0, marks=needs("pywt")),
    ("tv", {"weight": 0.08}, "noise", 3.0),
    ("unsharp", {"radius": 1.0, "amount": 1.0}, "blur", 1.0),
    ("wiener", {"psf_sigma": 1.0, "balance": 0.01}, "blur", 1.0),
]


@pytest.mark.parametrize(("method", "settings", "task", "least"), CASES)
def test_each_method_improves_its_task_on_a_photo(photo, method, settings, task, least):
    lq = _noisy(photo) if task == "noise" else gaussian_blur(photo, None, sigma=1.0)
    out = restore_classical(lq, method, settings)
    assert out.shape == photo.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    gain = psnr(out, photo) - psnr(lq, photo)
    assert gain > least, f"{method}: {gain:+.2f} dB"


def test_tensor_wrapper_matches_the_numpy_call(photo):
    lq = _noisy(photo)
    x = torch.from_numpy(lq).permute(2, 0, 1)
    out = restore_tensor(torch.stack([x, x]), "tv", {"weight": 0.05})
    assert out.shape == (2, 3, 64, 64)
    ref = restore_classical(lq, "tv", {"weight": 0.05})
    assert torch.equal(out[1].permute(1, 2, 0), torch.from_numpy(ref))
    assert restore_tensor(x, "tv", {"weight": 0.05}).shape == x.shape


def test_a_missing_library_says_what_to_install(monkeypatch, photo):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d now raises ImportError
    why = unavailable("bm3d")
    assert why is not None and "bm3d" in why and "pip install 'ramir[classical]'" in why
    with pytest.raises(ResourceError, match=r"ramir\[classical\]"):
        restore_classical(photo, "bm3d")
    assert unavailable("tv") is None  # scikit-image alone


def test_unknown_setting_is_an_error(photo):
    with pytest.raises(ValueError, match="no setting.*strength.*settings: weight"):
        restore_classical(photo, "tv", {"strength": 1})


def test_tuning_picks_the_best_setting_deterministically(photo):
    noisy = [(_noisy(photo), photo)]
    blurred = [(gaussian_blur(photo, None, sigma=1.5).astype(np.float32), photo)]
    grid = {"weight": (0.001, 0.08, 2.0)}
    res = tune("tv", {"noise": noisy, "blur": blurred}, grid)
    assert [p["weight"] for p in res.points] == [0.001, 0.08, 2.0]
    means = {t: [res.mean_gain(t, i) for i in range(3)] for t in res.gains}
    settings, gain, worst = res.best("noise")
    assert settings == {"weight": 0.08} and gain == max(means["noise"]) == worst
    assert res.best("blur")[0] == {"weight": 0.001}  # TV cannot sharpen: the mildest
    blind, mean = res.best_all_tasks()
    assert mean == max((a + b) / 2 for a, b in zip(means["noise"], means["blur"], strict=True))
    assert blind == {"weight": 0.08}
    again = tune("tv", {"noise": noisy, "blur": blurred}, grid)
    assert again.gains == res.gains  # the same inputs give the same choice
    tie = tune("tv", {"noise": noisy}, {"weight": (0.08, 0.08)})
    assert tie.best("noise")[0] == {"weight": 0.08} and tie.points[0] == tie.points[1]


def test_settings_per_set_file_mapping_and_defaults(tmp_path):
    sets = {
        "clean": ("identity", {}),
        "noise": ("gaussian_noise", {"sigma": 25}),
        "mixed": ("chain", {"steps": [{"name": "gaussian_blur"}, {"name": "jpeg"}]}),
        "haze": ("haze", {}),
    }
    plain = settings_per_set("tv", None, sets)
    assert plain == {"clean": {"weight": 0.08}, "noise": {"weight": 0.08},
                     "mixed": {"weight": 0.08}, "haze": None}  # fmt: skip
    given = settings_per_set("tv", {"noise": {"weight": 0.1}, "*": {"weight": 0.01}}, sets)
    assert given["noise"] == {"weight": 0.1} and given["haze"] == {"weight": 0.01}
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"methods": {"tv": {
        "tasks": {"noise": {"settings": {"weight": 0.12}}},
        "all_tasks": {"settings": {"weight": 0.02}}}}}))  # fmt: skip
    tuned = settings_per_set("tv", str(f), sets)
    assert tuned == {"clean": {"weight": 0.02}, "noise": {"weight": 0.12},
                     "mixed": None, "haze": None}  # fmt: skip
    with pytest.raises(ResourceError, match="no tuned settings for method 'nlm'"):
        settings_per_set("nlm", str(f), sets)
    with pytest.raises(ResourceError, match="not found: nope.yaml"):
        settings_per_set("tv", str(tmp_path / "nope.yaml"), sets)


@pytest.fixture()
def eval_setup(tmp_path, tiny_swinir_ckpt):
    clean = tmp_path / "clean"
    for i, (top, left) in enumerate([(100, 150), (300, 200)]):
        img = data.astronaut()[top : top + 40, left : left + 48]
        write_image(clean / f"im{i}.png", torch.from_numpy(img).permute(2, 0, 1) / 255.0)
    test = [
        {"name": "clean", "layout": "clean_folder", "root": str(clean),
         "degradation": "identity"},
        {"name": "noise", "layout": "clean_folder", "root": str(clean),
         "degradation": "gaussian_noise", "params": {"sigma": 25.0}},
        {"name": "blur", "layout": "clean_folder", "root": str(clean),
         "degradation": "gaussian_blur", "params": {"sigma": 1.5}},
    ]  # fmt: skip
    tuned = tmp_path / "classical_settings.yaml"
    tuned.write_text(yaml.safe_dump({"methods": {"unsharp": {
        "tasks": {"blur": {"settings": {"radius": 1.0, "amount": 1.5}}},
        "all_tasks": {"settings": {"radius": 1.0, "amount": 0.25}}}}}))  # fmt: skip
    cfg = {
        "name": "classical",
        "output_dir": str(tmp_path / "runs"),
        "models": [
            {"name": "swinir", "checkpoint": str(tiny_swinir_ckpt)},
            {
                "name": "tv",
                "classical": "tv",
                "settings": {"*": {"weight": 0.08}},
                "sets": ["noise"],
            },
            {"name": "unsharp", "classical": "unsharp", "settings": str(tuned), "every": 2},
            {"name": "bm3d", "classical": "bm3d", "settings": {"*": {"sigma": 25.0}}},
        ],
        "data": {"test": test, "seed": 0},
        "input_row": True,
        "device": "cpu",
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "runs" / "classical"


def test_evaluate_classical_rows_beside_a_model(eval_setup, capsys, monkeypatch):
    cfg_path, run = eval_setup
    monkeypatch.setitem(sys.modules, "bm3d", None)  # the extra is absent: bm3d is skipped
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 0
    out = capsys.readouterr().out
    # swinir 6 + tv on noise 2 + unsharp on the first image of blur and clean 2 (bm3d: none)
    assert "10 image(s) restored" in out
    table = json.loads((run / "table.json").read_text())[0]
    rows = {r["label"]: r for r in table["rows"]}
    assert list(rows) == [INPUT_ROW, "swinir", "tv", "unsharp", "bm3d"]
    cells = {k: r["cells"] for k, r in rows.items()}
    assert set(cells["tv"]) == {"noise"} and set(cells["unsharp"]) == {"clean", "blur"}
    assert cells["unsharp"]["blur"]["n_images"] == 1 and cells["tv"]["noise"]["n_images"] == 2
    assert cells["bm3d"] == {} and rows["bm3d"]["seconds_per_image"] is None
    assert cells["tv"]["noise"]["psnr"] > cells[INPUT_ROW]["noise"]["psnr"] + 2
    assert cells["unsharp"]["blur"]["psnr"] > cells[INPUT_ROW]["blur"]["psnr"] + 0.5
    assert 25 < cells["unsharp"]["clean"]["psnr"] < 60  # the mild all-task setting
    assert rows["tv"]["seconds_per_image"] > 0 and rows["swinir"]["seconds_per_image"] > 0
    assert rows["tv"]["source"] == "classical: tv"
    notes = " ".join(table["notes"])
    assert "bm3d: skipped" in notes and "pip install 'ramir[classical]'" in notes
    assert "tv = scikit-image total-variation denoising (Chambolle), on noise;" in notes
    assert (
        "unsharp = unsharp masking (scikit-image unsharp_mask), on clean, blur (every 2nd" in notes
    )
    md = (run / "table.md").read_text()
    assert "s / image" in md and "| bm3d | – | – | – |" in md
    gains = (run / "gains.md").read_text()
    assert "| unsharp |" in gains
    # rerun: everything comes from the caches; a changed setting is not mixed in
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 0
    assert "0 image(s) restored, 10 taken from earlier runs" in capsys.readouterr().out
    raw = yaml.safe_load(cfg_path.read_text())
    raw["models"][1]["settings"]["*"]["weight"] = 0.2
    cfg_path.write_text(yaml.safe_dump(raw))
    assert main(["evaluate", "-c", str(cfg_path), "-q"]) == 1
    assert "different checkpoint, inference setting" in capsys.readouterr().err


def test_classical_row_config_errors(tmp_path):
    def load(models):
        path = tmp_path / "e.yaml"
        path.write_text(yaml.safe_dump({"models": models, "data": {"test": [
            {"name": "n", "layout": "clean_folder", "root": str(tmp_path),
             "degradation": "identity"}]}}))  # fmt: skip
        return load_eval_config(path)

    with pytest.raises(ConfigError, match="unknown classical method 'bm4d'.*bm3d, bm3d_est"):
        load([{"name": "x", "classical": "bm4d"}])
    with pytest.raises(ConfigError, match="either checkpoint or classical"):
        load([{"name": "x", "classical": "tv", "checkpoint": "m.safetensors"}])
    with pytest.raises(ConfigError, match="give a checkpoint"):
        load([{"name": "x"}])
    with pytest.raises(ConfigError, match=r"sets must name test sets \(n\); got \['m'\]"):
        load([{"name": "x", "classical": "tv", "sets": ["m"]}])
    with pytest.raises(ConfigError, match="settings are for classical rows"):
        load([{"name": "x", "checkpoint": "m.safetensors", "settings": {"*": {}}}])
    assert load([{"name": "x", "classical": "tv"}]).models[0].classical == "tv"


def test_shipped_settings_cover_every_method_and_the_test_config_lists_them():
    tuned = yaml.safe_load(tuned_settings_path().read_text())
    assert set(tuned["methods"]) == set(METHODS)
    assert tuned["protocol"]["data"] == "configs/data/photos_val.yaml"
    cfg = load_eval_config(ROOT / "configs/eval/photos_test_classical.yaml")
    assert {m.classical for m in cfg.models} == {None, *METHODS}
    assert all(s.options.get("part") == "test" for s in cfg.data.test)
    for m in cfg.models:
        if m.classical is not None:
            assert m.settings == "tuned"


def test_the_classical_test_config_is_the_test_part_in_256_crops():
    """photos_test_classical.yaml: the sets of configs/data/photos_test.yaml, each in the
    256x256 centre crop the settings were chosen on."""
    part = yaml.safe_load((ROOT / "configs/data/photos_test.yaml").read_text())["test"]
    ours = yaml.safe_load((ROOT / "configs/eval/photos_test_classical.yaml").read_text())
    assert ours["data"]["test"] == [{**spec, "center_crop": 256} for spec in part]


@needs("bm3d")
def test_bm3d_keeps_a_flat_photo_as_it_is():
    """BM3D normalises each colour channel by its range: a flat crop (sky, a white wall)
    would come back NaN; the input is kept there instead."""
    flat = np.full((32, 32, 3), 0.8, np.float32)
    flat[..., 0] = 0.5
    for method in ("bm3d", "bm3d_est"):
        out = restore_classical(flat, method)
        assert np.isfinite(out).all() and np.array_equal(out, flat), method


@needs("bm3d")
def test_bm3d_denoises_a_grey_photo():
    """A grey photo (three equal channels, e.g. JPEG of a black-and-white scan) has
    constant chroma, which bm3d_rgb cannot normalise: BM3D runs on its one channel."""
    grey = data.camera()[200:264, 200:264].astype(np.float32) / 255.0
    clean = np.repeat(grey[..., None], 3, axis=2)
    rng = np.random.default_rng(0)
    noisy = np.clip(grey + rng.normal(0, 25 / 255.0, grey.shape), 0, 1).astype(np.float32)
    noisy = np.repeat(noisy[..., None], 3, axis=2)
    for method, settings in (("bm3d", {"sigma": 25.0}), ("bm3d_est", {})):
        out = restore_classical(noisy, method, settings)
        assert np.array_equal(out[..., 0], out[..., 2])
        assert psnr(out, clean) - psnr(noisy, clean) > 6.0, method

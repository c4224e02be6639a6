"""Dataset readers against small folders in the published layouts (incl. broken pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ramir.data.datasets import DatasetError, layout_options, layouts, scan
from ramir.data.photos import TEST_PHOTOS, TRAIN_PHOTOS, materialize_sample_photos, sample_photos


def _img(path: Path, value: int = 100, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)
    return path


def _names(s) -> list[tuple[str, str | None]]:
    return [(p.gt.name, p.lq.name if p.lq else None) for p in s.pairs]


def test_registry_and_options():
    assert set(layouts()) == {
        "paired",
        "reside_ots",
        "sots_outdoor",
        "rain",
        "gopro",
        "lol_v1",
        "lol_v2",
        "cbsd68",
        "clean_folder",
        "skimage_photos",
        "photo_corpus",
    }
    assert layout_options("lol_v2") == {"subset": "both", "split": "train"}
    with pytest.raises(KeyError, match="choose one of"):
        scan("reside", ".")
    with pytest.raises(ValueError, match="valid options: subset, split"):
        scan("lol_v2", ".", subst="real")


def test_missing_root_is_a_problem(tmp_path):
    s = scan("rain", tmp_path / "nowhere")
    assert not s.ok and "nowhere" in s.problems[0]
    with pytest.raises(DatasetError, match="nowhere"):
        s.require("rain100l")


def test_reside_ots(tmp_path):
    root = tmp_path / "OTS_ALPHA"
    for n in ("0001_0.8_0.2.jpg", "0001_1_0.04.jpg", "0002_0.9_0.1.jpg"):
        _img(root / "haze" / "OTS" / "part1" / n)
    _img(root / "haze" / "OTS" / "part2" / "0004_0.8_0.2.jpg")  # broken: no clear image
    for n in ("0001.jpg", "0002.png", "0003.jpg"):  # 0003 unused: fine for OTS
        _img(root / "clear" / "clear_images" / n)
    s = scan("reside_ots", root)
    assert sorted(_names(s)) == [
        ("0001.jpg", "0001_0.8_0.2.jpg"),
        ("0001.jpg", "0001_1_0.04.jpg"),
        ("0002.png", "0002_0.9_0.1.jpg"),
    ]
    assert {p.key for p in s.pairs} == {
        "part1/0001_0.8_0.2",
        "part1/0001_1_0.04",
        "part1/0002_0.9_0.1",
    }
    assert len(s.problems) == 1 and "0004_0.8_0.2.jpg" in s.problems[0]
    assert "0004" in s.problems[0] and "clear_images" in s.problems[0]


def test_sots_outdoor(tmp_path):
    root = tmp_path / "SOTS" / "outdoor"
    _img(root / "hazy" / "0001_0.8_0.2.jpg")
    _img(root / "hazy" / "0003_0.95_0.16.jpg")
    _img(root / "gt" / "0001.png")
    _img(root / "gt" / "0003.png")
    _img(root / "gt" / "0005.png")  # broken: a clean image without its hazy one
    s = scan("sots_outdoor", root)
    assert _names(s) == [("0001.png", "0001_0.8_0.2.jpg"), ("0003.png", "0003_0.95_0.16.jpg")]
    assert len(s.problems) == 1 and "0005.png" in s.problems[0]
    # the reference's "clear/" name works too
    root2 = tmp_path / "sots2"
    _img(root2 / "hazy" / "0001_0.8_0.2.jpg")
    _img(root2 / "clear" / "0001.png")
    assert scan("sots_outdoor", root2).ok


@pytest.mark.parametrize(
    "name", ["train", "Rain100L", "Rain100H", "Test100", "Test1200", "Test2800"]
)
def test_rain_input_target(tmp_path, name):
    root = tmp_path / "rain13k" / name
    for i in (1, 2):
        _img(root / "input" / f"{i}.png")
        _img(root / "target" / f"{i}.png")
    _img(root / "input" / "3.png")  # broken: no target
    s = scan("rain", root)
    assert _names(s) == [("1.png", "1.png"), ("2.png", "2.png")]
    assert len(s.problems) == 1 and "3.png" in s.problems[0] and "target" in s.problems[0]


def test_rain_promptir_naming(tmp_path):
    root = tmp_path / "Rain100L"
    _img(root / "rainy" / "rain-1.png")
    _img(root / "gt" / "norain-1.png")
    _img(root / "rainy" / "rain-12.png")
    _img(root / "gt" / "norain-12.png")
    s = scan("rain", root)
    assert s.ok and _names(s) == [("norain-1.png", "rain-1.png"), ("norain-12.png", "rain-12.png")]


def test_gopro(tmp_path):
    root = tmp_path / "GOPRO_Large"
    seq = root / "train" / "GOPR0372_07_00"
    for n in ("000047.png", "000048.png"):
        _img(seq / "blur" / n)
        _img(seq / "blur_gamma" / n)
        _img(seq / "sharp" / n)
    seq2 = root / "train" / "GOPR0374_11_00"
    _img(seq2 / "blur" / "000001.png")  # broken: sequence without sharp/
    s = scan("gopro", root, split="train")
    assert _names(s) == [("000047.png", "000047.png"), ("000048.png", "000048.png")]
    assert s.pairs[0].key == "GOPR0372_07_00/000047"
    assert len(s.problems) == 1 and "GOPR0374_11_00" in s.problems[0] and "sharp" in s.problems[0]
    # root pointing directly at the split folder
    assert len(scan("gopro", root / "train").pairs) == 2


def test_lol_v1(tmp_path):
    root = tmp_path / "LOLdataset"
    for i in (1, 2, 3):
        _img(root / "our485" / "low" / f"{i}.png", 10)
        _img(root / "our485" / "high" / f"{i}.png", 200)
    _img(root / "eval15" / "low" / "1.png", 10)
    _img(root / "eval15" / "high" / "1.png", 200)
    _img(root / "eval15" / "low" / "779.png", 10)  # broken
    train = scan("lol_v1", root, split="train")
    assert train.ok and len(train.pairs) == 3
    test = scan("lol_v1", root, split="test")
    assert len(test.pairs) == 1 and len(test.problems) == 1 and "779.png" in test.problems[0]
    # a root holding low/ + high/ directly
    assert scan("lol_v1", root / "our485").ok
    assert "our485" in scan("lol_v1", tmp_path / "LOLdataset" / "eval15" / "low").problems[0]


def test_lol_v2(tmp_path):
    root = tmp_path / "LOL-v2"
    _img(root / "Real_captured" / "Train" / "Low" / "low00001.png")
    _img(root / "Real_captured" / "Train" / "Normal" / "normal00001.png")
    _img(root / "Real_captured" / "Test" / "Low" / "low00690.png")
    _img(root / "Real_captured" / "Test" / "Normal" / "normal00690.png")
    _img(root / "Synthetic" / "Train" / "Low" / "r000da54ft.png")
    _img(root / "Synthetic" / "Train" / "Normal" / "r000da54ft.png")
    _img(root / "Synthetic" / "Train" / "Low" / "r0a0b1c2d3.png")  # broken
    both = scan("lol_v2", root)
    assert _names(both) == [
        ("normal00001.png", "low00001.png"),
        ("r000da54ft.png", "r000da54ft.png"),
    ]
    assert len(both.problems) == 1 and "r0a0b1c2d3.png" in both.problems[0]
    assert scan("lol_v2", root, subset="real").ok
    real_test = scan("lol_v2", root, subset="real", split="test")
    assert _names(real_test) == [("normal00690.png", "low00690.png")]
    # the synthetic part has no Test folder
    syn_test = scan("lol_v2", root, subset="synthetic", split="test")
    assert not syn_test.pairs and "Test" in syn_test.problems[0]


def test_cbsd68(tmp_path):
    root = tmp_path / "CBSD68"
    inner = root / "CBSD68"  # the published archive nests the folders
    for i in range(3):
        _img(inner / "original_png" / f"{i:04d}.png")
        _img(inner / "noisy25" / f"{i:04d}.png")
    _img(inner / "noisy25" / "0099.png")  # broken: noisy without clean
    s = scan("cbsd68", root, sigma=25)
    assert len(s.pairs) == 3 and s.pairs[0].lq.parent.name == "noisy25"
    assert len(s.problems) == 1 and "0099.png" in s.problems[0]
    missing = scan("cbsd68", root, sigma=50)
    assert any("noisy50" in p and "generate" in p for p in missing.problems)
    gen = scan("cbsd68", root, sigma=50, generate=True)
    assert gen.ok and all(p.lq is None for p in gen.pairs)
    assert gen.degradation == ("gaussian_noise", {"sigma": 50.0, "quantize": "trunc"})


def test_clean_folder(tmp_path):
    root = tmp_path / "LSDIR"
    _img(root / "0001000" / "0000001.png")
    _img(root / "0001000" / "0000002.jpg")
    _img(root / "0002000" / "0001001.png")
    (root / "notes.txt").write_text("not an image")
    s = scan("clean_folder", root)
    assert s.ok and len(s.pairs) == 3 and all(p.lq is None for p in s.pairs)
    assert s.pairs[0].key == "0001000/0000001"
    assert len(scan("clean_folder", root, recursive=False).pairs) == 0
    assert "no images" in scan("clean_folder", root, recursive=False).problems[0]


def test_paired_by_stem(tmp_path):
    root = tmp_path / "mine"
    _img(root / "lq" / "a.jpg")
    _img(root / "gt" / "a.png")
    _img(root / "lq" / "b.png")
    _img(root / "gt" / "b.png")
    _img(root / "gt" / "b.jpg")  # ambiguous
    _img(root / "lq" / "c.png")  # unmatched
    s = scan("paired", root)
    assert ("a.png", "a.jpg") in _names(s)
    assert any("ambiguous" in p for p in s.problems)
    assert any("c.png" in p for p in s.problems)
    assert any("missing degraded" in p for p in scan("paired", root, lq_dir="input").problems)


def test_bundled_photos_split(tmp_path):
    train, test = sample_photos("train"), sample_photos("test")
    assert len(train) == len(TRAIN_PHOTOS) >= 10 and len(test) == len(TEST_PHOTOS) >= 3
    assert not {p.name for p in train} & {p.name for p in test}
    s = scan("skimage_photos", "", split="test")
    assert s.ok and [p.key for p in s.pairs] == ["chelsea", "coffee", "camera"]
    with pytest.raises(ValueError, match="split"):
        sample_photos("val")
    out = materialize_sample_photos(tmp_path / "photos", "test")
    assert [p.name for p in out] == ["chelsea.png", "coffee.png", "camera.png"]
    assert scan("clean_folder", tmp_path / "photos").ok


def test_photo_sources_add_training_photos_only(tmp_path, monkeypatch):
    from ramir.data import photos

    every = ["skimage", "matplotlib", "sklearn"]
    train = sample_photos("train", every)
    names = [p.stem for p in train]
    assert names[: len(TRAIN_PHOTOS)] == [p.stem for p in sample_photos("train")]
    assert names[len(TRAIN_PHOTOS) :] == ["grace_hopper", "china", "flower"]
    # The held-out photos never change with the sources, and never leak into training.
    assert sample_photos("test", every) == sample_photos("test")
    assert not set(names) & {p.stem for p in sample_photos("test")}
    assert [p.stem for p in sample_photos("train", ["sklearn"])] == ["china", "flower"]
    # Real colour photos, readable like any other.
    from ramir.data.read import read_image

    img = read_image(train[-1])
    assert img.rgb.shape[0] == 3 and min(img.rgb.shape[1:]) >= 400  # (3, H, W)
    assert (img.rgb[0] - img.rgb[1]).abs().mean() > 0.01  # colour, not gray
    s = scan("skimage_photos", "", sources=["skimage", "sklearn"])
    assert s.ok and [p.key for p in s.pairs][-2:] == ["china", "flower"]
    with pytest.raises(ValueError, match="unknown photo source.*'flickr'.*choose from"):
        sample_photos("train", ["skimage", "flickr"])
    # A missing package says what to install.
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install scikit-learn"):
        sample_photos("train", ["sklearn"])
    bad = scan("skimage_photos", "", sources=["sklearn"])
    assert not bad.ok and "pip install scikit-learn" in bad.problems[0]


def test_paper_protocols_quantize_noise_like_the_release():
    """The release stores noisy images with astype(uint8) (truncation) in every protocol;
    the paper configs do the same, for training and for synthesised test noise."""
    from pathlib import Path

    from ramir.data.config import load_data_config

    configs = Path(__file__).resolve().parents[1] / "configs" / "data"
    for name in ("3task", "5task", "7task"):
        cfg = load_data_config(configs / f"{name}.yaml")
        noise = [d for d in cfg.datasets if d.degradation == "gaussian_noise"]
        assert noise and all(d.params.get("quantize") == "trunc" for d in noise), name

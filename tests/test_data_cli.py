"""``ramir data check`` and ``ramir data photos``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ramir.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)


def _write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        f"root_dir: {tmp_path}\n"
        "datasets:\n"
        "  - {name: rain, layout: rain, root: Rain100L}\n"
        "  - {name: photos, layout: clean_folder, root: photos, degradation: jpeg}\n"
        "test:\n"
        "  - {name: sots, layout: sots_outdoor, root: SOTS/outdoor}\n"
    )
    return cfg


def test_check_reports_pairs_and_problems(tmp_path, capsys):
    for i in (1, 2):
        _img(tmp_path / "Rain100L" / "input" / f"{i}.png")
        _img(tmp_path / "Rain100L" / "target" / f"{i}.png")
    _img(tmp_path / "Rain100L" / "input" / "3.png")  # unmatched
    _img(tmp_path / "photos" / "a.png")
    cfg = _write_config(tmp_path)  # SOTS missing entirely
    rc = main(["data", "check", "-c", str(cfg)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "rain" in out and "2 pairs" in out and "3.png" in out
    assert "photos" in out and "1 pairs (1 synthesised)" in out
    assert "sots" in out and "SOTS/outdoor" in out and "not found" in out
    assert "problem(s) found" in out


def test_check_ok_exits_zero(tmp_path, capsys):
    _img(tmp_path / "Rain100L" / "input" / "1.png")
    _img(tmp_path / "Rain100L" / "target" / "1.png")
    _img(tmp_path / "photos" / "a.png")
    _img(tmp_path / "SOTS" / "outdoor" / "hazy" / "0001_0.8_0.2.jpg")
    _img(tmp_path / "SOTS" / "outdoor" / "gt" / "0001.png")
    assert main(["data", "check", "-c", str(_write_config(tmp_path))]) == 0
    assert "all datasets OK" in capsys.readouterr().out


def test_check_finds_pairs_of_different_sizes(tmp_path, capsys):
    _img(tmp_path / "Rain100L" / "input" / "1.png")
    (tmp_path / "Rain100L" / "target").mkdir(parents=True)
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tmp_path / "Rain100L" / "target" / "1.png")
    _img(tmp_path / "photos" / "a.png")
    _img(tmp_path / "SOTS" / "outdoor" / "hazy" / "0001_0.8_0.2.jpg")
    _img(tmp_path / "SOTS" / "outdoor" / "gt" / "0001.png")
    assert main(["data", "check", "-c", str(_write_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "degraded image is 8x8, clean image 8x9" in out and "on_size_mismatch: crop" in out


def test_check_overrides_and_bad_config(tmp_path, capsys):
    photos = tmp_path / "mine"
    _img(photos / "x.png")
    rc = main(
        [
            "data",
            "check",
            "-c",
            str(CONFIGS / "synthetic7.yaml"),
            "--set",
            f"clean_root={photos}",
            "--set",
            f"clean_test_root={photos}",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and str(photos) in out and "1 pairs" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  - {name: x, layout: fog}\n")
    assert main(["data", "check", "-c", str(bad)]) == 1
    assert "unknown layout" in capsys.readouterr().err


def test_photos_command(tmp_path, capsys):
    assert main(["data", "photos", "-o", str(tmp_path / "p"), "--split", "test"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "camera.png",
        "chelsea.png",
        "coffee.png",
    ]


def test_data_photos_with_extra_sources(tmp_path, capsys):
    rc = main(["data", "photos", "-o", str(tmp_path / "p"), "--sources", "matplotlib", "sklearn"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "china.png",
        "flower.png",
        "grace_hopper.png",
    ]
    capsys.readouterr()
    assert main(["data", "photos", "-o", str(tmp_path / "q"), "--sources", "flickr"]) == 1
    err = capsys.readouterr().err
    assert "unknown photo source(s) 'flickr'; choose from skimage, matplotlib, sklearn" in err
    assert not (tmp_path / "q").exists()

"""``ramir data check`` and ``ramir data photos``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ramir.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"


def _img(path: Path, size: tuple[int, int] = (64, 64)) -> None:
    """An image of ``size`` (height, width): 64 x 64 is the default patch_size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(path)


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
    _img(tmp_path / "Rain100L" / "target" / "1.png", (65, 64))
    _img(tmp_path / "photos" / "a.png")
    _img(tmp_path / "SOTS" / "outdoor" / "hazy" / "0001_0.8_0.2.jpg")
    _img(tmp_path / "SOTS" / "outdoor" / "gt" / "0001.png")
    assert main(["data", "check", "-c", str(_write_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "degraded image is 64x64, clean image 64x65" in out and "on_size_mismatch: crop" in out


def _ok_layout(tmp_path: Path) -> Path:
    _img(tmp_path / "Rain100L" / "input" / "1.png")
    _img(tmp_path / "Rain100L" / "target" / "1.png")
    _img(tmp_path / "photos" / "a.png")
    _img(tmp_path / "SOTS" / "outdoor" / "hazy" / "0001_0.8_0.2.jpg")
    _img(tmp_path / "SOTS" / "outdoor" / "gt" / "0001.png")
    return _write_config(tmp_path)


def test_check_opens_every_image_and_reports_the_broken_ones(tmp_path, capsys):
    cfg = _ok_layout(tmp_path)
    photos = tmp_path / "photos"
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.jpg").write_bytes(b"not a JPEG at all")
    _img(photos / "cut.png", (200, 200))
    data = (photos / "cut.png").read_bytes()
    (photos / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    _img(photos / "small.png", (40, 300))  # under patch_size 64: training stops on it
    _img(tmp_path / "SOTS" / "outdoor" / "hazy" / "0002_0.8_0.2.jpg", (20, 20))
    _img(tmp_path / "SOTS" / "outdoor" / "gt" / "0002.png", (20, 20))  # fine for a test set
    assert main(["data", "check", "-c", str(cfg), "-q"]) == 1
    out = capsys.readouterr().out
    assert f"cannot read image {photos / 'empty.png'}: the file is empty (0 bytes)" in out
    assert f"cannot read image {photos / 'notes.jpg'}" in out
    assert f"cannot read image {photos / 'cut.png'}" in out
    assert (
        f"{photos / 'small.png'} is 300x40 pixels, smaller than patch_size 64: training "
        "would stop on it (remove it, or lower patch_size)"
    ) in out
    assert "photos" in out and "4 PROBLEM(S)" in out and "4 problem(s) found" in out
    assert "sots" in out and "0002" not in out  # small test images are fine
    assert "11 image file(s) opened (decoded)" in out
    # headers only: faster, and blind to the cut pixels
    assert main(["data", "check", "-c", str(cfg), "--headers-only"]) == 1
    out = capsys.readouterr().out
    assert "empty (0 bytes)" in out and "notes.jpg" in out and "small.png" in out
    assert "cut.png" not in out and "3 problem(s) found" in out
    assert "(header read)" in out
    assert main(["data", "check", "-c", str(cfg), "--set", "patch_size=32"]) == 1
    assert "small.png" not in capsys.readouterr().out


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

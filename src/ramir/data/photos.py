"""Real photos bundled with scikit-image, with a fixed train / held-out split.

These ship inside the ``scikit-image`` package (no download), so the synthetic 7-task
recipe, the demo and the tests can run anywhere. Gray photos are read as RGB (three
equal channels) like any gray image.

* ``train`` (12): astronaut, rocket, motorcycle_left, motorcycle_right,
  hubble_deep_field, immunohistochemistry, retina, moon, coins, brick, grass, gravel.
* ``test`` (3, held out, never in ``train``): chelsea (a cat), coffee, camera (gray).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ramir.data.io import read_image, write_image

__all__ = ["TRAIN_PHOTOS", "TEST_PHOTOS", "photo_dir", "sample_photos", "materialize_sample_photos"]

TRAIN_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "moon.png",
    "coins.png",
    "brick.png",
    "grass.png",
    "gravel.png",
)
TEST_PHOTOS: tuple[str, ...] = ("chelsea.png", "coffee.png", "camera.png")


def photo_dir() -> Path:
    """The folder where scikit-image keeps its bundled sample images."""
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def sample_photos(split: str = "train") -> list[Path]:
    """Paths of the bundled photos of ``split`` (``"train"``, ``"test"`` or ``"all"``).

    Raises:
        ValueError: unknown split.
        FileNotFoundError: the installed scikit-image lacks a photo (reinstall it).
    """
    if split == "train":
        files = TRAIN_PHOTOS
    elif split == "test":
        files = TEST_PHOTOS
    elif split == "all":
        files = TRAIN_PHOTOS + TEST_PHOTOS
    else:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    folder = photo_dir()
    paths = [folder / f for f in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"scikit-image's bundled photos {', '.join(missing)} are missing from {folder}; "
            "reinstall scikit-image (pip install --force-reinstall scikit-image)"
        )
    return paths


def materialize_sample_photos(dest: str | Path, split: str = "train") -> list[Path]:
    """Copy the bundled photos of ``split`` into folder ``dest`` as ``<name>.png``.

    PNG files are copied as they are; JPEGs are decoded and stored losslessly as PNG, so
    the folder holds the same pixels :func:`sample_photos` gives. Existing files are
    overwritten. Returns the written paths, sorted like :func:`sample_photos`.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sample_photos(split):
        target = dest / f"{src.stem}.png"
        if src.suffix.lower() == ".png":
            shutil.copyfile(src, target)
        else:
            img = read_image(src)
            write_image(target, img.rgb, like=img)
        out.append(target)
    return out

"""Real photos that ship inside Python packages, with a fixed train / held-out split.

These come with packages from PyPI (no download from a model or dataset hub), so the
synthetic 7-task recipe, the demo and the tests can run anywhere. Gray photos are read as
RGB (three equal channels) like any gray image.

Sources (``sources=``; scikit-image's are the default, the others are opt-in):

* ``skimage`` (a dependency of ramir):

  * ``train`` (12): astronaut, rocket, motorcycle_left, motorcycle_right,
    hubble_deep_field, immunohistochemistry, retina, moon, coins, brick, grass, gravel.
  * ``test`` (3, held out, never in ``train``): chelsea (a cat), coffee, camera (gray).

* ``matplotlib`` (a dependency of ramir): grace_hopper (public domain, U.S. Navy photo).
* ``sklearn`` (``pip install scikit-learn``): china (the Summer Palace) and flower,
  both CC BY 2.0 from Flickr (danielbuechele, vultilion).

The extra sources only add training photos: the held-out ``test`` split is always
scikit-image's three, so results stay comparable whichever sources trained a model.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

from ramir.data.read import read_image
from ramir.data.write import write_image

__all__ = [
    "TRAIN_PHOTOS",
    "TEST_PHOTOS",
    "PHOTO_SOURCES",
    "EXTRA_PHOTOS",
    "photo_dir",
    "sample_photos",
    "materialize_sample_photos",
    "check_sources",
]

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


@dataclass(frozen=True)
class ExtraPhoto:
    """A training photo shipped inside another PyPI package."""

    package: str  # import name
    path: str  # relative to the package's folder
    license: str
    install: str  # what to pip install when the package is missing


EXTRA_PHOTOS: dict[str, tuple[ExtraPhoto, ...]] = {
    "matplotlib": (
        ExtraPhoto(
            "matplotlib",
            "mpl-data/sample_data/grace_hopper.jpg",
            "public domain (U.S. Navy photo)",
            "matplotlib",
        ),
    ),
    "sklearn": (
        ExtraPhoto(
            "sklearn",
            "datasets/images/china.jpg",
            "CC BY 2.0, danielbuechele on Flickr",
            "scikit-learn",
        ),
        ExtraPhoto(
            "sklearn",
            "datasets/images/flower.jpg",
            "CC BY 2.0, vultilion on Flickr",
            "scikit-learn",
        ),
    ),
}
PHOTO_SOURCES: tuple[str, ...] = ("skimage", *EXTRA_PHOTOS)


def check_sources(sources: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate a list of photo sources; returns it as a tuple without repeats.

    Raises:
        ValueError: an unknown source, or no source at all.
    """
    bad = [s for s in sources if s not in PHOTO_SOURCES]
    if bad:
        raise ValueError(
            f"unknown photo source(s) {', '.join(map(repr, bad))}; choose from "
            f"{', '.join(PHOTO_SOURCES)}"
        )
    if not sources:
        raise ValueError(f"sources must name at least one of {', '.join(PHOTO_SOURCES)}")
    return tuple(dict.fromkeys(sources))


def _package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"photo source {package!r} needs the package {install!r}: pip install {install}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _extra_photos(source: str) -> list[Path]:
    paths = []
    for photo in EXTRA_PHOTOS[source]:
        path = _package_dir(photo.package, photo.install) / photo.path
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing from the installed {photo.install}; reinstall it "
                f"(pip install --force-reinstall {photo.install})"
            )
        paths.append(path)
    return paths


def photo_dir() -> Path:
    """The folder where scikit-image keeps its bundled sample images."""
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def sample_photos(
    split: str = "train", sources: list[str] | tuple[str, ...] = ("skimage",)
) -> list[Path]:
    """Paths of the bundled photos of ``split`` (``"train"``, ``"test"`` or ``"all"``).

    ``sources`` picks the packages the training photos come from (see the module's
    docstring); ``test`` is always scikit-image's three held-out photos.

    Raises:
        ValueError: unknown split or source.
        FileNotFoundError: a source's package is not installed (the message says what to
            pip install) or lacks a photo (reinstall it).
    """
    sources = check_sources(sources)
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
    if split != "test":
        if "skimage" not in sources:  # training photos from the other sources only
            paths = [p for p in paths if p.name not in TRAIN_PHOTOS]
        paths += [p for source in sources if source != "skimage" for p in _extra_photos(source)]
    return paths


def materialize_sample_photos(
    dest: str | Path, split: str = "train", sources: list[str] | tuple[str, ...] = ("skimage",)
) -> list[Path]:
    """Copy the bundled photos of ``split`` (from ``sources``) into ``dest`` as ``<name>.png``.

    PNG files are copied as they are; JPEGs are decoded and stored losslessly as PNG, so
    the folder holds the same pixels :func:`sample_photos` gives. Existing files are
    overwritten. Returns the written paths, sorted like :func:`sample_photos`.
    """
    dest = Path(dest)
    photos = sample_photos(split, sources)  # checks the sources before creating ``dest``
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src in photos:
        target = dest / f"{src.stem}.png"
        if src.suffix.lower() == ".png":
            shutil.copyfile(src, target)
        else:
            img = read_image(src)
            write_image(target, img.rgb, like=img)
        out.append(target)
    return out
